import type { Limit } from '../cgroup/types';
import type { CounterKind } from './counter-diff';

// Which cgroup's limit was hit. We may watch a pod's cgroup and the containers below it; the
// kernel reports one limit hit in more than one of them, differently by version:
//
// pids.events "max", cgroup v2:
//   - before Linux 6.11 it counts in the cgroup whose task tried to fork, wherever the limit
//     was (a pod-level limit shows in the container, and only there);
//   - from 6.11 (commit "cgroup/pids: Make event counters hierarchical") it counts in the
//     cgroup whose limit was hit and in every ancestor, and pids.events.local appears (its
//     "max" keeps the old per-forking-cgroup count). The `pids_localevents` mount option
//     restores the old meaning of pids.events although pids.events.local exists, so the
//     caller decides `hierarchical` from both the file and the mount options.
//   - cgroup v1 keeps the old (non-hierarchical) meaning on every kernel.
// memory.events is hierarchical on v2 (memory.events.local is not); the `memory_localevents`
// mount option makes it local. containerd counts OOM kills by oom_kill, not oom, because oom
// can land in the pod's cgroup when the pod's and the container's limits are equal.
//
// Parent/child relations come from the paths alone ("/kubepods/pod1" is the parent of
// "/kubepods/pod1/c1"); only watched cgroups count, so a cgroup's "children" are the watched
// cgroups whose nearest watched ancestor it is.

/** pids.events of one watched cgroup at one moment. */
export interface PidsObservation {
  /** Cgroup path relative to the hierarchy root. */
  path: string;
  /** Increase of pids.events "max" since the previous read (0: none). */
  delta: number;
  /** pids.current now, if read. */
  current?: number;
  /** pids.max now, if read. */
  max?: Limit;
  /** pids.events counts hierarchically (v2, >= 6.11, without pids_localevents). */
  hierarchical: boolean;
  /**
   * Increase of pids.events.local "max", where the kernel has it (6.11+): the hits of this
   * cgroup's own limit, exactly (measured in UML 6.12 and 7.2: a limit on a/ hit by a fork in
   * a/b counts in a's local file and not in b's). Attribution then needs no subtraction.
   */
  localDelta?: number;
}

/** Limit hits given to the cgroup whose limit was hit. */
export interface Attribution {
  path: string;
  count: number;
  /** The watched cgroups whose counters showed these hits. */
  seenIn: string[];
}

function norm(p: string): string {
  if (p === '' || p === '/') return '/';
  const s = p.replace(/\/+$/, '');
  return s.startsWith('/') ? s : `/${s}`;
}

function parentOf(p: string): string | undefined {
  if (p === '/') return undefined;
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

/** The nearest watched ancestor of every watched path (undefined: none). */
export function nearestWatchedAncestors(paths: Iterable<string>): Map<string, string | undefined> {
  const set = new Set<string>();
  for (const p of paths) set.add(norm(p));
  const out = new Map<string, string | undefined>();
  for (const p of set) {
    let a = parentOf(p);
    while (a !== undefined && !set.has(a)) a = parentOf(a);
    out.set(p, a);
  }
  return out;
}

/** Watched ancestors of `path`, nearest first. */
function watchedChain(path: string, parents: Map<string, string | undefined>): string[] {
  const chain: string[] = [];
  for (let a = parents.get(path); a !== undefined; a = parents.get(a)) chain.push(a);
  return chain;
}

/**
 * own(c) = delta(c) − Σ delta(watched children of c), never negative: each child's delta
 * already holds everything hit at or below it. Reads of parent and child are not atomic, so
 * a child may show a hit its parent's read missed; clamping at 0 drops that skew rather than
 * inventing hits.
 */
export function subtractChildren(deltas: ReadonlyMap<string, number>): Map<string, number> {
  const parents = nearestWatchedAncestors(deltas.keys());
  const childSum = new Map<string, number>();
  const own = new Map<string, number>();
  for (const [p, d] of deltas) {
    const parent = parents.get(norm(p));
    if (parent !== undefined) childSum.set(parent, (childSum.get(parent) ?? 0) + d);
  }
  for (const [p, d] of deltas) own.set(norm(p), Math.max(0, d - (childSum.get(norm(p)) ?? 0)));
  return own;
}

function headroom(o: PidsObservation | undefined): number | undefined {
  if (!o || o.current === undefined || o.max === undefined || o.max === 'max') return undefined;
  return o.max - o.current;
}

/**
 * Pre-6.11 (and v1): the delta sits in the forking cgroup; the limit that was hit is its own
 * or an ancestor's. Pick the nearest of itself and its watched ancestors that is at its limit
 * (pids.current >= pids.max); failing that (a task exited between the fork and our read) the
 * one with the least headroom, nearest on ties; with nothing known, itself.
 */
function limitHolder(path: string, byPath: Map<string, PidsObservation>, parents: Map<string, string | undefined>): string {
  const candidates = [path, ...watchedChain(path, parents)];
  let best: string | undefined;
  let bestRoom = Infinity;
  for (const c of candidates) {
    const room = headroom(byPath.get(c));
    if (room === undefined) continue;
    if (room <= 0) return c;
    if (room < bestRoom) {
      best = c;
      bestRoom = room;
    }
  }
  return best ?? path;
}

/** Attribute the pids.events deltas seen at one moment to the cgroups whose limits were hit. */
export function attributePidsHits(observations: readonly PidsObservation[]): Attribution[] {
  const byPath = new Map<string, PidsObservation>();
  for (const o of observations) byPath.set(norm(o.path), { ...o, path: norm(o.path) });
  const parents = nearestWatchedAncestors(byPath.keys());
  const result = new Map<string, Attribution>();
  const add = (path: string, count: number, seenIn: string) => {
    if (count <= 0) return;
    const a = result.get(path) ?? { path, count: 0, seenIn: [] };
    a.count += count;
    if (!a.seenIn.includes(seenIn)) a.seenIn.push(seenIn);
    result.set(path, a);
  };

  const hier = new Map<string, number>();
  for (const o of byPath.values()) if (o.hierarchical) hier.set(o.path, o.delta);
  for (const o of byPath.values()) {
    if (o.localDelta === undefined || o.localDelta <= 0) continue;
    // A hit of its own limit shows in its own local counter and in its ancestors' hierarchical ones.
    result.set(o.path, { path: o.path, count: o.localDelta, seenIn: [o.path, ...watchedChain(o.path, parents).filter((a) => (hier.get(a) ?? 0) > 0)] });
  }
  for (const o of byPath.values()) if (o.localDelta !== undefined) hier.delete(o.path);
  if (hier.size > 0) {
    // A hit of c's limit shows in c and in each of its ancestors: those are where it was seen.
    for (const [p, n] of subtractChildren(hier)) {
      if (n <= 0) continue;
      const seenIn = [p, ...watchedChain(p, parents).filter((a) => (hier.get(a) ?? 0) > 0)];
      result.set(p, { path: p, count: n, seenIn });
    }
  }
  for (const o of byPath.values()) {
    if (o.hierarchical || o.delta <= 0) continue;
    add(limitHolder(o.path, byPath, parents), o.delta, o.path);
  }
  return [...result.values()].filter((a) => a.count > 0).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** The memory.events kinds, with their increases, of one watched cgroup at one moment. */
export interface MemoryObservation {
  path: string;
  deltas: Partial<Record<Exclude<CounterKind, 'pids-max'>, number>>;
  /** memory.events counts hierarchically (v2 without memory_localevents). v1: false. */
  hierarchical: boolean;
  /** Increases of memory.events.local (v2, 5.2+): this cgroup's own events, exactly. */
  localDeltas?: Partial<Record<Exclude<CounterKind, 'pids-max'>, number>>;
  /**
   * With local counters: whether what the hierarchical counter holds beyond its own events and
   * its watched children's is this cgroup's (a container's unwatched sub-cgroups) or nobody's
   * here (a pod: its containers' events, reported by them, also when they are gone).
   */
  ownsBelow?: boolean;
}

/** What a cgroup's remainder (hierarchical − own − watched children) owes the next read, per kind. */
export type MemoryCarry = Map<string, Partial<Record<Exclude<CounterKind, 'pids-max'>, number>>>;

export interface MemoryAttribution {
  path: string;
  kind: Exclude<CounterKind, 'pids-max'>;
  count: number;
}

/**
 * memory.events, kind by kind. Where memory.events.local was read, a cgroup's own events are
 * its local increase, exactly; what its hierarchical increase holds beyond that and beyond
 * its watched children's is in sub-cgroups nobody watches, and is its too (a container's
 * init.scope). Families are read parents first, so a race makes that remainder smaller,
 * never invents one. Without local counters: own = delta − Σ watched children. Non-
 * hierarchical (v1, memory_localevents) counters are taken as they are. OOM kills are
 * counted by `oom-kill` (as containerd does), not by `oom`.
 *
 * The kernel bumps memory.events.local before it walks up memory.events (memcg_memory_event,
 * every kernel since 5.2), and memory.events is read first: one read can show an event in
 * the local file only, and the next read its hierarchical half. So a kind counts when either
 * file moved (a pod's own `oom` was lost this way, UML 6.12), and what one read leaves
 * negative in the remainder (local or a child ahead of the hierarchical counter) is owed
 * against the next read's, in `carry` (per path and kind, kept by the caller), instead of
 * turning into a hit there that nobody had.
 */
export function attributeMemoryEvents(observations: readonly MemoryObservation[], carry?: MemoryCarry): MemoryAttribution[] {
  const kinds = new Set<Exclude<CounterKind, 'pids-max'>>();
  for (const o of observations) for (const k of [...Object.keys(o.deltas), ...Object.keys(o.localDeltas ?? {})]) kinds.add(k as Exclude<CounterKind, 'pids-max'>);
  const parents = nearestWatchedAncestors(observations.map((o) => o.path));
  const out: MemoryAttribution[] = [];
  for (const kind of kinds) {
    const hier = new Map<string, number>();
    const childSum = new Map<string, number>();
    for (const o of observations) {
      if (!o.hierarchical) continue;
      const p = norm(o.path);
      const d = o.deltas[kind] ?? 0;
      hier.set(p, d);
      const parent = parents.get(p);
      if (parent !== undefined) childSum.set(parent, (childSum.get(parent) ?? 0) + d);
    }
    const counted = new Set<string>();
    for (const o of observations) {
      if (!o.hierarchical || !o.localDeltas) continue;
      const p = norm(o.path);
      const own = o.localDeltas[kind] ?? 0;
      let below = 0;
      if (o.ownsBelow !== false) {
        const others = own + (childSum.get(p) ?? 0);
        const owed = carry?.get(p)?.[kind] ?? 0;
        const acc = owed + (hier.get(p) ?? 0) - others;
        below = Math.max(0, acc);
        // Never owe more than this read gave elsewhere: a debt that cannot be a race's is dropped.
        const next = acc < 0 ? Math.max(acc, -others) : 0;
        if (carry && (next !== 0 || owed !== 0)) carry.set(p, { ...carry.get(p), [kind]: next });
      }
      if (own + below > 0) out.push({ path: p, kind, count: own + below });
      counted.add(p);
    }
    for (const [path, count] of subtractChildren(hier)) if (count > 0 && !counted.has(path)) out.push({ path, kind, count });
    for (const o of observations) {
      const d = o.deltas[kind] ?? 0;
      if (!o.hierarchical && d > 0) out.push({ path: norm(o.path), kind, count: d });
    }
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : 0));
}

/**
 * 6.11+ (local counters): hits of limits below a watched cgroup that no watched cgroup
 * accounts for, i.e. in a sub-cgroup nobody watches yet: its hierarchical increase, less its
 * own (local) hits, less what its nearest watched children saw. Families are read parents
 * first, so a child's counter can only be ahead of its parent's, never behind: a race makes
 * this smaller, never invents a hit.
 */
export function hitsBelow(observations: readonly PidsObservation[]): { path: string; count: number }[] {
  const byPath = new Map<string, PidsObservation>();
  for (const o of observations) byPath.set(norm(o.path), { ...o, path: norm(o.path) });
  const parents = nearestWatchedAncestors(byPath.keys());
  const childSum = new Map<string, number>();
  for (const o of byPath.values()) {
    const parent = parents.get(o.path);
    if (parent !== undefined && o.hierarchical) childSum.set(parent, (childSum.get(parent) ?? 0) + o.delta);
  }
  const out: { path: string; count: number }[] = [];
  for (const o of byPath.values()) {
    if (o.localDelta === undefined) continue;
    const n = o.delta - o.localDelta - (childSum.get(o.path) ?? 0);
    if (n > 0) out.push({ path: o.path, count: n });
  }
  return out;
}
