import fs from 'node:fs';
import path from 'node:path';

// The initial PID namespace's inode (PROC_PID_INIT_INO, include/linux/proc_ns.h). Comparing
// /proc/self/ns/pid with /proc/1/ns/pid does not help inside a container: PID 1 there is in
// the same namespace as we are. The fixed inode of the initial namespace does.
export const PROC_PID_INIT_INO = 0xeffffffc;

export interface RaisePidMaxOptions {
  procRoot: string;
  target: number;
  /** Also write a sysctl.d drop-in so the value survives a reboot. */
  persist: boolean;
  /** Where the drop-in goes, e.g. /etc/sysctl.d/60-cgwatchdog.conf. */
  dropInPath?: string;
}

export interface RaisePidMaxResult {
  before: number;
  after: number;
  changed: boolean;
  persisted: boolean;
  note?: string;
}

function readInt(file: string, what: string): number {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read ${file} (${what}): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const n = Number.parseInt(text.trim(), 10);
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`${file}: expected a positive integer (${what}), got ${JSON.stringify(text.trim())}`);
  return n;
}

export const pidMaxPath = (procRoot: string): string => path.join(procRoot, 'sys/kernel/pid_max');

export function readPidMax(procRoot: string): number {
  return readInt(pidMaxPath(procRoot), 'kernel.pid_max');
}

export function readThreadsMax(procRoot: string): number {
  return readInt(path.join(procRoot, 'sys/kernel/threads-max'), 'kernel.threads-max');
}

/**
 * Whether we run in the host's PID namespace: true, false, or null when it cannot be told
 * (no ns link, e.g. a fixture proc root).
 */
export function inInitialPidNamespace(procRoot: string): boolean | null {
  let link: string;
  try {
    link = fs.readlinkSync(path.join(procRoot, 'self/ns/pid'));
  } catch {
    return null;
  }
  const m = /^pid:\[(\d+)\]$/.exec(link);
  return m ? Number(m[1]) === PROC_PID_INIT_INO : null;
}

function writeError(file: string, err: NodeJS.ErrnoException): Error {
  if (err.code === 'EACCES' || err.code === 'EROFS' || err.code === 'EPERM') {
    return new Error(`cannot write ${file}: read-only (is /proc/sys mounted read-only? run privileged)`);
  }
  if (err.code === 'EINVAL') return new Error(`cannot write ${file}: the kernel refused the value (EINVAL; the maximum is 4194304 on 64-bit)`);
  return new Error(`cannot write ${file}: ${err.code ?? err.message}`);
}

/** The drop-in text; `sysctl --system` reads it at boot. */
export function pidMaxDropIn(value: number): string {
  return (
    '# Written by cgwatchdog: container hosts run many tasks, and the default pid_max (32768)\n' +
    '# is reached long before memory runs out. cgwatchdog only ever raises this value.\n' +
    `kernel.pid_max = ${value}\n`
  );
}

function writeAtomic(file: string, text: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(tmp, text, { mode: 0o644 });
    fs.renameSync(tmp, file);
  } catch (err) {
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* the temp file may not exist */
    }
    throw new Error(`cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/**
 * Raise kernel.pid_max to `target`; never lower it (something else may have raised it further
 * on purpose). With `persist`, the drop-in holds the larger of the target and the current value.
 */
export function raisePidMax(opts: RaisePidMaxOptions): RaisePidMaxResult {
  const { procRoot, target, persist, dropInPath } = opts;
  if (!Number.isSafeInteger(target) || target <= 0) throw new Error(`pid_max target must be a positive integer, got ${target}`);
  const file = pidMaxPath(procRoot);
  const before = readPidMax(procRoot);
  let after = before;
  if (target > before) {
    try {
      fs.writeFileSync(file, `${target}\n`);
    } catch (err) {
      throw writeError(file, err as NodeJS.ErrnoException);
    }
    after = readPidMax(procRoot);
  }
  let persisted = false;
  if (persist) {
    if (!dropInPath) throw new Error('pid_max: persist is set but no drop-in path was given');
    writeAtomic(dropInPath, pidMaxDropIn(Math.max(after, target)));
    persisted = true;
  }
  const result: RaisePidMaxResult = { before, after, changed: after !== before, persisted };
  // Since Linux 6.14 pid_max is per PID namespace: a write from a container's namespace
  // leaves the host's limit where it was.
  if (inInitialPidNamespace(procRoot) === false) {
    result.note = "not in the host's PID namespace: pid_max written here applies to this namespace only; run with hostPID";
  }
  return result;
}
