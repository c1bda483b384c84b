// The one interface over cgroup v1 and v2. Everything above src/cgroup/ speaks in cgroup
// paths relative to the hierarchy root ("/libpod_parent/libpod-<id>") and never builds a
// controller file path itself.

export type CgroupVersion = 'v1' | 'v2';
export type LayoutMode = 'v1' | 'v2' | 'hybrid';

/** What /proc/self/mountinfo says about the cgroup mounts. */
export interface CgroupLayout {
  mode: LayoutMode;
  /** The version whose pids/memory controllers we use (hybrid hosts: v1). */
  version: CgroupVersion;
  /** v1: controller name -> mount point (a mount "cpu,cpuacct" is listed under both). */
  v1Mounts: Record<string, string>;
  /** v2: mount point of the cgroup2 hierarchy, if any. */
  v2Mount?: string;
  /** Controllers enabled at the v2 root (cgroup.controllers), empty if none. */
  v2Controllers: string[];
}

/** A limit that may be "max" (no limit). */
export type Limit = number | 'max';

export interface CpuQuota {
  /** Quota in microseconds per period, or "max" when unlimited. */
  quotaUs: Limit;
  /** 0 when quotaUs is "max" and the period was not read (v1). */
  periodUs: number;
}

/** pids.events: "max" is fork rejections. `hierarchical` is true on kernels >= 6.11 v2. */
export interface PidsEvents {
  max: number;
  /** From pids.events.local (v2, >= 6.11): rejections of forks made in this very cgroup. */
  localMax?: number;
}

/** memory.events (v2) or the v1 equivalents, counters since the cgroup was made. */
export interface MemoryCounts {
  low?: number;
  high?: number;
  /** v2: memory.events max; v1: memory.failcnt. */
  max: number;
  oom?: number;
  oomKill: number;
  oomGroupKill?: number;
}

export interface MemoryEvents extends MemoryCounts {
  /**
   * memory.events.local (v2, Linux 5.2+): this cgroup's own events. max/high/oom count where
   * the limit was hit, oom_kill where the victim was (mm/memcontrol.c memcg_memory_event).
   */
  local?: MemoryCounts;
}

export interface MemoryUsage {
  usageBytes: number;
  limitBytes: Limit;
}

/** One read of a cgroup's limit-hit counters; a part is absent when its controller is not there. */
export interface CounterSnapshot {
  pids?: PidsEvents;
  memory?: MemoryEvents;
}

/** What the synchronous reads need: CounterReader (cached fds) satisfies it. */
export interface QuickReadHint {
  prev?: CounterSnapshot;
  memoryUnlimited?: boolean;
  /** Only this file is known to have changed (an inotify wake names it): the other comes from `prev`. */
  only?: 'pids' | 'memory';
}

/** A quick read's answer for a file that holds the same bytes as last time. */
export const UNCHANGED: unique symbol = Symbol('unchanged');

export interface SyncFileReader {
  /** Content, or null when the file (its cgroup) is gone. */
  read(path: string): string | null;
  readIfChanged?(path: string): string | null | typeof UNCHANGED;
  /** Keep this file's fd open (a reader that keeps only some open). */
  pin?(path: string): void;
  unpin?(path: string): void;
}

/**
 * Reads and writes of one container's cgroup files. Every read returns `null` when the
 * cgroup is gone (ENOENT/ENODEV/ESRCH): that is normal life for containers, not an error.
 * Other errors (EACCES, EROFS, a file that does not parse) throw a CgroupError that names
 * the path and what was expected.
 */
export interface CgroupFs {
  readonly version: CgroupVersion;
  readonly layout: CgroupLayout;
  /** Absolute directory discovery walks and watches for new containers (v1: the pids hierarchy). */
  readonly discoveryRoot: string;
  /** Absolute path of a cgroup's directory in the hierarchy of `controller`. */
  dir(controller: 'pids' | 'memory' | 'cpu' | 'cpuset', rel: string): string;
  /**
   * From now on, read the policy inputs (pids.max, CPU quota, cpuset) through `reader`'s
   * kept-open fds: a reconcile of a thousand containers is then ~4,000 preads, not opens.
   */
  attachReader(reader: SyncFileReader): void;
  /** Absolute path of the cgroup's pids.max: watched while a new container settles, because runtimes write their own. */
  pidsMaxFile(rel: string): string;
  /** The files the policy reads besides pids.max (CPU quota, cpuset): a write to one changes the value. */
  policyInputFiles(rel: string): string[];
  /** Absolute paths of the files whose changes mean "a limit was hit" (inotify targets). */
  eventFiles(rel: string): { pids?: string; memory?: string };

  readPidsMax(rel: string): Promise<Limit | null>;
  writePidsMax(rel: string, value: number): Promise<'ok' | 'gone'>;
  readPidsCurrent(rel: string): Promise<number | null>;
  readPidsEvents(rel: string): Promise<PidsEvents | null>;
  /** `cached` false: not through the kept-open fds (an ancestor's file: nobody forgets it when it goes). */
  readCpuQuota(rel: string, cached?: boolean): Promise<CpuQuota | null>;
  /** The effective cpuset list ("0-3,8"), or null if none is set or readable. */
  readCpuset(rel: string): Promise<string | null>;
  readMemoryEvents(rel: string): Promise<MemoryEvents | null>;
  readMemoryUsage(rel: string): Promise<MemoryUsage | null>;
  /** Thread ids in the cgroup (cgroup.threads on v2, tasks on v1). */
  readTasks(rel: string): Promise<number[] | null>;

  /** Absolute paths of every file read through a SyncFileReader (to close their fds when the cgroup goes). */
  counterFiles(rel: string): string[];
  /**
   * The sweep's read: pids.events and the memory counters through `reader` (a CounterReader
   * keeps their fds open). Null when the cgroup is gone.
   */
  /**
   * A quick read may skip files that cannot have changed: `prev` is the last snapshot of this
   * cgroup; `memoryUnlimited` says its own memory limit is "max" (then its own limit cannot be
   * hit). Omit the hint for a full read.
   */
  readCountersSync(rel: string, reader: SyncFileReader, hint?: QuickReadHint): CounterSnapshot | null;
  /** pids.current and pids.max through `reader`; null when the cgroup is gone. */
  readPidsCurrentSync(rel: string, reader: SyncFileReader): { current: number; max: Limit } | null;
  /**
   * v2 with pids.events.local (6.11+): the cgroups below `rel` (down to `maxDepth` levels, at
   * most `limit`, those `skip` does not exclude) whose own limit was hit: local "max" above 0.
   * Absent where the kernel cannot tell (v1, older v2).
   */
  subCgroupsWithOwnPidsHits?(rel: string, maxDepth: number, limit: number, skip: (rel: string) => boolean): string[];
  /** pids.current alone (the limit changes rarely; the usage monitor reads it less often). */
  readPidsCurrentOnlySync(rel: string, reader: SyncFileReader): number | null;
  /** Memory usage alone. */
  readMemoryUsageOnlySync(rel: string, reader: SyncFileReader): number | null;
  /** Memory usage and limit through kept-open fds, for the periodic usage check. */
  readMemoryUsageSync(rel: string, reader: SyncFileReader): MemoryUsage | null;
}

export class CgroupError extends Error {
  constructor(
    message: string,
    readonly path: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'CgroupError';
  }
}
