import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseMountinfo } from '../cgroup/mountinfo';
import type { CgroupFs } from '../cgroup/types';
import { parsePidsEventsMax } from '../cgroup/parsers';

/** What a probe established: the kernel did it, did not, or it could not be tried. */
export type Signal = 'yes' | 'no' | 'unknown';

/**
 * Which signals this kernel delivers, measured at start on a cgroup of the probe's own; no
 * version number is compared (what a kernel notifies is a property of that build: v1
 * `pids.events` notifies on 6.1 and not on 6.18 or 7.2). One result type: the sources and the
 * sweep are picked from it.
 */
export interface KernelCapabilities {
  /** inotify IN_MODIFY on `pids.events` within WITHIN_MS of a fork rejected at `pids.max`. */
  pidsInotify: Signal;
  /** /dev/kmsg carried "fork rejected by pids controller in <cgroup>". */
  pidsKmsg: Signal;
  /** inotify IN_MODIFY on `memory.events` within WITHIN_MS of a `memory.high` breach (v2; v1 has no memory.high). */
  memoryInotify: Signal;
  /** The kernel has `pids.events.local` / `memory.events.local` (v2; from 6.11 / 5.2). */
  pidsEventsLocal: boolean;
  memoryEventsLocal: boolean;
  /** cgroup2 mounted with `pids_localevents` / `memory_localevents` (the old, local counting). */
  pidsLocaleventsMount: boolean;
  memoryLocaleventsMount: boolean;
  /** Why a signal is unknown (no cgroup could be made, the event did not happen). */
  unknownWhy?: string;
  /** How long the probe took. */
  probeMs: number;
}

/** How soon after the event a notification counts as "delivered". */
export const WITHIN_MS = 100;

export interface ProbeOptions {
  cgroups: CgroupFs;
  procRoot: string;
  kmsgPath: string;
  /** False in observe mode or without a writable cgroupfs: nothing is made, every signal is unknown. */
  canWrite: boolean;
}

/** Every probed signal unknown (nothing could be tried), the file facts as they are. */
export function unknownCapabilities(o: Pick<ProbeOptions, 'cgroups' | 'procRoot'>, why: string): KernelCapabilities {
  return { pidsInotify: 'unknown', pidsKmsg: 'unknown', memoryInotify: 'unknown', ...fileFacts(o.cgroups, o.procRoot), unknownWhy: why, probeMs: 0 };
}

/**
 * Probe on a fresh cgroup of its own (`/cgwatchdog-probe-<pid>-<random>`, removed after):
 * one fork past `pids.max 1`, and on v2 a `memory.high` breach (throttling, never an OOM
 * kill that other tools on the node would alert on). The probe's cgroup is no container's,
 * so its events never alert. Never throws: what fails is "unknown", with the reason.
 */
export async function probeCapabilities(o: ProbeOptions): Promise<KernelCapabilities> {
  if (!o.canWrite) return unknownCapabilities(o, 'the probe cannot make a cgroup (observe mode or a read-only cgroupfs)');
  const t0 = performance.now();
  const rel = `/cgwatchdog-probe-${process.pid}-${randomBytes(3).toString('hex')}`;
  const why: string[] = [];
  let pidsInotify: Signal = 'unknown';
  let pidsKmsg: Signal = 'unknown';
  let memoryInotify: Signal = 'unknown';
  const made: string[] = [];
  let local: Partial<Pick<KernelCapabilities, 'pidsEventsLocal' | 'memoryEventsLocal'>> = {};
  try {
    const pidsDir = o.cgroups.dir('pids', rel);
    fs.mkdirSync(pidsDir);
    made.push(pidsDir);
    if (o.cgroups.version === 'v2') local = { pidsEventsLocal: fs.existsSync(path.join(pidsDir, 'pids.events.local')), memoryEventsLocal: fs.existsSync(path.join(pidsDir, 'memory.events.local')) };
    const pids = await probePids(pidsDir, rel, o.kmsgPath);
    pidsInotify = pids.inotify;
    pidsKmsg = pids.kmsg;
    if (pids.why) why.push(pids.why);
    if (o.cgroups.version === 'v2') {
      const mem = await probeMemory(pidsDir);
      memoryInotify = mem.inotify;
      if (mem.why) why.push(mem.why);
    } else {
      why.push('memory: cgroup v1 has no memory.high to breach safely');
    }
  } catch (err) {
    why.push(`cannot make the probe cgroup ${rel}: ${(err as Error).message}`);
  } finally {
    for (const d of made.reverse()) await removeCgroup(d);
  }
  const out: KernelCapabilities = { pidsInotify, pidsKmsg, memoryInotify, ...fileFacts(o.cgroups, o.procRoot, local), probeMs: Math.round(performance.now() - t0) };
  if (why.length > 0) out.unknownWhy = why.join('; ');
  return out;
}

/** `seen`: what the probe's own cgroup showed; only what it could not show is looked for among the root's children. */
function fileFacts(
  cgroups: CgroupFs,
  procRoot: string,
  seen: Partial<Pick<KernelCapabilities, 'pidsEventsLocal' | 'memoryEventsLocal'>> = {},
): Pick<KernelCapabilities, 'pidsEventsLocal' | 'memoryEventsLocal' | 'pidsLocaleventsMount' | 'memoryLocaleventsMount'> {
  const v2 = cgroups.version === 'v2';
  let opts: string[] = [];
  try {
    const mount = cgroups.layout.v2Mount;
    opts = parseMountinfo(fs.readFileSync(path.join(procRoot, 'self', 'mountinfo'), 'utf8')).find((m) => m.fsType === 'cgroup2' && m.mountPoint === mount)?.superOptions ?? [];
  } catch {
    /* no mountinfo: the options stay unknown, as absent */
  }
  // The root cgroup has no pids.events: a kernel that has the .local files shows them in
  // every non-root cgroup, and the cgroup.controllers file tells nothing of them. The
  // interface files of a controller are listed by the kernel in each child directory only.
  return {
    pidsEventsLocal: seen.pidsEventsLocal ?? (v2 && hasChildFile(cgroups, 'pids', 'pids.events.local')),
    memoryEventsLocal: seen.memoryEventsLocal ?? (v2 && hasChildFile(cgroups, 'memory', 'memory.events.local')),
    pidsLocaleventsMount: opts.includes('pids_localevents'),
    memoryLocaleventsMount: opts.includes('memory_localevents'),
  };
}

/** Whether some child cgroup of the hierarchy root has `file` (first child with the controller's files). */
function hasChildFile(cgroups: CgroupFs, controller: 'pids' | 'memory', file: string): boolean {
  const root = cgroups.dir(controller, '/');
  try {
    for (const e of fs.readdirSync(root, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const dir = path.join(root, e.name);
      if (fs.existsSync(path.join(dir, `${controller}.max`)) || fs.existsSync(path.join(dir, `${controller}.current`))) return fs.existsSync(path.join(dir, file));
    }
  } catch {
    /* unreadable root */
  }
  return false;
}

/**
 * The probe's child: this Node binary with a fixed script and the cgroup.procs path as its only
 * argument (no shell, nothing of a cgroup's name in a command). It writes its own pid into the
 * probe cgroup before it does anything the probe measures, so the fork it tries or the memory it
 * takes is charged there and nowhere else; exit code 3 says it could not join. A clean
 * environment, so an operator's NODE_OPTIONS (a --require, a heap size) does not change it.
 */
function probeChild(script: string, dir: string): ChildProcess {
  const join = "require('fs').writeFileSync(process.argv[1], String(process.pid));";
  const child = spawn(process.execPath, ['-e', `try { ${join} } catch { process.exit(3); }\n${script}`, path.join(dir, 'cgroup.procs')], { stdio: 'ignore', env: {} });
  child.on('error', () => undefined);
  return child;
}

/** Node's start-up: 50 ms on a host, seconds in user-mode Linux, more on a loaded node. */
const START_MS = 30_000;

/**
 * Waits until the child is in the probe cgroup (or has exited, or START_MS passed). The probe's
 * own time limits count from here, so a slow Node start-up is never read as a missing signal.
 */
async function started(child: ChildProcess, dir: string): Promise<boolean> {
  const end = performance.now() + START_MS;
  while (performance.now() < end) {
    if (child.exitCode !== null || child.signalCode !== null) return true;
    try {
      if (fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').includes(String(child.pid))) return true;
    } catch {
      /* read again */
    }
    await sleep(5);
  }
  return false;
}

/** Waits for the child's exit code, or null after `ms` (the timer is cleared either way). */
function exitOf(child: ChildProcess, ms: number): Promise<number | null> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code ?? null);
    });
  });
}

/**
 * One fork past pids.max 1. The child joins with all its threads already made (a move is never
 * refused by pids.max; only a new task is), so its first spawn is the rejected fork, returned as
 * EAGAIN, never an abort. Its exit is waited for: the rejection is counted before pids.events is read.
 */
async function probePids(dir: string, rel: string, kmsgPath: string): Promise<{ inotify: Signal; kmsg: Signal; why?: string }> {
  fs.writeFileSync(path.join(dir, 'pids.max'), '1');
  const eventsFile = path.join(dir, 'pids.events');
  let changedAt: number | undefined;
  const w = fs.watch(eventsFile, () => (changedAt ??= performance.now()));
  w.on('error', () => undefined);
  const child = probeChild("require('child_process').spawnSync('/bin/true');", dir);
  try {
    if (child.pid === undefined) return { inotify: 'unknown', kmsg: 'unknown', why: `pids: cannot start ${process.execPath}` };
    const exit = exitOf(child, START_MS + 10_000);
    if (!(await started(child, dir))) return { inotify: 'unknown', kmsg: 'unknown', why: `pids: the probe child did not start within ${START_MS / 1000} s` };
    const code = await exit;
    if (code === 3) return { inotify: 'unknown', kmsg: 'unknown', why: 'pids: the probe child could not join the probe cgroup' };
    const rejectedAt = performance.now();
    const max = parsePidsEventsMax(fs.readFileSync(eventsFile, 'utf8'));
    if (max === 0) return { inotify: 'unknown', kmsg: 'unknown', why: 'pids: the probe fork was not rejected' };
    while (changedAt === undefined && performance.now() - rejectedAt < WITHIN_MS) await sleep(5);
    const inotify: Signal = changedAt !== undefined ? 'yes' : 'no';
    const kmsg = kmsgHas(kmsgPath, `fork rejected by pids controller in ${rel}`);
    return { inotify, kmsg, ...(kmsg === 'unknown' ? { why: `pids: cannot read ${kmsgPath}` } : {}) };
  } finally {
    child.kill('SIGKILL');
    w.close();
  }
}

/** memory.high at 1 MiB and a child that keeps taking filled buffers: reclaim at high (counted in memory.events "high"), no OOM. */
async function probeMemory(dir: string): Promise<{ inotify: Signal; why?: string }> {
  fs.writeFileSync(path.join(dir, 'pids.max'), 'max');
  fs.writeFileSync(path.join(dir, 'memory.high'), String(1 << 20));
  const eventsFile = path.join(dir, 'memory.events');
  const high = (): number => Number(/^high (\d+)$/m.exec(fs.readFileSync(eventsFile, 'utf8'))?.[1] ?? 0);
  let changedAt: number | undefined;
  const w = fs.watch(eventsFile, () => (changedAt ??= performance.now()));
  w.on('error', () => undefined);
  // Memory charged before the move stays with the old cgroup (v2 moves no charges): only what
  // the child takes after joining counts, and Buffer.alloc's fill touches every page of it.
  const child = probeChild('const keep = []; for (;;) keep.push(Buffer.alloc(1 << 16, 1));', dir);
  let code: number | null = null;
  child.once('exit', (c) => (code = c));
  try {
    if (child.pid === undefined) return { inotify: 'unknown', why: `memory: cannot start ${process.execPath}` };
    if (!(await started(child, dir))) return { inotify: 'unknown', why: `memory: the probe child did not start within ${START_MS / 1000} s` };
    const end = performance.now() + 5000;
    let breachedAt: number | undefined;
    while (performance.now() < end) {
      if (high() > 0) {
        breachedAt = performance.now();
        break;
      }
      if (code === 3) return { inotify: 'unknown', why: 'memory: the probe child could not join the probe cgroup' };
      await sleep(2);
    }
    if (breachedAt === undefined) return { inotify: 'unknown', why: 'memory: memory.high was not breached within 5 s' };
    while (changedAt === undefined && performance.now() - breachedAt < WITHIN_MS) await sleep(5);
    return { inotify: changedAt !== undefined ? 'yes' : 'no' };
  } finally {
    child.kill('SIGKILL');
    w.close();
  }
}

/** Whether the kernel log holds `text` (read without blocking, from the oldest record kept). */
function kmsgHas(kmsgPath: string, text: string): Signal {
  let fd: number;
  try {
    fd = fs.openSync(kmsgPath, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch {
    return 'unknown';
  }
  const buf = Buffer.alloc(8192);
  try {
    for (let i = 0; i < 1_000_000; i++) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EPIPE') continue; // records overwritten while we read: go on
        if (code === 'EAGAIN') return 'no';
        return 'unknown';
      }
      if (n <= 0) return 'no';
      if (buf.toString('utf8', 0, n).includes(text)) return 'yes';
    }
    return 'no';
  } finally {
    fs.closeSync(fd);
  }
}

async function removeCgroup(dir: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      for (const pid of fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      fs.rmdirSync(dir);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      await sleep(10);
    }
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Which event files inotify watches, given what the kernel was measured to notify. */
export interface InotifyKinds {
  pids: boolean;
  memory: boolean;
}

/**
 * The sources picked from the probe: a file is watched where the kernel was seen to notify
 * it, and on v2 also where that is unknown (inotify on v2 event files is the kernel's
 * documented interface; a watch that never fires costs nothing). On v1 only what was seen:
 * 6.1 notifies pids.events there, 6.18 does not. What is not watched is read by the sweep.
 */
export function inotifyFor(caps: KernelCapabilities, version: 'v1' | 'v2', enabled: boolean): InotifyKinds {
  const pick = (s: Signal): boolean => enabled && (s === 'yes' || (s === 'unknown' && version === 'v2'));
  return { pids: pick(caps.pidsInotify), memory: version === 'v2' && pick(caps.memoryInotify) };
}

/**
 * What tells the daemon of a hit without being read, from the probe's measurements (no
 * second probe). The sweep reads fast only what nothing here covers; the rest gets the slow,
 * spread safety net. A signal the probe could not establish ('unknown') covers nothing.
 */
export interface SweepCoverage {
  /** inotify fires on `pids.events` (measured) and it is watched: every hit is notified. */
  pidsInotify: boolean;
  /**
   * kmsg logged the probe's rejected fork and kmsg is followed: a cgroup's FIRST rejection is
   * reported (the kernel prints "fork rejected" once per cgroup), the later ones are not.
   */
  pidsKmsgFirst: boolean;
  /** inotify fires on `memory.events` (v2, measured) and it is watched. */
  memoryInotify: boolean;
  /**
   * v1: kmsg reports every OOM kill (kmsg established by the pids probe: v1 has no safe memory
   * probe), and failcnt, the one v1 memory counter kmsg does not report, is not alerted.
   */
  memoryKmsg: boolean;
}

export interface CoverageOptions {
  inotify: boolean;
  kmsg: boolean;
  /** Whether a kind raises alerts (not in alerts.metricOnlyKinds). */
  alerted: (kind: 'memory-max') => boolean;
}

/** No source covers anything: everything is swept fast (observe mode, tests, unknown kernels). */
export const NO_COVERAGE: SweepCoverage = { pidsInotify: false, pidsKmsgFirst: false, memoryInotify: false, memoryKmsg: false };

export function sweepCoverage(caps: KernelCapabilities, version: 'v1' | 'v2', o: CoverageOptions): SweepCoverage {
  const watched = inotifyFor(caps, version, o.inotify);
  return {
    pidsInotify: watched.pids && caps.pidsInotify === 'yes',
    pidsKmsgFirst: o.kmsg && caps.pidsKmsg === 'yes',
    memoryInotify: version === 'v2' && watched.memory && caps.memoryInotify === 'yes',
    memoryKmsg: version === 'v1' && o.kmsg && caps.pidsKmsg === 'yes' && !o.alerted('memory-max'),
  };
}

/** As a metric value: 1 yes, 0 no, -1 unknown. */
export function signalValue(s: Signal | boolean): number {
  return s === true || s === 'yes' ? 1 : s === false || s === 'no' ? 0 : -1;
}
