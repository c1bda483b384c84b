/**
 * Run compiled Node test code inside a real cgroup v2 kernel: Debian's user-mode Linux
 * (linux.uml, Linux 6.1), booted with the host's / as a read-only hostfs root, so the host's
 * own node binary and /work/main/dist run inside unchanged.
 *
 * Inside, test/uml/init.sh (PID 1) mounts proc, sysfs, tmpfs on /run, cgroup2 on /run/cg with
 * +pids +memory (and +cpu/+cpuset when present) enabled at the root, loopback up, and a per-run host temp
 * directory read-write on /run/out; then runs `node <script> ...args` with CGWD_UML=1,
 * CGWD_CGROUP_ROOT=/run/cg, CGWD_OUT=/run/out, records the exit status and halts.
 * Scripts report through test/uml/in-uml.ts `emit()`, which appends to results.jsonl.
 * With `systemd: true` the host's systemd is PID 1 instead and runs the script as a service
 * (CGWD_CGROUP_ROOT=/sys/fs/cgroup); see UmlOptions.systemd.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { findOnPath } from '../../src/find-on-path';

export interface UmlOptions {
  /** The linux.uml to boot (one of UML_KERNELS); default bookworm's 6.1. */
  kernel?: UmlKernel;
  /** UML memory (mem=); default 768. */
  memMb?: number;
  /** Whole boot+run limit; the UML process group is SIGKILLed after it. Default 120000. */
  timeoutMs?: number;
  /** Extra environment for the script (names [A-Za-z_][A-Za-z0-9_]*, values without newlines). */
  env?: Record<string, string>;
  /** Keep the host temp directory (for debugging); by default it is removed. */
  keepDir?: boolean;
  /**
   * Boot the host's systemd as PID 1 (test/uml/init.sh, cgwd_systemd=1): basic.target, then
   * the script as a oneshot service (cgwd-uml-test.service) with CGWD_CGROUP_ROOT=/sys/fs/cgroup
   * (systemd's unified hierarchy), then poweroff. Default false: init.sh runs the script itself.
   */
  systemd?: boolean;
  /**
   * Host files copied into the run's output directory before boot: inside UML they are
   * /run/out/<basename> (a tarball packed on the host, say). Basenames must be distinct.
   */
  outFiles?: string[];
}

export interface UmlRun {
  /** The script ran and exited with status 0 (and UML did not time out). */
  exitOk: boolean;
  /** The script's exit status, or null if it never got one (boot failure, timeout). */
  exitCode: number | null;
  timedOut: boolean;
  /** Objects the script emitted, in order (test/uml/in-uml.ts `emit`). */
  results: unknown[];
  /** UML's stdout+stderr: kernel boot messages, the console, the script's output. */
  console: string;
  /** Spawn to the end of the UML process group, in ms. */
  durationMs: number;
  /** uname -r inside UML. */
  kernel: string | null;
  /** cgroup2 root cgroup.controllers and cgroup.subtree_control inside UML. */
  controllers: string[];
  subtreeControl: string[];
  /** Whether init.sh brought the loopback interface up (ip or ifconfig from the host root). */
  loopback: boolean;
  /** This run's UML id (umid=...), also in every UML host process's command line. */
  umid: string;
  /** The host temp directory of this run (removed unless keepDir). */
  dir: string;
  /** Host pids of UML processes of this run still alive after the run (should be empty). */
  leftovers: number[];
  /** Set when a first boot hung before init.sh ran and this is the second (see runInUml). */
  bootRetried?: string;
}

const CONSOLE_CAP = 4 * 1024 * 1024;
let counter = 0;


function umlBinary(): string | null {
  return findOnPath('linux.uml') ?? (fs.existsSync('/usr/bin/linux.uml') ? '/usr/bin/linux.uml' : null);
}

export interface UmlKernel {
  /** Short name for test titles: bookworm, trixie, sid. */
  suite: string;
  binary: string | null;
}

/**
 * The kernel matrix: bookworm's user-mode-linux package (6.1), and trixie's (6.12) and sid's
 * (the newest) as test/setup/uml-kernels.sh caches them. Which version each is, is read
 * inside (UmlRun.kernel), never assumed.
 */
export const UML_KERNELS: UmlKernel[] = [
  { suite: 'bookworm', binary: umlBinary() },
  ...['trixie', 'sid'].map((suite) => {
    const b = `/var/cache/cgwd-uml-${suite}/linux.uml`;
    return { suite, binary: fs.existsSync(b) ? b : null };
  }),
];

/** Fails the test with how to get the kernel when it is missing. */
export function kernelReady(k: UmlKernel): void {
  if (k.binary) return;
  throw new Error(k.suite === 'bookworm' ? 'user-mode-linux (linux.uml): apt-get install -y user-mode-linux' : `the ${k.suite} user-mode Linux kernel: run test/setup/uml-kernels.sh (npm test does)`);
}

/** Is user-mode Linux installed (Debian package user-mode-linux)? */
export function umlAvailable(): boolean {
  return process.platform === 'linux' && umlBinary() !== null;
}

/** The repository root: the nearest ancestor of this file holding package.json. */
function repoRoot(): string {
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${__dirname}`);
    dir = up;
  }
}

/** The init script run as PID 1 inside UML. */
export function umlInitScript(): string {
  return path.join(repoRoot(), 'test', 'uml', 'init.sh');
}

/** Host pids whose command line holds `umid=<umid>`: UML's processes for that run. */
export function umlProcesses(umid: string): number[] {
  const needle = Buffer.from(`umid=${umid}\0`);
  const pids: number[] = [];
  for (const ent of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    let cmd: Buffer;
    try {
      cmd = fs.readFileSync(`/proc/${ent}/cmdline`);
    } catch {
      continue;
    }
    if (cmd.includes(needle)) pids.push(Number(ent));
  }
  return pids;
}

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    /* ESRCH: already gone */
  }
}

/* UML runs in its own process group, so a signal to the test's group does not reach it.
 * If the test process ends (exit, SIGTERM from the test runner's timeout, SIGINT, SIGHUP)
 * while a run is going, kill that run's group rather than leave UML orphaned. */
const active = new Map<number, string | null>(); // process group -> temp dir to remove
function abandonAll(): void {
  for (const [g, dir] of active) {
    killGroup(g);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
  active.clear();
}
let hooksInstalled = false;
function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', abandonAll);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(sig, () => {
      abandonAll();
      // Only this handler was listening: re-raise for the default action.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    });
  }
}

function checkLine(what: string, s: string): void {
  if (/[\n\r\0]/.test(s)) throw new Error(`${what} must not contain newlines or NUL: ${JSON.stringify(s)}`);
}

/**
 * Boot UML, run `node <script> ...args` inside (script: absolute path of a compiled JS file),
 * collect its results and halt. Never rejects for a failure inside UML: look at exitOk,
 * timedOut and console.
 *
 * A boot that hangs before init.sh wrote its set-up facts is booted once more: seen in CI on
 * 6.1, the console ends at "Run /bin/sh as init process" and nothing runs for the whole
 * timeout. That is the emulator, not anything under test; the second run is what is judged,
 * and `bootRetried` says it happened (the test prints it).
 */
export async function runInUml(script: string, args: string[] = [], opts: UmlOptions = {}): Promise<UmlRun> {
  const first = await runInUmlOnce(script, args, opts);
  if (!first.timedOut || first.kernel !== null) return first;
  process.stderr.write(`runInUml: the first boot of ${path.basename(script)} hung before init.sh ran (${first.durationMs} ms): booting once more\n`);
  const second = await runInUmlOnce(script, args, opts);
  return { ...second, bootRetried: `the first boot hung before init.sh ran (${first.durationMs} ms; console ends: ${JSON.stringify(first.console.slice(-200))})` };
}

async function runInUmlOnce(script: string, args: string[], opts: UmlOptions): Promise<UmlRun> {
  const uml = opts.kernel ? opts.kernel.binary : umlBinary();
  if (!uml) throw new Error('linux.uml not found (apt-get install user-mode-linux)');
  if (!path.isAbsolute(script)) throw new Error(`script must be an absolute path: ${script}`);
  if (!fs.existsSync(script)) throw new Error(`script not found: ${script}`);
  checkLine('script', script);
  for (const a of args) checkLine('argument', a);
  const env = opts.env ?? {};
  for (const [k, v] of Object.entries(env)) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Error(`bad environment name: ${k}`);
    checkLine(`environment ${k}`, v);
  }
  const memMb = opts.memMb ?? 768;
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const init = umlInitScript();

  // The host directory is named on the kernel command line (split on white space) and as a
  // hostfs mount option (split on commas).
  for (const p of [os.tmpdir(), init]) {
    if (/[\s,"]/.test(p)) throw new Error(`path unusable on the UML command line: ${p}`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-uml-'));
  const umid = `cgwd-${process.pid}-${++counter}-${Math.random().toString(36).slice(2, 8)}`;
  const umlDir = path.join(dir, 'uml');
  const outDir = path.join(dir, 'out');
  fs.mkdirSync(umlDir);
  fs.mkdirSync(outDir);
  fs.writeFileSync(path.join(outDir, 'argv'), [process.execPath, script, ...args].join('\n') + '\n');
  for (const f of opts.outFiles ?? []) fs.copyFileSync(f, path.join(outDir, path.basename(f)));
  const envLines = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  if (envLines.length) fs.writeFileSync(path.join(outDir, 'env'), envLines.join('\n') + '\n');

  const kernelArgs = [
    `mem=${memMb}M`,
    'rootfstype=hostfs',
    'rootflags=/',
    'ro',
    // No stdin in CI: every console reads nothing, con0 writes to our stdout pipe.
    'con=null',
    'ssl=null',
    'con0=null,fd:1',
    `umid=${umid}`,
    `uml_dir=${umlDir}/`,
    `cgwd_out=${outDir}`,
    ...(opts.systemd ? ['cgwd_systemd=1'] : []),
    'init=/bin/sh',
    '--',
    init,
  ];

  const started = Date.now();
  // Own process group, so the whole UML tree (one host process per UML address space, plus
  // helpers) can be killed at once. UML's memory backing file is an unlinked mkstemp file in
  // $TMPDIR, else /dev/shm when it is a tmpfs, else /tmp; each run has its own, so runs do not
  // clash. Concurrent runs need mem= each there; umid and uml_dir keep their ids apart.
  const child = spawn(uml, kernelArgs, {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: process.env,
  });
  const pgid = child.pid;
  installExitHooks();
  if (pgid) active.set(pgid, opts.keepDir ? null : dir);
  let consoleText = '';
  const onData = (b: Buffer): void => {
    if (consoleText.length < CONSOLE_CAP) consoleText += b.toString('utf8');
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);

  let timedOut = false;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', (e) => {
      consoleText += `\n[spawn error: ${e.message}]\n`;
      resolve();
    });
  });
  const timer = setTimeout(() => {
    timedOut = true;
    if (pgid) killGroup(pgid);
  }, timeoutMs);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
  // The main process is gone; make sure nothing of its group or this umid lives on.
  if (pgid) {
    killGroup(pgid);
    active.delete(pgid);
  }
  let leftovers = umlProcesses(umid).filter((p) => !isZombie(p));
  for (let i = 0; i < 50 && leftovers.length; i++) {
    for (const p of leftovers) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await new Promise((r) => setTimeout(r, 40));
    leftovers = umlProcesses(umid).filter((p) => !isZombie(p));
  }
  // Pipes may stay open a moment longer than the process; do not wait on a surviving writer.
  let pipeTimer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all([streamEnd(child.stdout), streamEnd(child.stderr)]),
    new Promise((r) => (pipeTimer = setTimeout(r, 2000))),
  ]);
  clearTimeout(pipeTimer);
  child.stdout.destroy();
  child.stderr.destroy();
  const durationMs = Date.now() - started;

  const read = (name: string): string | null => {
    try {
      return fs.readFileSync(path.join(outDir, name), 'utf8');
    } catch {
      return null;
    }
  };
  const exitText = read('exit');
  const exitCode = exitText !== null && /^\d+\s*$/.test(exitText) ? Number(exitText.trim()) : null;
  const results: unknown[] = [];
  for (const line of (read('results.jsonl') ?? '').split('\n')) {
    if (!line.trim()) continue;
    try {
      results.push(JSON.parse(line));
    } catch {
      results.push({ unparsable: line });
    }
  }
  const setup: Record<string, string> = {};
  for (const line of (read('setup') ?? '').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) setup[line.slice(0, eq)] = line.slice(eq + 1).trim();
  }
  const words = (s: string | undefined): string[] => (s ? s.split(/\s+/).filter(Boolean) : []);

  if (!opts.keepDir) fs.rmSync(dir, { recursive: true, force: true });

  return {
    exitOk: !timedOut && exitCode === 0,
    exitCode,
    timedOut,
    results,
    console: consoleText,
    durationMs,
    kernel: setup.kernel ?? null,
    controllers: words(setup.controllers),
    subtreeControl: words(setup.subtree_control),
    loopback: setup.loopback === 'up',
    umid,
    dir,
    leftovers,
  };
}

function isZombie(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

function streamEnd(s: Readable): Promise<void> {
  // finished() also settles for a stream that has already ended or closed.
  return finished(s).then(
    () => undefined,
    () => undefined,
  );
}

/**
 * The results a script emitted, by their `check` name: `get(check)` fails the test with the
 * script's error and the console's tail when a check is missing.
 */
export function resultsByCheck<R extends object>(run: UmlRun): { get: (check: string) => R; results: Map<string, R>; tail: string } {
  const tail = run.console.slice(-6000);
  const results = new Map<string, R>();
  for (const x of run.results as (R & { check: string })[]) results.set(x.check, x);
  const get = (check: string): R => {
    const v = results.get(check);
    if (!v) throw new Error(`no "${check}" result; error: ${JSON.stringify(results.get('error'))}\n${tail}`);
    return v;
  };
  return { get, results, tail };
}
