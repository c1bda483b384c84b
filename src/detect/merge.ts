import type { AlertKind } from '../config/schema';
import type { EventSource, LimitEvent, OomVictim } from './event';

// One limit hit is one event, however many sources saw it. Counters (pids.events,
// memory.events, memory.oom_control) say how many; /dev/kmsg says who (the OOM victim) and is
// often first, but prints nothing for most pids rejections (only the first per cgroup) and
// cannot count. So: counts come only from counter increases, and kmsg OOM records only add
// the victim to the matching oom-kill increase.
//
// Ordering in the kernel (mm/oom_kill.c, __oom_kill_process): the "oom-kill:constraint=..."
// line is printed, then memory.events oom_kill is incremented, then "Killed process ..." is
// printed. A kmsg record therefore usually arrives within microseconds of the counter's
// change, but our read of the counter (prompted by inotify, kmsg or a sweep) can come before
// or after it: we wait both ways.

export interface Clock {
  /** Wall clock (ms since epoch): event timestamps. */
  now(): number;
  /** Monotonic (ms): the hold windows. Default: now. */
  mono?(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realClock: Clock = {
  now: () => Date.now(),
  mono: () => performance.now(),
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref?.();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** A counter increase of one cgroup, from any source. */
export interface CounterInput {
  /** The watched cgroup the increase is attributed to (after attribution.ts). */
  cgroupPath: string;
  containerId?: string;
  kind: AlertKind;
  count: number;
  counter?: number;
  /** Which source prompted the read; a read prompted by /dev/kmsg is 'kmsg'. */
  source: EventSource;
  /** Best estimate of when the kernel did it (ms since epoch): the inotify wake-up, the kmsg timestamp; none for a sweep. */
  kernelAt?: number;
}

/** A parsed kmsg OOM kill. */
export interface KmsgOomInput {
  /** The watched cgroup holding the victim (task_memcg, or its nearest watched ancestor). */
  cgroupPath: string;
  containerId?: string;
  victim: OomVictim;
  /** The record's timestamp converted to ms since epoch. */
  kernelAt?: number;
  /** No counter will ever come for it (the node's OOM of a process in no container): out at once. */
  alone?: boolean;
}

export interface MergeOptions {
  /** How long a kmsg record waits for its counter increase (ms). */
  holdMs?: number;
  /** How long an oom-kill counter increase waits for its kmsg record (ms). */
  mergeWindowMs?: number;
  clock?: Clock;
}

interface PendingCounter {
  input: CounterInput;
  firstSeenAt: number;
  source: EventSource;
  kernelAt?: number;
  victims: OomVictim[];
  timer: unknown;
}

interface PendingKmsg {
  input: KmsgOomInput;
  seenAt: number;
  timer: unknown;
}

function within(child: string, parent: string): boolean {
  return child === parent || parent === '/' || child.startsWith(`${parent}/`);
}

function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

export class EventMerger {
  readonly holdMs: number;
  readonly mergeWindowMs: number;
  private readonly clock: Clock;
  private readonly counters: PendingCounter[] = [];
  private readonly kmsg: PendingKmsg[] = [];
  /** When the last victimless oom-kill event of a cgroup went out: a later kmsg record is its detail, already counted. */
  private readonly recentBare = new Map<string, number[]>();
  private readonly gone = new Set<string>();

  constructor(
    private readonly emit: (e: LimitEvent) => void,
    opts: MergeOptions = {},
  ) {
    this.holdMs = opts.holdMs ?? 2000;
    this.mergeWindowMs = opts.mergeWindowMs ?? 50;
    this.clock = opts.clock ?? realClock;
  }

  /** A counter went up. Only oom-kill increases wait (mergeWindowMs) for a victim; the rest go out at once. */
  counter(input: CounterInput): void {
    if (input.count <= 0) return;
    const now = this.clock.now();
    this.gone.delete(input.cgroupPath);
    if (input.kind !== 'oom-kill') {
      this.emitOne(input, input.count, input.source, now, input.kernelAt, undefined, input.containerId);
      return;
    }
    const p: PendingCounter = { input, firstSeenAt: now, source: input.source, kernelAt: input.kernelAt, victims: [], timer: undefined };
    // kmsg records already waiting for this cgroup, oldest first.
    while (p.victims.length < input.count) {
      const k = this.takeKmsg(input.cgroupPath);
      if (!k) break;
      p.victims.push(k.input.victim);
      if (k.seenAt < p.firstSeenAt) {
        p.firstSeenAt = k.seenAt;
        p.source = 'kmsg';
      }
      p.kernelAt = minDefined(p.kernelAt, k.input.kernelAt);
      p.input = { ...p.input, containerId: p.input.containerId ?? k.input.containerId };
    }
    if (p.victims.length >= input.count || this.mergeWindowMs <= 0) {
      this.flushCounter(p);
      return;
    }
    p.timer = this.clock.setTimeout(() => this.flushCounter(p), this.mergeWindowMs);
    this.counters.push(p);
  }

  /** A kmsg OOM kill record. */
  kmsgOom(input: KmsgOomInput): void {
    const now = this.clock.now();
    const p = this.counters.find((c) => within(input.cgroupPath, c.input.cgroupPath));
    if (p) {
      p.victims.push(input.victim);
      p.kernelAt = minDefined(p.kernelAt, input.kernelAt);
      if (p.victims.length >= p.input.count) this.flushCounter(p);
      return;
    }
    const k: PendingKmsg = { input, seenAt: now, timer: undefined };
    k.timer = this.clock.setTimeout(() => this.expireKmsg(k), this.holdMs);
    this.kmsg.push(k);
    if (this.gone.has(input.cgroupPath) || input.alone) this.expireKmsg(k);
  }

  /**
   * The cgroup's counters cannot be read any more (ENOENT/ENODEV): an OOM kill of a
   * container's last process often removes the cgroup before we read it. Its kmsg records
   * go out at once, alone, with count 1 each.
   */
  cgroupGone(cgroupPath: string): void {
    if (!this.gone.has(cgroupPath)) {
      this.gone.add(cgroupPath);
      // Remembered for holdMs, for kmsg records still on their way.
      this.clock.setTimeout(() => this.gone.delete(cgroupPath), this.holdMs);
    }
    for (const k of this.kmsg.filter((x) => within(x.input.cgroupPath, cgroupPath))) this.expireKmsg(k);
    this.recentBare.delete(cgroupPath);
  }

  /** Emit everything still held (shutdown). */
  flush(): void {
    for (const p of [...this.counters]) this.flushCounter(p);
    for (const k of [...this.kmsg]) this.expireKmsg(k);
  }

  /** Held items, for tests and the status command. */
  pending(): { counters: number; kmsg: number } {
    return { counters: this.counters.length, kmsg: this.kmsg.length };
  }

  private takeKmsg(cgroupPath: string): PendingKmsg | undefined {
    const i = this.kmsg.findIndex((k) => within(k.input.cgroupPath, cgroupPath));
    if (i < 0) return undefined;
    const [k] = this.kmsg.splice(i, 1);
    this.clock.clearTimeout(k!.timer);
    return k;
  }

  private flushCounter(p: PendingCounter): void {
    const i = this.counters.indexOf(p);
    if (i >= 0) this.counters.splice(i, 1);
    if (p.timer !== undefined) this.clock.clearTimeout(p.timer);
    const { input } = p;
    // One event per victim (count 1 each), the rest of the increase in one victimless event.
    const counterBase = input.counter !== undefined ? input.counter - input.count : undefined;
    let n = 0;
    for (const v of p.victims.slice(0, input.count)) {
      n++;
      this.emitOne({ ...input, counter: counterBase !== undefined ? counterBase + n : undefined }, 1, p.source, p.firstSeenAt, p.kernelAt, v, input.containerId);
    }
    const rest = input.count - n;
    if (rest > 0) {
      this.emitOne(input, rest, p.source, p.firstSeenAt, p.kernelAt, undefined, input.containerId);
      const now = this.monoNow();
      const list = (this.recentBare.get(input.cgroupPath) ?? []).filter((t) => now - t < this.holdMs);
      for (let j = 0; j < rest; j++) list.push(now);
      this.recentBare.set(input.cgroupPath, list);
    }
  }

  private monoNow(): number {
    return this.clock.mono ? this.clock.mono() : this.clock.now();
  }

  private expireKmsg(k: PendingKmsg): void {
    const i = this.kmsg.indexOf(k);
    if (i < 0) return;
    this.kmsg.splice(i, 1);
    this.clock.clearTimeout(k.timer);
    const { input } = k;
    const gone = [...this.gone].some((g) => within(input.cgroupPath, g));
    if (!gone) {
      // A victimless oom-kill already went out for this cgroup within holdMs: this record is
      // its late detail and is already counted.
      const now = this.monoNow();
      for (const [path, times] of this.recentBare) {
        if (!within(input.cgroupPath, path)) continue;
        const fresh = times.filter((t) => now - t < this.holdMs * 2);
        if (fresh.length > 0) {
          fresh.shift();
          this.recentBare.set(path, fresh);
          return;
        }
      }
    }
    // The counter never moved (cgroup gone, or not one we read): better one alert than none.
    this.emitOne(
      { cgroupPath: input.cgroupPath, containerId: input.containerId, kind: 'oom-kill', count: 1, source: 'kmsg', kernelAt: input.kernelAt },
      1,
      'kmsg',
      k.seenAt,
      input.kernelAt,
      input.victim,
      input.containerId,
    );
  }

  private emitOne(
    input: CounterInput,
    count: number,
    source: EventSource,
    firstSeenAt: number,
    kernelAt: number | undefined,
    victim: OomVictim | undefined,
    containerId: string | undefined,
  ): void {
    const e: LimitEvent = {
      kind: input.kind,
      cgroupPath: input.cgroupPath,
      count,
      source,
      at: this.clock.now(),
    };
    if (containerId !== undefined) e.containerId = containerId;
    if (input.counter !== undefined) e.counter = input.counter;
    // Kernel to first sight by any source; the wait for a victim (up to mergeWindowMs) is not in it.
    if (kernelAt !== undefined) e.latencyMs = Math.max(0, firstSeenAt - kernelAt);
    if (victim) e.victim = victim;
    this.emit(e);
  }
}
