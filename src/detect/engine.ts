import { EventEmitter } from 'node:events';
import { CounterReader } from '../cgroup/counter-reader';
import type { CgroupFs } from '../cgroup/types';
import type { Container } from '../discovery/container';
import { NO_COVERAGE, type InotifyKinds, type SweepCoverage } from '../kernel/capabilities';
import { watchHealth } from '../kernel/inotify';
import type { Logger } from '../log';
import { attributeMemoryEvents, attributePidsHits, hitsBelow, type MemoryCarry, type MemoryObservation, type PidsObservation } from './attribution';
import { CounterTracker, memoryLocalDeltas, type CgroupCounters } from './counter-diff';
import type { EventSource, OomVictim } from './event';
import { InotifySource } from './inotify-source';
import { KmsgSource } from './kmsg-source';
import { EventMerger } from './merge';
import { SafetyNet } from './safety-net';
import { SweepSource } from './sweep-source';
import { Yielder } from '../yielder';

/** The counter files a sweep reads (the others in counterFiles are usage, limits and policy inputs). */
const EVENT_FILE = /\/(pids\.events|pids\.events\.local|memory\.events|memory\.events\.local|memory\.failcnt|memory\.oom_control)$/;

export interface EngineOptions {
  cgroups: CgroupFs;
  log: Logger;
  /** Which event files inotify watches (inotifyFor: from the capability probe). */
  inotify: InotifyKinds;
  kmsg: boolean;
  kmsgPath: string;
  sweepIntervalMs: number;
  /**
   * What the kernel reports without being read (sweepCoverage, from the capability probe):
   * only the rest is swept every interval. Default: nothing covered, everything swept fast.
   */
  coverage?: SweepCoverage;
  /** How often the safety net reaches every cgroup (default NET_PERIOD_MS, 60 s). */
  netPeriodMs?: number;
  /** The container a cgroup belongs to, also one removed a moment ago (Inventory.owner). */
  ownerOf?: (path: string) => Container | undefined;
  /** Whether a cgroup's own memory limit is "max", as last read (lets quick sweeps skip its memory files). */
  memoryUnlimited?: (path: string) => boolean;
  /** How long an oom-kill line waits for its "Killed process" line (RSS) before going on without it. */
  victimWaitMs?: number;
}

export interface EngineStats {
  kmsgRecords: { parsed: number; unparsed: number; wrapped: number };
  /** Times the kmsg reader was restarted (its `cat` child died, or the reader stopped on an error). */
  kmsgRestarts: number;
  sweeps: number;
  lastSweepMs: number;
  /** Cgroups read every sweep (what no source reports) and the safety net's ring. */
  fastSwept: number;
  netSwept: number;
}

/**
 * A cgroup we read counters of: a container's, a Kubernetes pod's (pod-level limits), or a
 * sub-cgroup of a container that hit a limit of its own (adopted when kmsg names it).
 */
interface Watched {
  path: string;
  /** The container it is, or (a sub-cgroup) belongs to. */
  container?: Container;
  /** Containers below a pod cgroup keep it watched. */
  refs: number;
  /** A sub-cgroup: the container cgroup it lies in. */
  owner?: string;
  /** A container: its adopted sub-cgroups. */
  subs?: Set<string>;
}

/**
 * Detection: the counter watcher, and three sources as its peers (inotify on v2 event files,
 * /dev/kmsg, the counter sweep), one stream of LimitEvents. Every source only prompts a read
 * of the counters (check()); counters say how many, so a hit seen by several sources is
 * counted once. Emits 'event' (LimitEvent) and 'sweep' (seconds).
 */
export class DetectionEngine extends EventEmitter {
  readonly tracker = new CounterTracker();
  /** Cgroups added before start(), whose baseline and watches wait for it. */
  private readonly pending = new Set<string>();
  /** Per cgroup, what its memory remainder owes the next read (see attributeMemoryEvents). */
  private readonly memoryCarry: MemoryCarry = new Map();
  /** Shared with the usage monitor: one set of kept-open fds per cgroup. */
  readonly reader = new CounterReader({ pinnedOnly: true });
  private readonly watched = new Map<string, Watched>();
  private readonly merger: EventMerger;
  private readonly kmsg: KmsgSource;
  private readonly inotify: InotifySource;
  private readonly sweeper: SweepSource;
  /**
   * Watched cgroups whose hits nothing reports, read every sweep. v1 on a kernel that does not
   * notify pids.events (6.18, 7.2): kmsg prints "fork rejected" for a cgroup's first
   * rejection only, so a cgroup joins at its first hit (or at a read showing one already
   * counted) and stays for its life.
   */
  private readonly fast = new Set<string>();
  /** Every watched cgroup, read once a period, spread: the safety net. */
  private readonly net: SafetyNet;
  private lastWrapped = 0;
  running = false;

  constructor(private readonly o: EngineOptions) {
    super();
    // A global OOM kills a container's process and counts in its memory.events oom_kill, but
    // no container limit was hit: it is the node's (HOST_SUBJECT), naming the container.
    // A counter's oom_kill increase waits for kmsg's victim longer than the victim waits for its
    // "Killed process" line (victimWaitMs): with a 50 ms window, one CI run on UML 7.2 sent an
    // OOM alert without its victim, the victim arriving after the window had closed.
    // Under load (measured: UML 7.2 while other UML kernels and benchmarks ran) kmsg's victim
    // came more than 150 ms after the counter; the window is only an upper bound (the counter
    // goes out the moment its victim arrives), so it can be long.
    const mergeWindowMs = Math.max(1000, (o.victimWaitMs ?? 100) + 50);
    this.merger = new EventMerger((e) => this.emit('event', e.kind === 'oom-kill' && e.victim?.global ? { ...e, cgroupPath: '/' } : e), { mergeWindowMs });
    this.kmsg = new KmsgSource(o.kmsgPath, { hit: (cg, kind, at, task) => this.onHit(kind === 'oom-kill' ? this.oomSubject(cg, task) : cg, kind, at), oomVictim: (cg, v, at) => this.onVictim(cg, v, at) }, o.log, o.victimWaitMs);
    this.inotify = new InotifySource(o.cgroups, o.inotify, (path, only) => this.check(path, 'inotify', Date.now(), false, only));
    this.net = new SafetyNet(o.netPeriodMs);
    this.sweeper = new SweepSource(o.sweepIntervalMs, (full) => this.sweepAll(full), (seconds) => this.emit('sweep', seconds));
  }

  get stats(): EngineStats {
    return { kmsgRecords: this.kmsg.stats.records, kmsgRestarts: this.kmsg.stats.restarts, sweeps: this.sweeper.sweeps, lastSweepMs: this.sweeper.lastMs, fastSwept: this.allFast() ? this.watched.size : this.fast.size, netSwept: this.net.size };
  }

  get watchCount(): { inotify: number; cgroups: number; openFiles: number } {
    return { inotify: this.inotify.watchCount, cgroups: this.watched.size, openFiles: this.reader.openCount };
  }

  start(): void {
    // The baselines put off while the initial reconcile wrote every limit (see watch()).
    for (const path of this.pending) this.arm(path);
    this.pending.clear();
    this.running = true;
    if (this.o.kmsg) this.kmsg.start(this.o.kmsgPath);
    this.sweeper.start();
  }

  /**
   * A reload: the sweep interval, kmsg on/off or its path, inotify on/off, in place. Counters,
   * baselines and held events stay, so nothing that happens meanwhile is lost or repeated.
   */
  reconfigure(o: Pick<EngineOptions, 'sweepIntervalMs' | 'kmsg' | 'kmsgPath' | 'inotify' | 'coverage'>): void {
    if (o.coverage) this.o.coverage = o.coverage;
    this.o.sweepIntervalMs = o.sweepIntervalMs;
    this.sweeper.setInterval(o.sweepIntervalMs);
    if (o.kmsg !== this.o.kmsg || o.kmsgPath !== this.o.kmsgPath) {
      this.kmsg.stop();
      this.o.kmsg = o.kmsg;
      this.o.kmsgPath = o.kmsgPath;
      if (o.kmsg && this.running) this.kmsg.start(o.kmsgPath);
    }
    this.o.inotify = o.inotify;
    this.inotify.setKinds(o.inotify);
  }

  /** Resolves once the kmsg reader has caught up with "now" (or at the timeout): detection is then really running. */
  kmsgReady(timeoutMs: number): Promise<boolean> {
    return this.kmsg.ready(timeoutMs);
  }

  stop(): void {
    this.running = false;
    this.sweeper.stop();
    this.kmsg.stop();
    this.merger.flush();
    this.inotify.stop();
    for (const p of this.watched.keys()) this.net.delete(p);
    this.watched.clear();
    this.pending.clear();
    this.memoryCarry.clear();
    this.fast.clear();
    this.reader.close();
  }

  /** Is each source doing its job? For /healthz: not ok when one is down, degraded when it limps. */
  health(): { ok: boolean; detail: string; degraded?: string[] } {
    if (!this.running) return { ok: false, detail: 'detection not started' };
    if (this.o.kmsg && !this.kmsg.up) return { ok: false, detail: `kmsg reader on ${this.o.kmsgPath} is down: not reading the kernel log (retried with backoff)` };
    if (this.sweeper.stalled()) return { ok: false, detail: `counter sweep has not run for ${this.sweeper.msSinceLast} ms` };
    const degraded = [watchHealth.degraded()].filter((d): d is string => d !== undefined);
    return { ok: true, detail: `watching ${this.watched.size} cgroups`, ...(degraded.length ? { degraded } : {}) };
  }

  // ---- watched cgroups ----------------------------------------------------------------

  add(c: Container): void {
    if (c.podPath) this.watch(c.podPath, undefined);
    this.watch(c.cgroupPath, c);
  }

  remove(c: Container): void {
    // Its last counters, while they can still be read: a hit of its last moments is not lost.
    if (this.running && this.watched.has(c.cgroupPath)) this.check(c.cgroupPath, 'sweep');
    for (const s of this.watched.get(c.cgroupPath)?.subs ?? []) this.unwatch(s);
    this.unwatch(c.cgroupPath);
    if (c.podPath) this.unwatch(c.podPath);
  }

  /**
   * kmsg named a cgroup below a container as the one whose limit was hit: its own counters
   * never show in the container's on v1 (and memory.oom_control is per cgroup there), so read
   * them from now on, with the container's family. The first hit is counted from kmsg and the
   * baseline (v1 prints "fork rejected" only for a cgroup's first rejection, so its counter
   * holds every hit so far); the container's counters are re-read silently, since on v2 they
   * are hierarchical and already hold this hit.
   */
  private adoptSub(sub: string, ownerPath: string, kind: 'pids-max' | 'oom-kill', kernelAt: number, source: EventSource = 'kmsg'): void {
    const owner = this.watched.get(ownerPath)!;
    const c = owner.container!;
    this.watch(sub, c, ownerPath);
    (owner.subs ??= new Set()).add(sub);
    this.readFamily([ownerPath]);
    const t = this.tracker.get(sub);
    // 6.11+: the sub-cgroup's own hits are its local counter (its hierarchical one also holds its children's).
    const counter = kind === 'pids-max' ? (t?.pids?.localMax ?? t?.pids?.max) : t?.memory?.oomKill;
    const count = kind === 'pids-max' ? Math.max(1, counter ?? 0) : 1;
    this.merger.counter({ cgroupPath: sub, containerId: c.id, kind, count, counter, source, kernelAt });
  }

  /**
   * 6.11+: `count` hits of a limit somewhere below `path` that no watched cgroup holds (a
   * container's own systemd set a limit on a sub-cgroup). Adopt the sub-cgroups that show
   * hits of their own limit (pids.events.local); if none can be found (gone already), the
   * hits are the container's: reported, never dropped.
   */
  private findHitBelow(path: string, count: number, source: EventSource, kernelAt?: number): void {
    const entry = this.watched.get(path);
    const container = entry?.container;
    if (!entry || !container) {
      this.merger.counter({ cgroupPath: path, kind: 'pids-max', count, source, kernelAt });
      return;
    }
    const ownerPath = entry.owner ?? path;
    const found = this.o.cgroups.subCgroupsWithOwnPidsHits?.(path, 6, 32, (rel) => this.watched.has(rel)) ?? [];
    if (found.length === 0) {
      this.merger.counter({ cgroupPath: path, containerId: container.id, kind: 'pids-max', count, source, kernelAt });
      return;
    }
    for (const sub of found) this.adoptSub(sub, ownerPath, 'pids-max', kernelAt ?? Date.now(), source);
  }

  private watch(path: string, container: Container | undefined, owner?: string): void {
    const w = this.watched.get(path);
    if (w) {
      w.refs++;
      if (container) w.container = container;
      return;
    }
    const entry: Watched = { path, container, refs: 1, owner };
    this.watched.set(path, entry);
    // Before start (the initial reconcile) the baseline waits for start(): the limits go in
    // first. Those reads were ~13 % of the start's CPU at 5,000 containers, and what happens
    // meanwhile is as much history as what happened before the daemon ran.
    if (!this.running) this.pending.add(path);
    else this.arm(path);
  }

  private arm(path: string): void {
    if (!this.watched.has(path)) return;
    // Baseline first: what happened before we watched is not news.
    this.readFamily([path]);
    this.inotify.add(path);
    this.net.add(path);
  }

  private unwatch(path: string): void {
    const w = this.watched.get(path);
    if (!w || --w.refs > 0) return;
    this.pending.delete(path);
    this.inotify.remove(path);
    this.watched.delete(path);
    this.fast.delete(path);
    this.net.delete(path);
    if (w.owner) this.watched.get(w.owner)?.subs?.delete(path);
    this.tracker.forget(path);
    this.memoryCarry.delete(path);
    this.merger.cgroupGone(path);
    for (const f of this.o.cgroups.counterFiles(path)) this.reader.forgetFile(f);
  }

  /** The top of the family a watched cgroup is read with: its pod's cgroup, else its container's. */
  private topOf(path: string): string {
    const c = this.watched.get(path)?.container;
    if (c?.podPath && this.watched.has(c.podPath)) return c.podPath;
    if (c && this.watched.has(c.cgroupPath)) return c.cgroupPath;
    return path;
  }

  /** The watched cgroups that must be read together to attribute a hit: a pod, its containers and their sub-cgroups. */
  private family(path: string): string[] {
    const top = this.topOf(path);
    const out = [top];
    const tw = this.watched.get(top);
    if (tw?.container) {
      out.push(...(tw.subs ?? []));
    } else {
      const prefix = `${top}/`;
      for (const p of this.watched.keys()) if (p.startsWith(prefix)) out.push(p);
    }
    return out;
  }

  // ---- reading counters ---------------------------------------------------------------

  /**
   * Read the counters of these cgroups; returns the per-cgroup increases since the last read.
   * `quick` lets the cgroup layer skip files that cannot have changed (the sweep's common case).
   */
  private readFamily(paths: string[], quick = false, only?: 'pids' | 'memory'): { pids: PidsObservation[]; memory: MemoryObservation[] } {
    const pids: PidsObservation[] = [];
    const memory: MemoryObservation[] = [];
    for (const path of paths) {
      let read: CgroupCounters | null;
      try {
        const prev = quick || only ? this.tracker.get(path) : undefined;
        read = this.o.cgroups.readCountersSync(path, this.reader, quick ? { prev, memoryUnlimited: this.o.memoryUnlimited?.(path) } : only ? { prev, only } : undefined);
        // The same snapshot back: nothing changed; an absent observation attributes as zero.
        if (read !== null && read === prev) continue;
      } catch (err) {
        this.o.log.warn({ err: (err as Error).message, cgroup: path }, 'reading counters failed');
        continue;
      }
      if (read === null) {
        // Gone: discovery removes containers; a sub-cgroup is ours to drop.
        if (this.watched.get(path)?.owner) this.unwatch(path);
        continue;
      }
      const before = this.tracker.get(path)?.pids?.localMax;
      const beforeMemory = this.tracker.get(path)?.memory;
      const diff = this.tracker.update(path, read);
      // A counted hit the kernel will not print again (kmsg logs a cgroup's first rejection
      // only): from now on only reading this cgroup shows its hits.
      if (read.pids && !this.cov.pidsInotify && (read.pids.localMax ?? read.pids.max) > 0) this.joinFast(path);
      const pidsDelta = diff.increases.find((i) => i.kind === 'pids-max')?.count ?? 0;
      const local = read.pids?.localMax;
      if (read.pids) pids.push({ path, delta: pidsDelta, hierarchical: local !== undefined, ...(local !== undefined ? { localDelta: before === undefined || diff.rebaselined.includes('pids') ? 0 : Math.max(0, local - before) } : {}) });
      const deltas: MemoryObservation['deltas'] = {};
      for (const i of diff.increases) if (i.kind !== 'pids-max') deltas[i.kind] = i.count;
      if (read.memory) {
        const local = read.memory.local && !diff.rebaselined.includes('memory') ? memoryLocalDeltas(beforeMemory, read.memory) : undefined;
        // A pod's counters also hold its containers', and a container's scope can be gone
        // (runc removes it as its last process dies of the OOM) before we read it: what a
        // pod shows beyond its own (local) events is its containers', reported as theirs.
        const ownsBelow = this.watched.get(path)?.container !== undefined;
        memory.push({ path, deltas, hierarchical: this.o.cgroups.version === 'v2', ...(local ? { localDeltas: local, ownsBelow } : {}) });
      }
    }
    return { pids, memory };
  }

  /** A source says something may have happened in `path`: read its family and emit what went up. */
  check(path: string, source: EventSource, kernelAt?: number, quick = false, only?: 'pids' | 'memory'): void {
    if (!this.watched.has(path)) return;
    const family = this.family(path);
    const { pids, memory } = this.readFamily(family, quick, only);
    const hasDelta = pids.some((p) => p.delta > 0) || memory.some((m) => Object.keys(m.deltas).length > 0);
    if (!hasDelta) return; // spurious wake-up: nothing went up
    if (pids.some((p) => p.delta > 0)) {
      // Before 6.11 a pod-level hit shows in the forking container: attribution needs usage and
      // limits, but only when there is more than one cgroup to attribute between.
      for (const p of family.length > 1 ? pids : []) {
        if (p.hierarchical) continue;
        const cur = this.o.cgroups.readPidsCurrentSync?.(p.path, this.reader);
        if (cur) {
          p.current = cur.current;
          p.max = cur.max;
        }
      }
      for (const a of attributePidsHits(pids)) {
        const t = this.tracker.get(a.path)?.pids;
        const counter = t?.localMax ?? t?.max;
        this.merger.counter({ cgroupPath: a.path, containerId: this.watched.get(a.path)?.container?.id, kind: 'pids-max', count: a.count, counter, source, kernelAt });
      }
      for (const b of hitsBelow(pids)) this.findHitBelow(b.path, b.count, source, kernelAt);
    }
    for (const a of attributeMemoryEvents(memory, this.memoryCarry)) {
      const m = this.tracker.get(a.path)?.memory;
      const counter = m ? { 'memory-max': m.max, 'memory-high': m.high, oom: m.oom, 'oom-kill': m.oomKill, 'oom-group-kill': m.oomGroupKill }[a.kind] : undefined;
      this.merger.counter({ cgroupPath: a.path, containerId: this.watched.get(a.path)?.container?.id, kind: a.kind, count: a.count, counter, source, kernelAt });
    }
  }

  /** The safety net now, out of turn (tests, and the sweep source's timer). */
  sweep(): Promise<void> {
    return this.running ? this.sweeper.sweep() : Promise.resolve();
  }

  /** Read every sweep from now on, through kept-open fds. */
  private joinFast(path: string): void {
    if (this.fast.has(path) || !this.watched.has(path)) return;
    this.fast.add(path);
    for (const f of this.o.cgroups.counterFiles(path)) if (EVENT_FILE.test(f)) this.reader.pin(f);
  }

  private get cov(): SweepCoverage {
    return this.o.coverage ?? NO_COVERAGE;
  }

  /** No source reports some kind of hit of any cgroup (or kmsg, that would, is down): every cgroup is swept fast. */
  private allFast(): boolean {
    const c = this.cov;
    const kmsgUp = this.o.kmsg && this.kmsg.up;
    return !(c.pidsInotify || (c.pidsKmsgFirst && kmsgUp)) || !(c.memoryInotify || (c.memoryKmsg && kmsgUp));
  }

  /**
   * One sweep: the fast set (every cgroup when a kind of hit has no source), and the safety
   * net's share of this tick; yields to the event loop between chunks. A kmsg ring buffer
   * that wrapped lost records, perhaps a first "fork rejected": everything is read at once.
   */
  private async sweepAll(full: boolean): Promise<void> {
    if (!this.running) return;
    const wrapped = this.kmsg.stats.records.wrapped;
    const lost = wrapped !== this.lastWrapped;
    this.lastWrapped = wrapped;
    const tops = new Map<string, boolean>();
    const everything = lost || this.allFast();
    // Files read every second stay open; while only the fast set is, only its files do.
    this.reader.setPinnedOnly(!this.allFast());
    if (everything) {
      for (const path of this.watched.keys()) tops.set(this.topOf(path), full);
    } else {
      for (const path of this.fast) tops.set(this.topOf(path), full);
      for (const path of this.inotify.refusedPaths()) tops.set(this.topOf(path), full);
      const due = this.net.take(this.o.sweepIntervalMs);
      for (const path of due.paths) {
        const top = this.topOf(path);
        if (!tops.has(top)) tops.set(top, due.full);
      }
    }
    if (full) this.inotify.retryRefused();
    const y = new Yielder();
    for (const [top, isFull] of tops) {
      if (!this.watched.has(top)) continue; // removed while we yielded
      this.check(top, 'sweep', undefined, !isFull);
      await y.maybe();
    }
  }

  /** Which of the enabled sources are doing their job now (cgwatchdog_source_up). */
  sourcesUp(): Partial<Record<'kmsg' | 'inotify' | 'sweep', boolean>> {
    const up: Partial<Record<'kmsg' | 'inotify' | 'sweep', boolean>> = { sweep: this.running && !this.sweeper.stalled() };
    if (this.o.kmsg) up.kmsg = this.kmsg.up;
    if (this.inotify.on) up.inotify = this.inotify.up;
    return up;
  }

  /** The watched cgroup that holds `path` (kmsg names the task's own cgroup, which may be below a container's). */
  private watchedFor(path: string): string | undefined {
    for (let p = path; p.length > 0; p = p.slice(0, p.lastIndexOf('/'))) {
      if (this.watched.has(p)) return p;
      if (p === '/') break;
    }
    return undefined;
  }

  /**
   * kmsg says the limit of `cgroup` was hit: read the family of the watched cgroup holding it;
   * adopt it first when it lies below a container. A container already removed (its cgroup
   * gone before we read it) is still told: kmsg is then the only truth, count 1.
   */
  private onHit(cgroup: string, kind: 'pids-max' | 'oom-kill', kernelAt: number): void {
    const w = this.watchedFor(cgroup);
    if (w) {
      const entry = this.watched.get(w)!;
      if (w !== cgroup && entry.container?.cgroupPath === w) this.adoptSub(cgroup, w, kind, kernelAt);
      else this.check(w, 'kmsg', kernelAt);
      // The kernel prints a cgroup's first rejected fork only: its next ones are the sweep's.
      if (kind === 'pids-max' && !this.cov.pidsInotify) this.joinFast(this.watched.has(cgroup) ? cgroup : w);
      return;
    }
    // An OOM kill's record goes through onVictim, which knows departed containers too.
    if (kind === 'oom-kill') return;
    const gone = this.o.ownerOf?.(cgroup);
    if (gone) this.merger.counter({ cgroupPath: cgroup, containerId: gone.id, kind, count: 1, source: 'kmsg', kernelAt });
  }

  /**
   * Whose event an OOM kill is: the cgroup whose limit was hit (oom_memcg), unless that lies
   * above the victim's container (a pod-level limit, a --cgroup-parent's): then the victim's
   * container's, where the counters count it (memory.events oom_kill is the victim's memcg's);
   * the alert says the pod's limit fired (victim.oomMemcg).
   */
  private oomSubject(limitCgroup: string, taskCgroup: string | undefined): string {
    if (!taskCgroup) return limitCgroup;
    const w = this.watchedFor(taskCgroup);
    const entry = w ? this.watched.get(w) : undefined;
    const container = entry?.owner ?? (entry?.container ? w : undefined) ?? this.o.ownerOf?.(taskCgroup)?.cgroupPath;
    if (!container) return limitCgroup;
    const above = limitCgroup === '/' || container.startsWith(`${limitCgroup}/`);
    return above ? container : limitCgroup;
  }

  /** kmsg's OOM victim of a kill: with the alert of the container whose limit it was (also one just removed). */
  private onVictim(limitOrVictimCgroup: string, victim: OomVictim, kernelAt: number): void {
    const limitCgroup = this.oomSubject(limitOrVictimCgroup, victim.taskMemcg);
    const watched = this.watchedFor(limitCgroup);
    const containerId = watched ? this.watched.get(watched)?.container?.id : this.o.ownerOf?.(limitCgroup)?.id;
    if (!watched && !containerId) {
      // The node's OOM of a process in no container: still the node's alert.
      if (victim.global) this.merger.kmsgOom({ cgroupPath: '/', victim, kernelAt, alone: true });
      return;
    }
    // A departed container's path is in the merger's "gone" set: the record goes out at once.
    this.merger.kmsgOom({ cgroupPath: watched ?? limitCgroup, containerId, victim, kernelAt });
  }
}
