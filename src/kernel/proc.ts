import { countCpuList } from '../cgroup/parsers';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Threads on the host. Walking /proc/<pid>/task costs a directory read per process; the
 * total in /proc/loadavg's fourth field ("running/total") is nr_threads, the count of
 * kernel scheduling entities, which is exactly the number that pid_max and threads-max
 * limit (every thread takes a PID). One small read instead of thousands.
 */
export function countHostTasks(procRoot: string): number {
  const file = path.join(procRoot, 'loadavg');
  const text = fs.readFileSync(file, 'utf8');
  const m = /^\S+\s+\S+\s+\S+\s+\d+\/(\d+)\s/.exec(text);
  if (!m) throw new Error(`${file}: expected "l1 l5 l15 running/total last_pid", got ${JSON.stringify(text.trim())}`);
  return Number(m[1]);
}

/**
 * Tasks ever made on the host (/proc/stat "processes": the kernel's total_forks, counting every
 * successful fork and clone, threads included). Not namespaced: the host's count also from a
 * container with the host's /proc.
 */
export function readForkCount(procRoot: string): number {
  const file = path.join(procRoot, 'stat');
  const m = /^processes (\d+)$/m.exec(fs.readFileSync(file, 'utf8'));
  if (!m) throw new Error(`${file}: expected a "processes N" line`);
  return Number(m[1]);
}

const isGone = (err: unknown): boolean => {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ESRCH';
};

/** A task's command name, or null when the task has exited. */
export function readComm(procRoot: string, pid: number): string | null {
  try {
    return fs.readFileSync(path.join(procRoot, String(pid), 'comm'), 'utf8').replace(/\n$/, '');
  } catch (err) {
    if (isGone(err)) return null;
    throw err;
  }
}

export interface CommandCount {
  comm: string;
  tasks: number;
}

/**
 * The commands holding the most tasks among `tids`, most first (ties by name). comm is per
 * thread (threads can rename themselves), so each tid's own comm is read; /proc/<tid> works
 * for thread ids as well as process ids. Tasks that exit meanwhile are left out.
 */
export function topCommands(procRoot: string, tids: number[], n: number): CommandCount[] {
  const counts = new Map<string, number>();
  for (const tid of tids) {
    const comm = readComm(procRoot, tid);
    if (comm === null) continue;
    counts.set(comm, (counts.get(comm) ?? 0) + 1);
  }
  return [...counts]
    .map(([comm, tasks]) => ({ comm, tasks }))
    .sort((a, b) => b.tasks - a.tasks || (a.comm < b.comm ? -1 : a.comm > b.comm ? 1 : 0))
    .slice(0, Math.max(0, n));
}

/**
 * CPUs online on the host. sysfs is the host's view; os.availableParallelism() follows our
 * own affinity mask, which a cpuset may have narrowed, so it is only the fallback.
 */
export function hostCores(sysRoot = '/sys'): number {
  try {
    const n = countCpuList(fs.readFileSync(path.join(sysRoot, 'devices/system/cpu/online'), 'utf8'));
    if (n > 0) return n;
  } catch {
    /* fall back below */
  }
  return os.availableParallelism();
}
