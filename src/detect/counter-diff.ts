import type { MemoryCounts, MemoryEvents, PidsEvents } from '../cgroup/types';

// Counters are the truth for "how many": every wake-up (inotify, sweep, a read prompted by
// /dev/kmsg) re-reads the cgroup's event files and compares them with the last read. A
// notification can be spurious (the kernel notifies pids.events/memory.events on any field's
// change, and hierarchically on v2), so a wake-up with the same counters yields nothing.

/** The limit-hit kinds a counter can show. */
export type CounterKind = 'pids-max' | 'memory-max' | 'memory-high' | 'oom' | 'oom-kill' | 'oom-group-kill';

/** One counter that went up. */
export interface CounterIncrease {
  kind: CounterKind;
  /** How much it went up by since the previous read. */
  count: number;
  /** Its value now. */
  counter: number;
}

/** The counters of one cgroup at one read; either file may be missing (not watched, or unreadable). */
export interface CgroupCounters {
  pids?: PidsEvents;
  memory?: MemoryEvents;
}

export interface DiffResult {
  increases: CounterIncrease[];
  /**
   * Files whose counters went down since the previous read. A cgroup's counters only ever
   * grow while it exists, so a decrease means it was removed and made again under the same
   * path (a container restarted with the same cgroup name). The new values become the
   * baseline and nothing is emitted for that file: we cannot tell how many of the new
   * cgroup's counts happened before our first read of it.
   */
  rebaselined: Array<'pids' | 'memory'>;
}

const MEMORY_FIELDS: ReadonlyArray<[keyof MemoryCounts, CounterKind]> = [
  ['max', 'memory-max'],
  ['high', 'memory-high'],
  ['oom', 'oom'],
  ['oomKill', 'oom-kill'],
  ['oomGroupKill', 'oom-group-kill'],
];

function wentDown(pairs: Array<[number | undefined, number | undefined]>): boolean {
  return pairs.some(([p, c]) => p !== undefined && c !== undefined && c < p);
}

/**
 * Increases of pids.events between two reads of one cgroup. No previous read: a baseline,
 * nothing emitted. `localMax` (pids.events.local) is not a limit-hit count of its own and is
 * left to attribution.
 */
export function diffPidsEvents(prev: PidsEvents | undefined, cur: PidsEvents): DiffResult {
  if (prev === undefined) return { increases: [], rebaselined: [] };
  if (wentDown([[prev.max, cur.max], [prev.localMax, cur.localMax]])) return { increases: [], rebaselined: ['pids'] };
  const d = cur.max - prev.max;
  return { increases: d > 0 ? [{ kind: 'pids-max', count: d, counter: cur.max }] : [], rebaselined: [] };
}

/**
 * Increases of memory.events (v2) or the v1 equivalents between two reads of one cgroup.
 * A field absent in either read (v1 has no `high`; `oom_group_kill` appeared in 5.x) yields
 * nothing: its first appearance is its baseline.
 */
export function diffMemoryEvents(prev: MemoryEvents | undefined, cur: MemoryEvents): DiffResult {
  if (prev === undefined) return { increases: [], rebaselined: [] };
  const local = (e: MemoryEvents, f: keyof MemoryCounts) => e.local?.[f];
  if (wentDown(MEMORY_FIELDS.flatMap(([f]) => [[prev[f], cur[f]], [local(prev, f), local(cur, f)]]))) return { increases: [], rebaselined: ['memory'] };
  const increases: CounterIncrease[] = [];
  for (const [field, kind] of MEMORY_FIELDS) {
    const p = prev[field];
    const c = cur[field];
    if (p === undefined || c === undefined) continue;
    if (c > p) increases.push({ kind, count: c - p, counter: c });
  }
  return { increases, rebaselined: [] };
}

/**
 * Increases of memory.events.local between two reads, by kind: the events of this cgroup
 * itself. Empty without a previous local read (a baseline) or after a counter went down.
 */
export function memoryLocalDeltas(prev: MemoryEvents | undefined, cur: MemoryEvents): Partial<Record<CounterKind, number>> {
  const out: Partial<Record<CounterKind, number>> = {};
  if (!prev?.local || !cur.local) return out;
  for (const [field, kind] of MEMORY_FIELDS) {
    const p = prev.local[field];
    const c = cur.local[field];
    if (p !== undefined && c !== undefined && c > p) out[kind] = c - p;
  }
  return out;
}

/** Both files of one cgroup; a file missing from `cur` is skipped (its baseline is kept). */
export function diffCounters(prev: CgroupCounters | undefined, cur: CgroupCounters): DiffResult {
  const out: DiffResult = { increases: [], rebaselined: [] };
  for (const r of [
    cur.pids ? diffPidsEvents(prev?.pids, cur.pids) : undefined,
    cur.memory ? diffMemoryEvents(prev?.memory, cur.memory) : undefined,
  ]) {
    if (!r) continue;
    out.increases.push(...r.increases);
    out.rebaselined.push(...r.rebaselined);
  }
  return out;
}

/**
 * The last counters of every watched cgroup, so each source can hand in a fresh read and get
 * back only what changed. In-memory state, no I/O: the caller reads the files.
 */
export class CounterTracker {
  private readonly last = new Map<string, CgroupCounters>();

  /** Compare a read with the last one for this cgroup, then keep it as the new baseline. */
  update(cgroupPath: string, cur: CgroupCounters): DiffResult {
    const prev = this.last.get(cgroupPath);
    const r = diffCounters(prev, cur);
    this.last.set(cgroupPath, {
      pids: cur.pids ?? prev?.pids,
      memory: cur.memory ?? prev?.memory,
    });
    return r;
  }

  /** The cgroup is gone (read returned null, or discovery saw it removed). */
  forget(cgroupPath: string): void {
    this.last.delete(cgroupPath);
  }

  get(cgroupPath: string): CgroupCounters | undefined {
    return this.last.get(cgroupPath);
  }

  get size(): number {
    return this.last.size;
  }
}
