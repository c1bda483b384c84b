import { EventEmitter } from 'node:events';
import type { CgroupFs, Limit, SyncFileReader } from '../cgroup/types';
import type { ContainerRecord } from '../discovery/container';
import { countHostTasks, readForkCount } from '../kernel/proc';
import { readPidMax, readThreadsMax } from '../kernel/sysctl';
import type { Logger } from '../log';
import { Yielder } from '../yielder';
import { WarningTracker, type WarningThresholds, type WarningTransition } from './warnings';

export interface Usage {
  pidsCurrent?: number;
  pidsMax?: Limit;
  memoryUsage?: number;
  memoryLimit?: Limit;
  /** The host's fork count (/proc/stat processes) when pidsCurrent was read. */
  forksAt?: number;
}

export interface HostUsage {
  tasks?: number;
  pidMax?: number;
  threadsMax?: number;
}

/**
 * Every container is read in full (usage and limits) once every this many ticks (a minute at
 * the default 5 s), spread: 1/12 of them each tick. Between, only what a warning needs.
 */
const REFRESH_EVERY = 12;

/**
 * Limits are re-read every this many full reads (5 minutes): we write pids.max ourselves (the
 * keeper updates the record when it does) and a runtime changes a memory limit rarely.
 */
const LIMITS_EVERY = 5;

/**
 * pids.current can outrun "last value + forks since" by the forks in flight: the pids
 * controller charges a fork before copy_process counts it in total_forks.
 */
const FORK_SLACK = 64;

const PIDS_CURRENT_FILE = /\/pids\.current$/;
const MEMORY_USAGE_FILE = /\/(memory\.usage_in_bytes|memory\.current)$/;

/** The subject of host-level warnings. */
export const HOST_SUBJECT = '/';

export interface UsageMonitorOptions {
  cgroups: CgroupFs;
  reader: SyncFileReader;
  procRoot: string;
  intervalMs: number;
  thresholds: WarningThresholds;
  containers: () => Iterable<ContainerRecord>;
  log: Logger;
}

/**
 * Usage against limits, every `intervalMs`: pids.current vs pids.max, memory vs its limit,
 * the host's tasks vs kernel.pid_max. Keeps the last values in each container's record
 * (metrics and alerts read them, with no I/O of their own) and emits 'transition'
 * (WarningTransition, ContainerRecord | undefined) when an early warning is raised or cleared.
 */
export class UsageMonitor extends EventEmitter {
  host: HostUsage = {};
  private ticks = 0;
  /** Where each container falls in the spread of full reads (set at its first tick). */
  private readonly slots = new WeakMap<ContainerRecord, number>();
  private nextSlot = 0;
  private readonly pinnedFile = new WeakMap<ContainerRecord, string>();
  private readonly warnings: WarningTracker;
  private timer?: NodeJS.Timeout;

  constructor(private readonly o: UsageMonitorOptions) {
    super();
    this.warnings = new WarningTracker(o.thresholds);
  }

  start(): void {
    void this.tick();
    this.timer = setInterval(() => void this.tick(), this.o.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** A reload: new interval and thresholds, keeping what is raised and the last readings. */
  reconfigure(intervalMs: number, thresholds: WarningThresholds): void {
    this.warnings.setThresholds(thresholds);
    this.o.thresholds = thresholds;
    if (intervalMs === this.o.intervalMs) return;
    this.o.intervalMs = intervalMs;
    if (this.timer) {
      this.stop();
      this.start();
    }
  }

  /** The container is gone: its warnings end with it (the alert pipeline resolves them). */
  forget(c: ContainerRecord): void {
    this.warnings.forget(c.cgroupPath);
    const file = this.pinnedFile.get(c);
    if (file !== undefined) this.o.reader.unpin?.(file);
    this.pinnedFile.delete(c);
  }

  /**
   * The one file of a container whose fd stays open: the one its ticks read most, memory usage
   * where a memory limit makes it read every tick, else pids.current.
   */
  private pin(c: ContainerRecord, u: Usage): void {
    const { reader } = this.o;
    if (!reader.pin || !reader.unpin) return;
    const want = typeof u.memoryLimit === 'number' ? MEMORY_USAGE_FILE : PIDS_CURRENT_FILE;
    const had = this.pinnedFile.get(c);
    if (had !== undefined && want.test(had)) return;
    const file = this.o.cgroups.counterFiles(c.cgroupPath).find((f) => want.test(f));
    if (had !== undefined) reader.unpin(had);
    if (file === undefined) return;
    reader.pin(file);
    this.pinnedFile.set(c, file);
  }

  /** Read one container in full, now (also used to fill in an alert). */
  read(c: ContainerRecord, forks = this.forks()): Usage | undefined {
    const u = this.readCgroup(c.cgroupPath);
    if (!u) return undefined;
    if (forks !== null) u.forksAt = forks;
    c.usage = u;
    if (c.removedAt === undefined) this.pin(c, u);
    return u;
  }

  private forks(): number | null {
    try {
      return readForkCount(this.o.procRoot);
    } catch {
      return null;
    }
  }

  /**
   * A tick's look at one container: in full in its slot of the spread; otherwise pids.current
   * only where a pids warning could have been reached since the last read, and memory usage
   * only where a memory limit makes a warning possible. A cgroup's pids.current grows only
   * by forks in it (or tasks moved in through cgroup.procs, which the full read catches), and
   * every fork on the host counts in /proc/stat's "processes": a container at 3 tasks with
   * a warning at 4915 cannot be there after fewer than 4912 forks on the whole host.
   */
  private look(c: ContainerRecord, forks: number | null, due: boolean, limits: boolean): Usage | undefined {
    const last = c.usage;
    if (limits || !last) return this.read(c, forks);
    const { cgroups, reader } = this.o;
    if (due) {
      try {
        const pidsCurrent = cgroups.readPidsCurrentOnlySync(c.cgroupPath, reader);
        if (pidsCurrent === null) return undefined;
        last.pidsCurrent = pidsCurrent;
        last.memoryUsage = cgroups.readMemoryUsageOnlySync(c.cgroupPath, reader) ?? undefined;
        if (forks !== null) last.forksAt = forks;
        return last;
      } catch (err) {
        this.o.log.warn({ err: (err as Error).message, cgroup: c.cgroupPath }, 'reading usage failed');
        return undefined;
      }
    }
    const p = this.o.thresholds;
    try {
      let read = false;
      if (typeof last.pidsMax === 'number') {
        const reach = last.pidsCurrent === undefined || last.forksAt === undefined || forks === null ? Infinity : last.pidsCurrent + (forks - last.forksAt) + FORK_SLACK;
        if (this.warnings.isRaised('pids-warning', c.cgroupPath) || reach * 100 >= p.pidsPercent * last.pidsMax) {
          const v = cgroups.readPidsCurrentOnlySync(c.cgroupPath, reader);
          if (v === null) return undefined;
          last.pidsCurrent = v;
          if (forks !== null) last.forksAt = forks;
          read = true;
        }
      }
      if (typeof last.memoryLimit === 'number' || this.warnings.isRaised('memory-warning', c.cgroupPath)) {
        const v = cgroups.readMemoryUsageOnlySync(c.cgroupPath, reader);
        if (v !== null) {
          last.memoryUsage = v;
          read = true;
        }
      }
      return read ? last : undefined;
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message, cgroup: c.cgroupPath }, 'reading usage failed');
      return undefined;
    }
  }

  /** Usage and limits of any cgroup (a container's sub-cgroup, for an alert), read now and not kept. */
  readCgroup(path: string): Usage | undefined {
    const { cgroups, reader } = this.o;
    try {
      const pids = cgroups.readPidsCurrentSync(path, reader);
      const mem = cgroups.readMemoryUsageSync(path, reader);
      if (!pids && !mem) return undefined;
      return { pidsCurrent: pids?.current, pidsMax: pids?.max, memoryUsage: mem?.usageBytes, memoryLimit: mem?.limitBytes };
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message, cgroup: path }, 'reading usage failed');
      return undefined;
    }
  }

  private ticking = false;

  async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      await this.readAll();
    } finally {
      this.ticking = false;
    }
  }

  private async readAll(): Promise<void> {
    const tick = this.ticks++;
    const forks = this.forks();
    const y = new Yielder();
    for (const c of [...this.o.containers()]) {
      let slot = this.slots.get(c);
      if (slot === undefined) this.slots.set(c, (slot = this.nextSlot++ % REFRESH_EVERY));
      const phase = (tick + slot) % (REFRESH_EVERY * LIMITS_EVERY);
      const u = this.look(c, forks, phase % REFRESH_EVERY === 0, phase === 0);
      if (u) {
        if (u.pidsCurrent !== undefined) this.transition(this.warnings.update({ kind: 'pids-warning', subject: c.cgroupPath, value: u.pidsCurrent, limit: u.pidsMax }), c);
        if (u.memoryUsage !== undefined) this.transition(this.warnings.update({ kind: 'memory-warning', subject: c.cgroupPath, value: u.memoryUsage, limit: u.memoryLimit }), c);
      }
      await y.maybe();
    }
    try {
      this.host = { tasks: countHostTasks(this.o.procRoot), pidMax: readPidMax(this.o.procRoot), threadsMax: readThreadsMax(this.o.procRoot) };
      this.transition(this.warnings.update({ kind: 'host-pids-warning', subject: HOST_SUBJECT, value: this.host.tasks!, limit: this.host.pidMax }), undefined);
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'reading the host task count failed');
    }
  }

  private transition(t: WarningTransition | undefined, c: ContainerRecord | undefined): void {
    if (t) this.emit('transition', t, c);
  }
}
