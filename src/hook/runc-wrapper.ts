import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/**
 * The OCI runtime Docker runs in place of runc (dockerd --add-runtime NAME=PATH
 * --default-runtime NAME): Docker has no hook registry. containerd's runc shim calls it as
 * runc, global flags first: `--root R --log L --log-format json create --bundle B --pid-file P ID`
 * (measured, Docker 20.10 / containerd shim runc v2). On `create` (and `run`) the policy goes
 * into B/config.json; then, for every command, the real runc runs with the very same arguments,
 * file descriptors, environment, working directory and stdin, our signals forwarded, and its
 * exit status (or its killing signal) becomes ours.
 */

/** runc's global flags that take a value (runc 1.1 main.go); the booleans take none. */
const GLOBAL_VALUE_FLAGS = new Set(['root', 'log', 'log-format', 'criu', 'rootless']);
/** Value flags of `create`, `run` and `exec` (runc 1.1 create.go, run.go, exec.go). */
const CREATE_VALUE_FLAGS = new Set(['bundle', 'b', 'console-socket', 'pid-file', 'preserve-fds', 'process', 'p', 'cwd', 'env', 'e', 'user', 'u', 'additional-gids', 'g', 'cap', 'c', 'apparmor', 'process-label', 'cgroup']);

export interface RuncInvocation {
  command: string | null;
  global: Record<string, string | true>;
  /** create/run: the bundle (runc's default is the working directory). */
  bundle?: string;
  /** create/run: the container id (the last positional). */
  id?: string;
  preserveFds: number;
}

function flagName(arg: string): { name: string; value?: string } | null {
  if (!arg.startsWith('-') || arg === '-' || arg === '--') return null;
  const body = arg.replace(/^--?/, '');
  const eq = body.indexOf('=');
  return eq < 0 ? { name: body } : { name: body.slice(0, eq), value: body.slice(eq + 1) };
}

/** Pure: what runc will do with these arguments (urfave/cli: -flag and --flag alike, =value or a separate value). */
export function parseRuncArgs(argv: readonly string[], cwd: string): RuncInvocation {
  const global: Record<string, string | true> = {};
  let i = 0;
  for (; i < argv.length; i++) {
    const f = flagName(argv[i]!);
    if (!f) break;
    if (GLOBAL_VALUE_FLAGS.has(f.name)) global[f.name] = f.value ?? argv[++i] ?? '';
    else global[f.name] = f.value ?? true;
  }
  const command = argv[i] ?? null;
  const out: RuncInvocation = { command, global, preserveFds: 0 };
  if (command !== 'create' && command !== 'run' && command !== 'exec') return out;
  const positional: string[] = [];
  for (let j = i + 1; j < argv.length; j++) {
    const f = flagName(argv[j]!);
    if (!f) {
      positional.push(argv[j]!);
      continue;
    }
    const value = CREATE_VALUE_FLAGS.has(f.name) ? (f.value ?? argv[++j] ?? '') : undefined;
    if (f.name === 'bundle' || f.name === 'b') out.bundle = value;
    if (f.name === 'preserve-fds') out.preserveFds = Math.max(0, Math.min(1024, Number(value) || 0));
  }
  out.id = positional[positional.length - 1];
  if (command === 'exec') return out;
  out.bundle = path.resolve(cwd, out.bundle || '.');
  return out;
}

/** Where the real runc is: the config's absolute path, else a fixed list; never $PATH, which a caller controls. */
export const RUNC_CANDIDATES = ['/usr/bin/runc', '/usr/sbin/runc', '/usr/local/bin/runc'];

export function findRunc(configured: string | undefined, self: string): string {
  const candidates = configured ? [configured] : RUNC_CANDIDATES;
  const me = realpathOr(self);
  for (const c of candidates) {
    try {
      fs.accessSync(c, fs.constants.X_OK);
      // Installed as /usr/local/bin/runc itself, the wrapper must not run itself forever.
      if (realpathOr(c) !== me) return c;
    } catch {
      /* next */
    }
  }
  throw new Error(configured ? `hooks.runcPath ${configured} is not an executable` : `no runc in ${RUNC_CANDIDATES.join(', ')} (set hooks.runcPath)`);
}

function realpathOr(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return p;
  }
}

/** A line in runc's own --log file, in its format: containerd reads it and shows the last error to `docker run`. */
export function runcLogLine(logFormat: string | true | undefined, level: 'warning' | 'error', msg: string): string {
  return logFormat === 'json' ? JSON.stringify({ level, msg, time: new Date().toISOString() }) : `time="${new Date().toISOString()}" level=${level} msg=${JSON.stringify(msg)}`;
}

function appendRuncLog(inv: RuncInvocation, lines: readonly string[]): void {
  const file = inv.global.log;
  if (lines.length === 0 || typeof file !== 'string' || !path.isAbsolute(file)) return;
  try {
    fs.appendFileSync(file, lines.map((l) => `${l}\n`).join(''));
  } catch {
    /* nowhere else to say it: stdout and stderr are the container's */
  }
}

function runcLog(inv: RuncInvocation, level: 'warning' | 'error', msg: string): void {
  appendRuncLog(inv, [runcLogLine(inv.global['log-format'], level, msg)]);
}

const FORWARDED: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH', 'SIGCONT', 'SIGTSTP', 'SIGTTIN', 'SIGTTOU', 'SIGPIPE', 'SIGALRM'];

/**
 * The descriptors runc is promised beyond stdio: `--preserve-fds N` (create, run, exec) and
 * systemd's LISTEN_FDS, both from fd 3 up (runc 1.1 utils_linux.go). Node marks every
 * inherited fd close-on-exec at start and its spawn passes only the fds named in `stdio`
 * (measured, Node 20.20: an fd 3 inherited but not named was not in the child), so each is
 * named at its own number.
 */
export function passedFds(preserveFds: number, env: NodeJS.ProcessEnv): number[] {
  const listen = env.LISTEN_FDS !== undefined && /^\d+$/.test(env.LISTEN_FDS) ? Number(env.LISTEN_FDS) : 0;
  const n = Math.min(1024, Math.max(preserveFds, listen));
  const out: number[] = [];
  for (let fd = 3; fd < 3 + n; fd++) {
    try {
      fs.fstatSync(fd);
      out.push(fd);
    } catch {
      /* not open: runc would fail on it itself */
    }
  }
  return out;
}

/** Run the real runc with our argv and fds; resolve never: exits with runc's status. */
function execRunc(runc: string, argv: readonly string[], preserveFds: number): void {
  // fds 0-2 are the container's stdio on create (containerd passes them through runc).
  const stdio: (number | 'inherit' | 'ignore')[] = ['inherit', 'inherit', 'inherit'];
  for (const fd of passedFds(preserveFds, process.env)) {
    while (stdio.length < fd) stdio.push('ignore');
    stdio.push(fd);
  }
  const child = spawn(runc, argv, { stdio, argv0: runc });
  const forward = (sig: NodeJS.Signals) => () => {
    try {
      child.kill(sig);
    } catch {
      /* it is gone */
    }
  };
  const handlers = FORWARDED.map((sig) => [sig, forward(sig)] as const);
  for (const [sig, h] of handlers) process.on(sig, h);
  child.on('error', (err) => {
    process.exitCode = 127;
    fs.writeSync(2, `cgwatchdog runc wrapper: cannot run ${runc}: ${err.message}\n`);
  });
  child.on('exit', (code, signal) => {
    for (const [sig, h] of handlers) process.off(sig, h);
    if (signal) {
      process.kill(process.pid, signal);
      return;
    }
    process.exit(code ?? 1);
  });
}

export interface WrapperOptions {
  configFile?: string;
  cacheDir?: string;
  /** The wrapper's own path (so it never runs itself as "runc"). */
  self?: string;
}

/** What create/run needs to know of the runc call: the container id and runc's log format (for the lines). */
export interface WrapperCall {
  command: string;
  id?: string;
  logFormat?: string | true;
}

export interface WrapperPolicyResult {
  /** The config.json to write back; undefined: unchanged. */
  write?: string;
  /** hooks.failClosed refused the container: runc must not run. */
  refused: boolean;
  /** Lines for runc's --log file. */
  log: string[];
}

/**
 * create/run: the policy on the bundle's config.json text, recorded for the daemon; a failure is
 * logged, recorded and refused when failClosed. The Node wrapper and the daemon's hook socket
 * (the native wrapper, src/hook/hook-server.ts) both run this; only where the text comes from
 * and goes to differs.
 */
export async function wrapperPolicy(call: WrapperCall, text: () => string, source: import('./oci-hook').HookConfigSource, write?: (text: string) => void): Promise<WrapperPolicyResult> {
  const log: string[] = [];
  let config: import('./hook-config').HookConfig;
  try {
    config = source.load();
  } catch (err) {
    const fb = source.broken();
    return { refused: wrapperFailure(call, fb.stateDir, fb.failClosed, `config: ${(err as Error).message}`, log), log };
  }
  try {
    const sp = require('./spec-policy') as typeof import('./spec-policy');
    const rec = require('./records') as typeof import('./records');
    const r = await sp.applyPolicyToSpec(text(), config, sp.openHookHost(config), `runc-${call.command}`, call.id);
    // Written before the record, so a record never claims a limit that is not in the bundle.
    if (r.changed) write?.(r.text);
    rec.writeRecord(config.paths.stateDir, r.record);
    return { write: r.changed ? r.text : undefined, refused: false, log };
  } catch (err) {
    return { refused: wrapperFailure(call, config.paths.stateDir, config.hooks.failClosed, (err as Error).message, log), log };
  }
}

/** Write a bundle's config.json as runc must find it: a temp file in the bundle, same mode, renamed over it (never half a file). */
export function writeBundleConfig(bundle: string, text: string): void {
  const file = path.join(bundle, 'config.json');
  const tmp = path.join(bundle, `.config.json.cgwatchdog-${process.pid}`);
  fs.writeFileSync(tmp, text, { mode: fs.statSync(file).mode & 0o7777 });
  fs.renameSync(tmp, file);
}

/** The wrapper's main: policy on create, then the real runc, always. */
export async function runcWrapperMain(argv: readonly string[], opts: WrapperOptions = {}): Promise<void> {
  const inv = parseRuncArgs(argv, process.cwd());
  const policyStage = inv.command === 'create' || inv.command === 'run';
  // Only create/run pay for the policy modules; state, start, kill, delete, exec go straight on.
  const hc = require('./hook-config') as typeof import('./hook-config');
  let runcPath: string | undefined;
  let loaded: import('./hook-config').HookConfig | undefined;
  let loadError: Error | undefined;
  try {
    loaded = hc.loadHookConfig(opts.configFile, opts.cacheDir).config;
    runcPath = loaded.hooks.runcPath || undefined;
  } catch (err) {
    loadError = err as Error;
  }
  if (policyStage && inv.bundle) {
    const bundle = inv.bundle;
    const call: WrapperCall = { command: inv.command!, id: inv.id, logFormat: inv.global['log-format'] };
    const source = {
      load: () => {
        if (loadError) throw loadError;
        return loaded!;
      },
      broken: () => hc.brokenConfigFallback(opts.configFile, opts.cacheDir),
    };
    const r = await wrapperPolicy(call, () => fs.readFileSync(path.join(bundle, 'config.json'), 'utf8'), source, (text) => writeBundleConfig(bundle, text));
    appendRuncLog(inv, r.log);
    if (r.refused) {
      process.exitCode = 1;
      return;
    }
  }
  let runc: string;
  try {
    runc = findRunc(runcPath, opts.self ?? process.argv[1] ?? '');
  } catch (err) {
    runcLog(inv, 'error', `cgwatchdog runc wrapper: ${(err as Error).message}`);
    fs.writeSync(2, `cgwatchdog runc wrapper: ${(err as Error).message}\n`);
    process.exitCode = 127;
    return;
  }
  execRunc(runc, argv, inv.preserveFds);
}

/** Recorded for the daemon to count, a line for runc's log; true: refused (failClosed). */
function wrapperFailure(call: WrapperCall, stateDir: string, failClosed: boolean, message: string, log: string[]): boolean {
  const msg = `cgwatchdog: the PID limit could not be set for container ${call.id ?? '?'}: ${message}; ${failClosed ? 'container refused (hooks.failClosed)' : 'container starts, the daemon applies the limit (fail open)'}`;
  log.push(runcLogLine(call.logFormat, failClosed ? 'error' : 'warning', msg));
  try {
    const rec = require('./records') as typeof import('./records');
    rec.writeRecord(stateDir, { v: 1, stage: `runc-${call.command}`, cgroupPath: null, id: call.id, at: Date.now(), action: 'error', wrote: false, reason: message, failed: true, refused: failClosed });
  } catch {
    /* the log line is all there is */
  }
  return failClosed;
}
