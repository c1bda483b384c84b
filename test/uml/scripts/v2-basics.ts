/**
 * Runs inside user-mode Linux (see test/uml/v2-kernel.test.ts): checks what the cgroup v2
 * kernel does when a pids limit and a memory limit are hit, and emits the observations.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cgroupRoot, emit, inUml, nowMs, readKeyed, readKmsg, sleep } from '../in-uml';
import { HOG, runMain, waitChildLine } from './daemon-util';


function waitExit(child: ChildProcess, timeoutMs: number): Promise<{ code: number | null; signal: string | null } | null> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}

interface WatchEvent {
  type: string;
  at: number;
  /** The file's counters, read in the callback (notifications can be spurious: compare). */
  counters: Record<string, number>;
}

/** fs.watch a flat-keyed cgroup file, reading its counters on every event. */
function watchFile(file: string): { events: WatchEvent[]; close: () => void } {
  const events: WatchEvent[] = [];
  const w = fs.watch(file, (type) => {
    const at = nowMs();
    events.push({ type, at, counters: readKeyed(file) });
  });
  return { events, close: () => w.close() };
}

/** Wait until an event shows counter `key` above `floor`; its time, or null. */
async function firstWhere(
  w: { events: WatchEvent[] },
  key: string,
  floor: number,
  timeoutMs: number,
): Promise<number | null> {
  const end = nowMs() + timeoutMs;
  for (;;) {
    const e = w.events.find((x) => (x.counters[key] ?? 0) > floor);
    if (e) return e.at;
    if (nowMs() > end) return null;
    await sleep(2);
  }
}

async function removeCgroup(dir: string): Promise<void> {
  if (!fs.existsSync(dir)) return;
  try {
    fs.writeFileSync(path.join(dir, 'cgroup.kill'), '1');
  } catch {
    /* no cgroup.kill (before 5.14) */
  }
  for (let i = 0; i < 100; i++) {
    if (fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').trim() === '') break;
    await sleep(20);
  }
  fs.rmdirSync(dir);
}

/* A fixed script; the cgroup directory comes in as $1. sh plus four sleeps are five tasks,
 * so with pids.max=5 the fork after "go" must fail. dash does not retry a failed fork. */
const FORKER = [
  'echo $$ > "$1/cgroup.procs" || exit 90',
  'sleep 1000 & sleep 1000 & sleep 1000 & sleep 1000 &',
  'echo ready',
  'read go',
  'sleep 1000 &',
  'echo forked',
].join('\n');

async function pidsCheck(root: string): Promise<void> {
  const cg = path.join(root, 'cgwd-test-a');
  fs.mkdirSync(cg);
  try {
    fs.writeFileSync(path.join(cg, 'pids.max'), '5');
    const before = readKeyed(path.join(cg, 'pids.events'));
    const watch = watchFile(path.join(cg, 'pids.events'));
    const sh = spawn('/bin/sh', ['-c', FORKER, 'sh', cg], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    let stderrAt: number | null = null;
    sh.stderr.on('data', (b: Buffer) => {
      stderrAt ??= nowMs();
      stderr += b.toString();
    });
    const ready = await waitChildLine(sh, (l) => l === 'ready', 10_000);
    const pidsCurrentReady = Number(fs.readFileSync(path.join(cg, 'pids.current'), 'utf8'));
    const goAt = nowMs();
    sh.stdin.write('go\n');
    const watchAt = await firstWhere(watch, 'max', before.max ?? 0, 5000);
    const ex = await waitExit(sh, 10_000);
    await sleep(100); // any later (spurious or repeated) notifications
    watch.close();
    const after = readKeyed(path.join(cg, 'pids.events'));
    emit({
      check: 'pids',
      ready: ready !== null,
      pidsCurrentAtReady: pidsCurrentReady,
      shellExit: ex,
      shellStderr: stderr.trim(),
      forkFailed: /fork/i.test(stderr),
      eventsBefore: before,
      eventsAfter: after,
      watchEvents: watch.events.map((e) => e.type),
      /** "go" to the watch callback that saw max go up: an upper bound of fork-to-callback */
      watchLatencyMs: watchAt === null ? null : watchAt - goAt,
      /** "go" to the shell's "Cannot fork" on stderr */
      stderrLatencyMs: stderrAt === null ? null : stderrAt - goAt,
      pidsEventsLocal: fs.existsSync(path.join(cg, 'pids.events.local')),
      files: fs.readdirSync(cg).filter((f) => f.startsWith('pids.')),
    });
  } finally {
    await removeCgroup(cg);
  }
}


async function memoryCheck(root: string): Promise<void> {
  const cg = path.join(root, 'cgwd-test-m');
  fs.mkdirSync(cg);
  try {
    fs.writeFileSync(path.join(cg, 'memory.max'), String(20 * 1024 * 1024));
    const before = readKeyed(path.join(cg, 'memory.events'));
    const watch = watchFile(path.join(cg, 'memory.events'));
    // Node's own start-up memory stays charged to the root cgroup: v2 does not move charges
    // on migration, so only what the hog allocates after the move counts against 20M.
    const hog = spawn(process.execPath, ['-e', HOG], { stdio: ['pipe', 'pipe', 'pipe'] });
    const ready = await waitChildLine(hog, (l) => l === 'ready', 20_000);
    fs.writeFileSync(path.join(cg, 'cgroup.procs'), String(hog.pid));
    const goAt = nowMs();
    hog.stdin?.write('go\n');
    const ex = await waitExit(hog, 30_000);
    const exitAt = nowMs();
    const watchAt = await firstWhere(watch, 'oom_kill', before.oom_kill ?? 0, 2000);
    await sleep(100);
    watch.close();
    const after = readKeyed(path.join(cg, 'memory.events'));
    emit({
      check: 'memory',
      ready: ready !== null,
      hogPid: hog.pid,
      hogExit: ex,
      eventsBefore: before,
      eventsAfter: after,
      eventsLocal: fs.existsSync(path.join(cg, 'memory.events.local'))
        ? readKeyed(path.join(cg, 'memory.events.local'))
        : null,
      watchEvents: watch.events.map((e) => e.type),
      watchEventCounters: watch.events.map((e) => e.counters),
      /** "go" to the watch callback that saw oom_kill go up */
      watchLatencyMs: watchAt === null ? null : watchAt - goAt,
      /** the hog's death (seen by its parent) to that callback; negative: the callback came first */
      watchAfterExitMs: watchAt === null ? null : watchAt - exitAt,
      exitLatencyMs: exitAt - goAt,
      memoryPeak: fs.existsSync(path.join(cg, 'memory.peak'))
        ? Number(fs.readFileSync(path.join(cg, 'memory.peak'), 'utf8'))
        : null,
    });
  } finally {
    await removeCgroup(cg);
  }
}

async function main(): Promise<void> {
  if (!inUml()) throw new Error('run this through test/helpers/uml.ts runInUml()');
  // Modes for testing the harness itself.
  const mode = process.argv[2];
  if (mode === '--exit') {
    emit({ check: 'exit', code: 3 });
    process.exit(3);
  }
  if (mode === '--hang') {
    emit({ check: 'hang' });
    for (;;) await sleep(60_000);
  }
  const root = cgroupRoot();
  emit({
    check: 'env',
    release: os.release(),
    argv: process.argv.slice(2),
    cgroupRoot: root,
    out: process.env.CGWD_OUT,
    extra: process.env.CGWD_TEST_EXTRA ?? null,
    controllers: fs.readFileSync(path.join(root, 'cgroup.controllers'), 'utf8').trim(),
    subtreeControl: fs.readFileSync(path.join(root, 'cgroup.subtree_control'), 'utf8').trim(),
    tmpIsHost: fs.existsSync(process.argv[1] ?? ''),
    cgroup2: fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => / - cgroup2 /.test(l)),
  });
  await pidsCheck(root);
  await memoryCheck(root);
  const kmsg = readKmsg().map((r) => r.message);
  emit({
    check: 'kmsg',
    forkRejected: kmsg.filter((m) => m.includes('fork rejected by pids controller')),
    oomKill: kmsg.filter((m) => m.startsWith('oom-kill:')),
    killed: kmsg.filter((m) => m.includes('Memory cgroup out of memory')),
    records: kmsg.length,
  });
}

runMain(main, emit);
