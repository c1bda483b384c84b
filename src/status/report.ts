import type { ContainerRecord } from '../discovery/container';
import type { Limit } from '../cgroup/types';
import type { SinkStats } from '../alerts/delivery';

/**
 * What `cgwatchdog status` gets from the running daemon, as JSON over its status socket (and
 * what `status --json` prints). One definition: the daemon fills it from the container records
 * and the parts' own counters (report.ts, gather), the CLI renders it (render.ts).
 */
export interface StatusReport {
  /** Format of this object; a CLI refuses a newer one in one sentence. */
  version: 1;
  /** ms since epoch, when the daemon made it. */
  at: number;
  daemon: {
    version: string;
    pid: number;
    /** ms since epoch. */
    startedAt: number;
    mode: 'enforce' | 'observe';
    cgroup: 'v1' | 'v2';
    host: string;
  };
  health: {
    ok: boolean;
    detail: string;
    degraded: string[];
    /** Each enabled detection source: up or not. */
    sources: Partial<Record<'kmsg' | 'inotify' | 'sweep', boolean>>;
    watches: { cgroupDirs: number; inotifyFiles: number; openFiles: number };
  };
  host: { pidMax?: number; tasks?: number; threadsMax?: number; sumContainersPidsMax: number };
  alerts: {
    outboxDepth: number;
    outboxWriteError?: string;
    firing: number;
    sinks: SinkStatus[];
  };
  /** Live containers, the closest to a limit first (departed ones with counts after them). */
  containers: ContainerStatus[];
}

export interface SinkStatus extends SinkStats {
  name: string;
  type: string;
}

export interface ContainerStatus {
  id: string;
  /** The container's name, else undefined (the renderer falls back to the short id). */
  name?: string;
  pod?: string;
  namespace?: string;
  runtime: string;
  cgroupPath: string;
  pidsCurrent?: number;
  pidsMax?: Limit;
  memoryUsage?: number;
  memoryLimit?: Limit;
  /** The higher of pids.current/pids.max and memory/limit; null when neither is limited (or read). */
  ratio: number | null;
  pidsLimitHits: number;
  oomKills: number;
  oomEvents: number;
  lastEvent?: { kind: string; at: number };
  departed?: boolean;
}

const ratioOf = (cur: number | undefined, max: Limit | undefined): number | null => (typeof cur === 'number' && typeof max === 'number' && max > 0 ? cur / max : null);

/** One container's line of the report, from its record (and its last usage read). */
export function containerStatus(c: ContainerRecord): ContainerStatus {
  const u = c.usage;
  const r = c.applied;
  const pidsMax = u?.pidsMax ?? (r?.written ? r.newPidsMax : r?.oldPidsMax);
  const ratios = [ratioOf(u?.pidsCurrent, pidsMax), ratioOf(u?.memoryUsage, u?.memoryLimit)].filter((x): x is number => x !== null);
  return {
    id: c.id,
    name: c.name,
    pod: c.podName,
    namespace: c.podNamespace ?? c.namespace,
    runtime: c.runtime,
    cgroupPath: c.cgroupPath,
    pidsCurrent: u?.pidsCurrent,
    pidsMax,
    memoryUsage: u?.memoryUsage,
    memoryLimit: u?.memoryLimit,
    ratio: ratios.length > 0 ? Math.max(...ratios) : null,
    pidsLimitHits: c.hits.pidsLimitHits,
    oomKills: c.hits.oomKills,
    oomEvents: c.hits.oomEvents,
    lastEvent: c.lastEvent,
    ...(c.removedAt !== undefined ? { departed: true } : {}),
  };
}

/**
 * The order an operator wants: live before departed, then the closest to a limit (the higher
 * of the two ratios), then the most hits, then by name: a fork-bombed container at 20/20 comes
 * before an idle one at 1/6144.
 */
export function byUrgency(a: ContainerStatus, b: ContainerStatus): number {
  if (!!a.departed !== !!b.departed) return a.departed ? 1 : -1;
  const ra = a.ratio ?? -1;
  const rb = b.ratio ?? -1;
  if (ra !== rb) return rb - ra;
  const ha = a.pidsLimitHits + a.oomKills;
  const hb = b.pidsLimitHits + b.oomKills;
  if (ha !== hb) return hb - ha;
  return (a.name ?? a.id).localeCompare(b.name ?? b.id);
}
