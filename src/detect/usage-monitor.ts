import { EventEmitter } from 'node:events';
import type { CgroupFs, Limit, SyncFileReader } from '../cgroup/types';
import type { ContainerRecord } from '../discovery/container';
import { countHostTasks } from '../kernel/proc';
import { readPidMax, readThreadsMax } from '../kernel/sysctl';
import type { Logger } from '../log';
import { Yielder } from '../yielder';
import { WarningTracker, type WarningThresholds, type WarningTransition } from './warnings';

export interface Usage {
  pidsCurrent?: number;
  pidsMax?: Limit;
  memoryUsage?: number;
  memoryLimit?: Limit;
}

export interface HostUsage {
  tasks?: number;
  pidMax?: number;
  threadsMax?: number;
}

/** Limits are re-read every this many ticks (a minute at the default 5 s). */
const LIMITS_EVERY = 12;

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
  }

  /**
   * Read one container (also used to fill in an alert, with `fresh` limits). Limits change
   * rarely (we write pids.max ourselves; the runtime sets the memory limit), so ticks re-read
   * them only every LIMITS_EVERY ticks: two reads a container instead of four.
   */
  read(c: ContainerRecord, fresh = true): Usage | undefined {
    const { cgroups, reader } = this.o;
    const last = c.usage;
    if (fresh || !last || this.ticks % LIMITS_EVERY === 0) {
      const u = this.readCgroup(c.cgroupPath);
      if (!u) return undefined;
      c.usage = u;
      return u;
    }
    try {
      const pidsCurrent = cgroups.readPidsCurrentOnlySync(c.cgroupPath, reader);
      const memoryUsage = cgroups.readMemoryUsageOnlySync(c.cgroupPath, reader);
      if (pidsCurrent === null && memoryUsage === null) return undefined;
      const u: Usage = { ...last, pidsCurrent: pidsCurrent ?? undefined, memoryUsage: memoryUsage ?? undefined };
      c.usage = u;
      return u;
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
    this.ticks++;
    const y = new Yielder();
    for (const c of [...this.o.containers()]) {
      const u = this.read(c, false);
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
