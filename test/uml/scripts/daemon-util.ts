/**
 * Shared by the scripts that run the real cgwatchdog CLI inside user-mode Linux
 * (daemon-v2.ts, detect-v2.ts, detect-v1.ts, ...): cgroup set-up and tear-down, the daemon as
 * a child process with its JSON log lines, waiting on files, a webhook receiver.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { nowMs, outDir, sleep } from '../in-uml';

/** dist/src/cli.js, from dist/test/uml/scripts/<this>.js. */
export const CLI = path.resolve(__dirname, '..', '..', '..', 'src', 'cli.js');

export const hex64 = (): string => crypto.randomBytes(32).toString('hex');

/** Controllers the test subtree hands down to every level. */
export const SUBTREE = ['pids', 'memory', 'cpu'];

/**
 * mkdir -p of a cgroup path below `root`, enabling SUBTREE in every directory it creates
 * on the way (not in the last one: a container cgroup keeps its processes).
 */
export function mkCgroup(root: string, rel: string): string {
  const parts = rel.split('/').filter(Boolean);
  let dir = root;
  for (const [i, p] of parts.entries()) {
    dir = path.join(dir, p);
    if (!fs.existsSync(dir)) fs.mkdirSync(dir);
    if (i < parts.length - 1) enableSubtree(dir);
  }
  return dir;
}

export function enableSubtree(dir: string): void {
  const have = fs.readFileSync(path.join(dir, 'cgroup.subtree_control'), 'utf8').split(/\s+/);
  const want = SUBTREE.filter((c) => !have.includes(c));
  if (want.length) fs.writeFileSync(path.join(dir, 'cgroup.subtree_control'), want.map((c) => `+${c}`).join(' '));
}

export function readTrim(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return null;
  }
}

/** Kill everything in a cgroup tree and remove it, deepest first. */
export async function removeTree(dir: string): Promise<void> {
  if (!fs.existsSync(dir)) return;
  try {
    fs.writeFileSync(path.join(dir, 'cgroup.kill'), '1');
  } catch {
    /* no cgroup.kill (before 5.14) */
  }
  const walk = (d: string): string[] => {
    const out: string[] = [];
    for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) out.push(...walk(path.join(d, e.name)));
    out.push(d);
    return out;
  };
  for (const d of walk(dir)) {
    for (let i = 0; i < 100; i++) {
      // v1 (and v2 before 5.14) has no cgroup.kill: its tasks are killed one by one.
      for (const pid of (readTrim(path.join(d, 'cgroup.procs')) ?? '').split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      try {
        fs.rmdirSync(d);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EBUSY') throw e;
        await sleep(20);
      }
    }
  }
}

/**
 * Poll a file every `everyMs` until `ok(content)`; resolves with the time (nowMs) it was first
 * seen so, or null at the timeout. setTimeout(1) is as fine as Node's timers go.
 */
export async function pollFile(file: string, ok: (s: string | null) => boolean, timeoutMs: number, everyMs = 1): Promise<number | null> {
  const end = nowMs() + timeoutMs;
  for (;;) {
    const v = readTrim(file);
    const at = nowMs();
    if (ok(v)) return at;
    if (at > end) return null;
    await sleep(everyMs);
  }
}

export type LogLine = Record<string, any> & { msg?: string; level?: number };

/** The daemon (`cgwatchdog run`) as a child process, its stdout parsed as JSON lines. */
export class DaemonProc {
  readonly lines: LogLine[] = [];
  /** Lines that were not JSON (should be none). */
  readonly other: string[] = [];
  stderr = '';
  readonly child: ChildProcess;
  private buf = '';
  private waiters: { want: (l: LogLine) => boolean; resolve: (l: LogLine | null) => void; timer: NodeJS.Timeout }[] = [];
  exit: Promise<{ code: number | null; signal: string | null }>;

  constructor(configFile: string, readonly label: string) {
    this.child = spawn(process.execPath, [CLI, 'run', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exit = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    this.child.stdout!.on('data', (b: Buffer) => this.onData(b));
    this.child.stderr!.on('data', (b: Buffer) => (this.stderr += b.toString()));
  }

  private onData(b: Buffer): void {
    this.buf += b.toString();
    const parts = this.buf.split('\n');
    this.buf = parts.pop() ?? '';
    for (const raw of parts) {
      if (!raw.trim()) continue;
      let l: LogLine;
      try {
        l = JSON.parse(raw) as LogLine;
      } catch {
        this.other.push(raw);
        continue;
      }
      l._at = nowMs();
      this.lines.push(l);
      for (const w of [...this.waiters]) {
        if (w.want(l)) {
          clearTimeout(w.timer);
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(l);
        }
      }
    }
  }

  /** The first line (already logged or still to come) satisfying `want`, or null at the timeout. */
  wait(want: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine | null> {
    const have = this.lines.find(want);
    if (have) return Promise.resolve(have);
    return new Promise((resolve) => {
      const w = { want, resolve, timer: setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        resolve(null);
      }, timeoutMs) };
      this.waiters.push(w);
    });
  }

  waitMsg(msg: string, timeoutMs: number, also: (l: LogLine) => boolean = () => true): Promise<LogLine | null> {
    return this.wait((l) => l.msg === msg && also(l), timeoutMs);
  }

  /** SIGTERM, then SIGKILL after the unit's TimeoutStopSec (15 s), as systemd would. Resolves with how it ended. */
  async stop(graceMs = 15_000): Promise<{ code: number | null; signal: string | null; killed: boolean; stopMs: number }> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) {
      return { code: this.child.exitCode, signal: this.child.signalCode, killed: false, stopMs: 0 };
    }
    const t0 = nowMs();
    this.child.kill('SIGTERM');
    const t = await Promise.race([this.exit, sleep(graceMs).then(() => null)]);
    if (t) return { ...t, killed: false, stopMs: Math.round(nowMs() - t0) };
    this.child.kill('SIGKILL');
    return { ...(await this.exit), killed: true, stopMs: Math.round(nowMs() - t0) };
  }

  /** Errors and warnings it logged (pino levels: 40 warn, 50 error, 60 fatal). */
  problems(): LogLine[] {
    return this.lines.filter((l) => (l.level ?? 0) >= 40);
  }

  /** Keep the whole log on the host for debugging a failure. */
  save(): void {
    fs.writeFileSync(path.join(outDir(), `daemon-${this.label}.log`), this.lines.map((l) => JSON.stringify(l)).join('\n') + '\n' + this.other.join('\n') + (this.stderr ? `\n--- stderr ---\n${this.stderr}` : ''));
  }
}

/** `cgwatchdog apply --config FILE ...` synchronously; its JSON report. */
export function runApplyCli(configFile: string, extra: string[]): { status: number | null; report: any; stderr: string; ms: number } {
  const t0 = nowMs();
  const r = spawnSync(process.execPath, [CLI, 'apply', '--config', configFile, '--json', ...extra], { encoding: 'utf8', timeout: 30_000 });
  let report: unknown = null;
  try {
    report = JSON.parse(r.stdout);
  } catch {
    report = { unparsable: r.stdout.slice(0, 2000) };
  }
  return { status: r.status, report, stderr: r.stderr, ms: nowMs() - t0 };
}

/** A config file (JSON is YAML) under /run; returns its path. */
export function writeConfig(name: string, config: Record<string, unknown>): string {
  const file = `/run/${name}.yaml`;
  fs.writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

/** Resolves with the first stdout line of `child` satisfying `want`, or null at the timeout. */
export function waitChildLine(child: ChildProcess, want: (l: string) => boolean, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    let buf = '';
    const timer = setTimeout(() => done(null), timeoutMs);
    const onData = (b: Buffer): void => {
      buf += b.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) if (want(l)) return done(l);
    };
    const done = (v: string | null): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      resolve(v);
    };
    child.stdout?.on('data', onData);
  });
}

/** Report the script's uncaught failure as a result, then exit 1. */
export function runMain(main: () => Promise<void>, emit: (o: Record<string, unknown>) => void): void {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      try {
        emit({ check: 'error', message: e instanceof Error ? e.stack ?? e.message : String(e) });
      } catch {
        /* out dir gone */
      }
      console.error(e);
      process.exit(1);
    },
  );
}

/* A fixed program: waits for "go", then touches 4 MiB at a time until it has 400 MiB. */
export const HOG = [
  "process.stdout.write('ready\\n');",
  "process.stdin.once('data', () => {",
  '  const keep = [];',
  '  for (let i = 0; i < 100; i++) keep.push(Buffer.allocUnsafe(4 << 20).fill(i + 1));',
  "  process.stdout.write('survived ' + keep.length + '\\n');",
  '  process.exit(0);',
  '});',
].join('\n');

/** What a log line says about one cgroup, trimmed for the results. */
export const pick = (l: LogLine | null | undefined): Record<string, unknown> | null =>
  l ? Object.fromEntries(Object.entries(l).filter(([k]) => !['time', 'service', 'pid', 'hostname', '_at'].includes(k))) : null;

export interface Received {
  at: number;
  path: string | undefined;
  contentType: string | undefined;
  idempotencyKey: string | undefined;
  body: any;
}

/** A webhook receiver: records every POST (JSON body) with the time it arrived. */
export async function receiver(): Promise<{ url: string; got: Received[]; waitFor: (want: (r: Received) => boolean, timeoutMs: number) => Promise<Received | null>; close: () => Promise<void> }> {
  const got: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const at = nowMs();
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch {
        body = { unparsable: text.slice(0, 2000) };
      }
      got.push({ at, path: req.url, contentType: req.headers['content-type'], idempotencyKey: req.headers['idempotency-key'] as string | undefined, body });
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end('ok');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const waitFor = async (want: (r: Received) => boolean, timeoutMs: number): Promise<Received | null> => {
    const end = nowMs() + timeoutMs;
    for (;;) {
      const r = got.find(want);
      if (r) return r;
      if (nowMs() > end) return null;
      await sleep(5);
    }
  };
  return {
    url: `http://127.0.0.1:${port}/hook`,
    got,
    waitFor,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/* A fixed script; the cgroup directory comes in as $1. With pids.max 8, the shell and seven
 * sleeps fill the cgroup and the eighth fork fails; dash then gives up ("Cannot fork"). */
export const FORKER = [
  'echo $$ > "$1/cgroup.procs" || exit 90',
  'echo ready',
  'read go',
  'i=0',
  'while [ $i -lt 20 ]; do sleep 1000 & i=$((i+1)); done',
  'echo all-forked',
].join('\n');

/* One more rejected fork: a shell moves itself into the full cgroup (migration is not
 * limited by pids.max) and tries to fork. */
export const ONE_MORE = 'echo $$ > "$1/cgroup.procs" || exit 90; sleep 1000 & exit 0';
