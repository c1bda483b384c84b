/**
 * The real cgwatchdog daemon as a child process (`node dist/src/cli.js run --config <tmp>.yaml`)
 * with its JSON log lines, and a real webhook receiver (node:http on 127.0.0.1) that checks
 * the HMAC signature over the raw body. Shared by the kernel and e2e tests.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import YAML from 'yaml';

/** dist/src/cli.js, from dist/test/helpers/daemon.js. */
export const CLI = path.resolve(__dirname, '..', '..', 'src', 'cli.js');
const CHECKOUT = path.resolve(__dirname, '..', '..', '..');

let readableCopy: string | undefined;
/**
 * The CLI in a copy of everything it loads (dist/, node_modules/, package.json, proto/) in a directory
 * every user can read, for a daemon run as another user: the checkout itself may sit where
 * only root can enter (a clone under /root, a mktemp -d directory). Made once per test process.
 */
function cliReadableByAll(): string {
  if (!readableCopy) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-readable-'));
    fs.chmodSync(dir, 0o755);
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    for (const entry of ['dist', 'node_modules', 'package.json', 'proto']) {
      fs.cpSync(path.join(CHECKOUT, entry), path.join(dir, entry), { recursive: true, filter: (src) => !src.includes('/node_modules/typescript') });
    }
    // A checkout made under umask 077 has files only root can read: open them up in the copy.
    for (const rel of fs.readdirSync(dir, { recursive: true }) as string[]) {
      const p = path.join(dir, rel);
      const st = fs.lstatSync(p);
      if (!st.isSymbolicLink()) fs.chmodSync(p, st.mode | (st.isDirectory() ? 0o055 : 0o044));
    }
    readableCopy = dir;
  }
  return path.join(readableCopy, path.relative(CHECKOUT, CLI));
}

export type LogLine = Record<string, any> & { msg?: string; level?: number; /** ms (Date.now()) the line was read */ _at: number };

export interface StartDaemonOptions {
  /**
   * Register stop() with t.after, so the daemon is killed also when the test fails. (t.after
   * hooks run in the order they were registered, and a hook that throws skips the rest: a
   * test that removes the daemon's state dir or cgroups in hooks should rather call stop()
   * from its own cleanup, first.) Every daemon is also in stopAllDaemons().
   */
  t?: TestContext;
  /** Extra environment (merged over process.env). */
  env?: Record<string, string>;
  /** Run as this user / group (the config file and its directory are made readable). */
  uid?: number;
  gid?: number;
  /** Write the config here instead of a fresh temp file (e.g. to restart on the same file). */
  configPath?: string;
  /** Copy every log line to stderr (debugging). */
  echo?: boolean;
  /**
   * Run the daemon under this program (argv, the daemon's argv appended), e.g. strace -f. Its
   * signals (stop, kill9) go to the daemon, the tracer's only child: strace detaches on SIGTERM
   * and would leave the daemon running.
   */
  tracer?: string[];
}

export interface DaemonHandle {
  proc: ChildProcess;
  /** Parsed JSON lines of stdout, appended as they arrive. */
  logs: LogLine[];
  /** Lines of stdout that were not JSON. */
  otherOutput: string[];
  /** All of stderr so far. */
  stderr(): string;
  /** The first log line (already seen or still to come) satisfying `pred`; rejects at the timeout with the log tail. */
  waitForLog(pred: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine>;
  /** Resolves when the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then SIGKILL after `graceMs` (default 5000). Idempotent. */
  stop(graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL at once and wait for the exit. */
  kill9(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Rewrite the config file (an object is written as YAML, a string as is). */
  writeConfig(config: unknown): void;
  configPath: string;
  /** The temp directory holding the config (removed by stop() when the helper made it). */
  dir: string;
}

const live = new Set<DaemonHandle>();

/** Stop every daemon this process started that is still running (a last-resort after() hook). */
export async function stopAllDaemons(): Promise<void> {
  await Promise.all([...live].map((d) => d.stop()));
}

/** The object as YAML, or the string unchanged (for deliberately broken files). */
function configText(config: unknown): string {
  return typeof config === 'string' ? config : YAML.stringify(config);
}

/** Items seen so far, and waits for one matching a predicate (seen already or still to come). */
export interface Seen<T> {
  items: T[];
  add(item: T): void;
  /** Rejects with failure()'s text after timeoutMs. */
  waitFor(pred: (x: T) => boolean, timeoutMs: number, failure: () => string): Promise<T>;
}

export function seen<T>(): Seen<T> {
  const items: T[] = [];
  const waiters = new Set<{ pred: (x: T) => boolean; resolve: (x: T) => void }>();
  return {
    items,
    add(item) {
      items.push(item);
      for (const w of [...waiters]) {
        if (w.pred(item)) {
          waiters.delete(w);
          w.resolve(item);
        }
      }
    },
    waitFor(pred, timeoutMs, failure) {
      const have = items.find(pred);
      if (have) return Promise.resolve(have);
      return new Promise((resolve, reject) => {
        const w = {
          pred,
          resolve: (x: T) => {
            clearTimeout(timer);
            resolve(x);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(failure()));
        }, timeoutMs);
        waiters.add(w);
      });
    },
  };
}

/** A JSON-lines log read from a stream: every line parsed (others kept apart), and waits for one. */
export interface JsonLines {
  logs: LogLine[];
  other: string[];
  /** Feed it the stream's chunks. */
  feed: (chunk: Buffer) => void;
  /** The first line (seen or to come) matching pred; rejects with failure()'s text after timeoutMs. */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs: number, failure: () => string): Promise<LogLine>;
}

export function jsonLines(onRaw?: (raw: string) => void): JsonLines {
  const lines = seen<LogLine>();
  const other: string[] = [];
  let buf = '';
  const feed = (b: Buffer): void => {
    buf += b.toString('utf8');
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    for (const raw of parts) {
      if (!raw.trim()) continue;
      onRaw?.(raw);
      let l: LogLine;
      try {
        l = { ...(JSON.parse(raw) as Record<string, unknown>), _at: Date.now() };
      } catch {
        other.push(raw);
        continue;
      }
      lines.add(l);
    }
  };
  return { logs: lines.items, other, feed, waitFor: lines.waitFor };
}

/** Start `cgwatchdog run --config <file>` with `config` written as YAML. */
export function startDaemon(config: unknown, opts: StartDaemonOptions = {}): DaemonHandle {
  let dir: string;
  let ownDir = false;
  let configPath: string;
  if (opts.configPath) {
    configPath = opts.configPath;
    dir = path.dirname(configPath);
  } else {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-daemon-'));
    ownDir = true;
    configPath = path.join(dir, 'config.yaml');
  }
  // The hook socket in the test's own directory unless the test names one (never /run/cgwatchdog/hook.sock).
  const ownHookSocket = (c: unknown): unknown =>
    c && typeof c === 'object' && !Array.isArray(c) ? { ...c, paths: { hookSocket: path.join(dir, 'hook.sock'), ...((c as { paths?: object }).paths ?? {}) } } : c;
  const writeConfig = (c: unknown): void => {
    // Write and rename, so a SIGHUP never reads a half-written file.
    const tmp = `${configPath}.tmp`;
    fs.writeFileSync(tmp, configText(ownHookSocket(c)), { mode: 0o644 });
    fs.renameSync(tmp, configPath);
  };
  writeConfig(config);
  if (opts.uid !== undefined && ownDir) fs.chmodSync(dir, 0o755);

  const spawnOpts: SpawnOptions = {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
  };
  if (opts.uid !== undefined) spawnOpts.uid = opts.uid;
  if (opts.gid !== undefined) spawnOpts.gid = opts.gid;
  const cli = opts.uid === undefined ? CLI : cliReadableByAll();
  const argv = [process.execPath, ...productionNodeFlags(), cli, 'run', '--config', configPath];
  const [file, ...args] = [...(opts.tracer ?? []), ...argv] as [string, ...string[]];
  const proc = spawn(file, args, spawnOpts);
  const signal = (sig: NodeJS.Signals): void => {
    if (!opts.tracer) {
      proc.kill(sig);
      return;
    }
    try {
      const traced = fs.readFileSync(`/proc/${proc.pid}/task/${proc.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
      for (const pid of traced) process.kill(Number(pid), sig);
      if (traced.length === 0) proc.kill(sig);
    } catch {
      proc.kill(sig);
    }
  };

  const lines = jsonLines((raw) => {
    if (opts.echo) process.stderr.write(`[daemon ${proc.pid}] ${raw}\n`);
  });
  const { logs, other: otherOutput } = lines;
  let stderr = '';
  proc.stdout!.on('data', lines.feed);
  proc.stderr!.on('data', (b: Buffer) => {
    stderr += b.toString('utf8');
    if (opts.echo) process.stderr.write(`[daemon ${proc.pid} stderr] ${b.toString('utf8')}`);
  });

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.once('exit', (code, signal) => resolve({ code, signal }));
    proc.once('error', () => resolve({ code: null, signal: null }));
  });
  const isAlive = (): boolean => proc.exitCode === null && proc.signalCode === null;

  const tail = (): string =>
    [...logs.slice(-15).map((l) => JSON.stringify({ ...l, _at: undefined })), ...otherOutput.slice(-5), stderr ? `stderr: ${stderr.slice(-1500)}` : '']
      .filter(Boolean)
      .join('\n');

  const waitForLog = (pred: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine> =>
    lines.waitFor(pred, timeoutMs, () => `daemon log line not seen within ${timeoutMs} ms (${isAlive() ? 'running' : `exited ${proc.exitCode ?? proc.signalCode}`}); last lines:\n${tail()}`);

  let stopping: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  const cleanupDir = (): void => {
    if (ownDir) fs.rmSync(dir, { recursive: true, force: true });
  };
  const stop = (graceMs = 5000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> => {
    stopping ??= (async () => {
      if (isAlive()) {
        signal('SIGTERM');
        const timer = setTimeout(() => {
          if (isAlive()) signal('SIGKILL');
        }, graceMs);
        const r = await exited;
        clearTimeout(timer);
        cleanupDir();
        return r;
      }
      const r = await exited;
      cleanupDir();
      return r;
    })();
    return stopping;
  };
  const kill9 = async (): Promise<{ code: number | null; signal: NodeJS.Signals | null }> => {
    if (isAlive()) signal('SIGKILL');
    return exited;
  };
  opts.t?.after(() => stop());

  const handle: DaemonHandle = {
    proc,
    logs,
    otherOutput,
    stderr: () => stderr,
    waitForLog,
    exited,
    stop,
    kill9,
    writeConfig,
    configPath,
    dir,
  };
  live.add(handle);
  void exited.then(() => live.delete(handle));
  return handle;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI once (e.g. `apply --dry-run --json`) and collect its output. */
export function runCli(args: string[], opts: { env?: Record<string, string>; uid?: number; gid?: number; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const cli = opts.uid === undefined ? CLI : cliReadableByAll();
    const child = spawn(process.execPath, [...productionNodeFlags(), cli, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
    child.stderr!.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

// ---- webhook receiver -----------------------------------------------------------------

export interface Received {
  /** The parsed JSON body (the webhook alert). */
  alert: any;
  headers: http.IncomingHttpHeaders;
  /** Date.now() at arrival. */
  at: number;
  raw: Buffer;
  /** Signature check: true/false with a secret, null without one. */
  hmacOk: boolean | null;
}

export interface WebhookReceiver {
  url: string;
  port: number;
  received: Received[];
  /** Recompute the HMAC over the raw body and compare with the signature header. */
  verifyHmac(raw: Buffer, signatureHeader: string | string[] | undefined): boolean;
  /** true: stop listening (open connections dropped); false: listen again on the same port. */
  setDown(down: boolean): Promise<void>;
  /** The first delivery (already received or still to come) satisfying `pred`; rejects at the timeout. */
  waitFor(pred: (r: Received) => boolean, timeoutMs: number): Promise<Received>;
  /** Requests answered with a non-2xx status (failWith). */
  rejectedCount(): number;
  close(): Promise<void>;
}

export interface ReceiverOptions {
  hmacSecret?: string;
  /** Answer every request with this status instead of 200 (the body is still recorded). */
  failWith?: number;
  /** The header carrying the signature; default X-Cgwatchdog-Signature. */
  signatureHeader?: string;
}

export async function startWebhookReceiver(opts: ReceiverOptions = {}): Promise<WebhookReceiver> {
  const headerName = (opts.signatureHeader ?? 'X-Cgwatchdog-Signature').toLowerCase();
  const deliveries = seen<Received>();
  const received = deliveries.items;
  let rejected = 0;

  const verifyHmac = (raw: Buffer, sig: string | string[] | undefined): boolean => {
    if (opts.hmacSecret === undefined || typeof sig !== 'string') return false;
    const m = /^sha256=([0-9a-f]{64})$/.exec(sig);
    if (!m) return false;
    const want = createHmac('sha256', opts.hmacSecret).update(raw).digest();
    const got = Buffer.from(m[1]!, 'hex');
    return got.length === want.length && timingSafeEqual(got, want);
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      const hmacOk = opts.hmacSecret === undefined ? null : verifyHmac(raw, req.headers[headerName]);
      let alert: unknown;
      try {
        alert = JSON.parse(raw.toString('utf8'));
      } catch {
        alert = undefined;
      }
      if (opts.failWith !== undefined) {
        rejected++;
        res.writeHead(opts.failWith, { 'content-type': 'text/plain' }).end('test receiver says no');
        return;
      }
      if (hmacOk === false) {
        rejected++;
        res.writeHead(401, { 'content-type': 'text/plain' }).end('bad signature');
        // Recorded anyway, so a test can see what came and why it failed.
      } else {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      }
      const r: Received = { alert, headers: req.headers, at: Date.now(), raw, hmacOk };
      deliveries.add(r);
    });
  });

  const listen = (port: number): Promise<void> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  await listen(0);
  const port = (server.address() as net.AddressInfo).port;
  let down = false;

  const setDown = async (d: boolean): Promise<void> => {
    if (d === down) return;
    down = d;
    if (d) {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    } else {
      await listen(port);
    }
  };

  return {
    url: `http://127.0.0.1:${port}/hook`,
    port,
    received,
    verifyHmac,
    setDown,
    rejectedCount: () => rejected,
    waitFor: (pred, timeoutMs) =>
      deliveries.waitFor(pred, timeoutMs, () => `webhook delivery not received within ${timeoutMs} ms; got ${received.length}: ${received.map((r) => `${r.alert?.kind}/${r.alert?.state}#${r.alert?.sequence}`).join(', ')}`),
    async close() {
      if (down) return;
      down = true;
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

/**
 * The node flags the systemd unit runs the daemon with (its ExecStart, between node and the
 * script), so tests and the benchmark run it as production does.
 */
export function productionNodeFlags(): string[] {
  const unit = fs.readFileSync(path.join(__dirname, '..', '..', '..', 'systemd', 'cgwatchdog.service'), 'utf8');
  const exec = /^ExecStart=(.*)$/m.exec(unit)?.[1] ?? '';
  const words = exec.split(/\s+/);
  const script = words.findIndex((w) => w.endsWith('/cli.js'));
  return words.slice(1, script).filter((w) => w.startsWith('--'));
}
