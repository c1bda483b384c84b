import type { Limit } from '../cgroup/types';

// Early warnings with hysteresis: a warning is raised when the value reaches warnPercent of
// its limit and cleared only once it falls below (warnPercent − hysteresisPercent) of it, so a
// value that wobbles around the threshold raises once, not on every sample.

export type WarningKind = 'pids-warning' | 'memory-warning' | 'host-pids-warning';

export interface WarningThresholds {
  pidsPercent: number;
  memoryPercent: number;
  hostTasksPercent: number;
  hysteresisPercent: number;
}

export interface WarningSample {
  kind: WarningKind;
  /** What the value belongs to: a cgroup path, or "host". */
  subject: string;
  value: number;
  /** The limit; "max" or unknown never warns (and clears a raised warning). */
  limit: Limit | undefined;
}

export interface WarningTransition {
  kind: WarningKind;
  subject: string;
  state: 'raise' | 'clear';
  value: number;
  limit: Limit | undefined;
  /** value as a percentage of limit (undefined for "max"/unknown). */
  percent?: number;
  /** The threshold crossed: warnPercent on raise, the clear level on clear. */
  thresholdPercent: number;
}

/** The next state of one warning: pure. */
export function nextWarningState(raised: boolean, value: number, limit: Limit | undefined, warnPercent: number, hysteresisPercent: number): boolean {
  if (limit === undefined || limit === 'max' || limit <= 0) return false;
  // Compare as value*100 vs percent*limit: no rounding at the boundary.
  const scaled = value * 100;
  if (!raised) return scaled >= warnPercent * limit;
  return !(scaled < (warnPercent - hysteresisPercent) * limit);
}

export class WarningTracker {
  private readonly raised = new Map<string, WarningSample>();

  constructor(private t: WarningThresholds) {}

  /** New thresholds (a reload): raised warnings stay raised until a sample clears them. */
  setThresholds(t: WarningThresholds): void {
    this.t = t;
  }

  private percentFor(kind: WarningKind): number {
    return kind === 'pids-warning' ? this.t.pidsPercent : kind === 'memory-warning' ? this.t.memoryPercent : this.t.hostTasksPercent;
  }

  isRaised(kind: WarningKind, subject: string): boolean {
    return this.raised.has(`${kind}\0${subject}`);
  }

  /** Feed one sample; returns the transition, if the state changed. */
  update(s: WarningSample): WarningTransition | undefined {
    const key = `${s.kind}\u0000${s.subject}`;
    const was = this.raised.has(key);
    const warn = this.percentFor(s.kind);
    const now = nextWarningState(was, s.value, s.limit, warn, this.t.hysteresisPercent);
    if (now) this.raised.set(key, s);
    if (now === was) return undefined;
    if (!now) this.raised.delete(key);
    return {
      kind: s.kind,
      subject: s.subject,
      state: now ? 'raise' : 'clear',
      value: s.value,
      limit: s.limit,
      percent: typeof s.limit === 'number' && s.limit > 0 ? (s.value * 100) / s.limit : undefined,
      thresholdPercent: now ? warn : warn - this.t.hysteresisPercent,
    };
  }

  /** The subject is gone (container removed): its raised warnings clear. */
  forget(subject: string): WarningTransition[] {
    const out: WarningTransition[] = [];
    for (const [key, s] of this.raised) {
      if (s.subject !== subject) continue;
      this.raised.delete(key);
      out.push({ kind: s.kind, subject, state: 'clear', value: s.value, limit: s.limit, thresholdPercent: this.percentFor(s.kind) - this.t.hysteresisPercent });
    }
    return out;
  }

  /** Warnings currently raised. */
  active(): WarningSample[] {
    return [...this.raised.values()];
  }
}
