import { EventEmitter } from 'node:events';
import type { CgroupFs, Limit, SyncFileReader } from '../cgroup/types';
import type { Container } from '../discovery/container';
import { countHostTasks } from '../kernel/proc';
import { readPidMax, readThreadsMax } from '../kernel/sysctl';
import type { Logger } from '../log';
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

/** The subject of host-level warnings. */
export const HOST_SUBJECT = '/';

export interface UsageMonitorOptions {
  cgroups: CgroupFs;
  reader: SyncFileReader;
  procRoot: string;
  intervalMs: number;
  thresholds: WarningThresholds;
  containers: () => Iterable<Container>;
  log: Logger;
}

/**
 * Usage against limits, every `intervalMs`: pids.current vs pids.max, memory vs its limit,
 * the host's tasks vs kernel.pid_max. Keeps the last values (metrics and alerts read them,
 * with no I/O of their own) and emits 'transition' (WarningTransition, Container | undefined)
 * when an early warning is raised or cleared.
 */
export class UsageMonitor extends EventEmitter {
  readonly usage = new Map<string, Usage>();
  host: HostUsage = {};
  private readonly warnings: WarningTracker;
  private timer?: NodeJS.Timeout;

  constructor(private readonly o: UsageMonitorOptions) {
    super();
    this.warnings = new WarningTracker(o.thresholds);
  }

  start(): void {
    this.tick();
    this.timer = setInterval(() => this.tick(), this.o.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** The container is gone: its warnings end with it (the alert pipeline resolves them). */
  forget(c: Container): void {
    this.usage.delete(c.cgroupPath);
    this.warnings.forget(c.cgroupPath);
  }

  /** Read one container now (also used to fill in an alert). */
  read(c: Container): Usage | undefined {
    const { cgroups, reader } = this.o;
    try {
      const pids = cgroups.readPidsCurrentSync(c.cgroupPath, reader);
      const mem = cgroups.readMemoryUsageSync(c.cgroupPath, reader);
      if (!pids && !mem) return undefined;
      const u: Usage = { pidsCurrent: pids?.current, pidsMax: pids?.max, memoryUsage: mem?.usageBytes, memoryLimit: mem?.limitBytes };
      this.usage.set(c.cgroupPath, u);
      return u;
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message, cgroup: c.cgroupPath }, 'reading usage failed');
      return undefined;
    }
  }

  tick(): void {
    for (const c of this.o.containers()) {
      const u = this.read(c);
      if (!u) continue;
      if (u.pidsCurrent !== undefined) this.transition(this.warnings.update({ kind: 'pids-warning', subject: c.cgroupPath, value: u.pidsCurrent, limit: u.pidsMax }), c);
      if (u.memoryUsage !== undefined) this.transition(this.warnings.update({ kind: 'memory-warning', subject: c.cgroupPath, value: u.memoryUsage, limit: u.memoryLimit }), c);
    }
    try {
      this.host = { tasks: countHostTasks(this.o.procRoot), pidMax: readPidMax(this.o.procRoot), threadsMax: readThreadsMax(this.o.procRoot) };
      this.transition(this.warnings.update({ kind: 'host-pids-warning', subject: HOST_SUBJECT, value: this.host.tasks!, limit: this.host.pidMax }), undefined);
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'reading the host task count failed');
    }
  }

  private transition(t: WarningTransition | undefined, c: Container | undefined): void {
    if (t) this.emit('transition', t, c);
  }
}
