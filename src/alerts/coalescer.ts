import { createHash } from 'node:crypto';
import type { AlertKind, Severity } from '../config/schema';
import type { LimitEvent, OomVictim } from '../detect/event';
import type { ContainerRecord } from '../discovery/container';
import type { Alert, LimitScope } from './alert';

// Turns a stream of limit events into few, meaningful messages. Pure: no timers, no I/O; the
// caller feeds events and ticks and sends whatever comes back. A fork bomb at pids.max makes
// thousands of events per second; an operator wants one page, then a periodic update.

export const WARNING_KINDS: readonly AlertKind[] = ['pids-warning', 'memory-warning', 'host-pids-warning', 'pids-policy-too-low'];

const SEVERITY: Record<AlertKind, Severity> = {
  'pids-max': 'critical',
  'oom-kill': 'critical',
  'oom-group-kill': 'critical',
  'memory-max': 'warning',
  oom: 'warning',
  'memory-high': 'info',
  'pids-warning': 'warning',
  'memory-warning': 'warning',
  'host-pids-warning': 'warning',
  'pids-policy-too-low': 'warning',
  test: 'info',
};

/** A limit a container set inside itself pages less than the limit its operator gave it. */
export function severityOf(kind: AlertKind, scope: LimitScope = 'container'): Severity {
  const s = SEVERITY[kind];
  if (scope !== 'sub-cgroup') return s;
  return s === 'critical' ? 'warning' : 'info';
}

const SEVERITY_RANK: Record<Severity, number> = { info: 0, warning: 1, critical: 2 };
export function severityAtLeast(s: Severity, min: Severity): boolean {
  return SEVERITY_RANK[s] >= SEVERITY_RANK[min];
}

/** Stable per condition: the same host, kind and cgroup give the same fingerprint across restarts. */
export function fingerprintOf(host: string, kind: AlertKind, cgroupPath: string): string {
  return createHash('sha256').update(`${host}\0${kind}\0${cgroupPath}`).digest('hex').slice(0, 16);
}

/** What the caller knows about a cgroup when a message is built: names, counters, top commands. */
export interface AlertContext {
  container?: Partial<Pick<ContainerRecord, 'id' | 'runtime' | 'name' | 'image' | 'podName' | 'podNamespace' | 'podUid'>>;
  current?: number;
  limit?: number | 'max';
  topCommands?: { comm: string; tasks: number }[];
  memory?: { usageBytes?: number; limitBytes?: number | 'max' };
  limitScope?: LimitScope;
}

/** Called each time a message is built, so updates carry the latest names and counters. */
export type ContextLookup = (cgroupPath: string, kind: AlertKind, containerId?: string) => AlertContext | undefined;

export interface CoalescerOptions {
  host: string;
  repeatIntervalSeconds: number;
  resolveAfterSeconds: number;
  /** ms since epoch; injected so tests drive time. */
  now?: () => number;
  /** A monotonic clock (ms) for intervals; default performance.now(), or `now` when that is injected. */
  mono?: () => number;
  lookup?: ContextLookup;
}

export interface AlertKey {
  cgroupPath: string;
  kind: AlertKind;
}

/** A condition's state as saved across restarts (alert-state.json). */
export interface SavedAlertState {
  kind: AlertKind;
  cgroupPath: string;
  containerId?: string;
  fingerprint: string;
  /** Wall clock (ms since epoch): it is shown. */
  startsAt: number;
  sequence: number;
  /** Wall clock when saved; monotonic (ms) while live: an NTP step must not stall updates or resolutions. */
  lastSentAt: number;
  lastEventAt: number;
  pending: number;
  total: number;
  sources: string[];
  victim?: OomVictim;
  /** Context given to raise() for warnings; merged over the lookup's. */
  given?: AlertContext;
  /** Fixed at the first message (see Alert.identity). */
  identity?: Alert['identity'];
  limitScope?: LimitScope;
}

/** Live state: as saved, but the intervals on a monotonic clock (see Coalescer.snapshot). */
interface State extends Omit<SavedAlertState, 'sources'> {
  sources: Set<string>;
  /** What the last event's alert said (counters, top commands): later messages start from it. Not saved. */
  latest?: AlertContext;
}

const keyOf = (cgroupPath: string, kind: AlertKind): string => `${kind}\0${cgroupPath}`;

export class Coalescer {
  private readonly states = new Map<string, State>();
  private readonly now: () => number;
  private readonly mono: () => number;
  private repeatMs: number;
  private resolveMs: number;

  constructor(private readonly opts: CoalescerOptions) {
    this.now = opts.now ?? Date.now;
    this.mono = opts.mono ?? opts.now ?? (() => performance.now());
    this.repeatMs = opts.repeatIntervalSeconds * 1000;
    this.resolveMs = opts.resolveAfterSeconds * 1000;
  }

  /** A reload: new intervals apply to the alerts already firing, which keep their state. */
  reconfigure(o: Pick<CoalescerOptions, 'host' | 'repeatIntervalSeconds' | 'resolveAfterSeconds'>): void {
    this.opts.host = o.host;
    this.repeatMs = o.repeatIntervalSeconds * 1000;
    this.resolveMs = o.resolveAfterSeconds * 1000;
  }

  /** A limit hit. Returns the messages to send now (a firing on the first event, maybe an update). */
  onEvent(ev: LimitEvent, latest?: AlertContext): Alert[] {
    if (WARNING_KINDS.includes(ev.kind)) {
      return this.raise({ cgroupPath: ev.cgroupPath, kind: ev.kind }, undefined, ev.containerId);
    }
    return this.observe(ev.cgroupPath, ev.kind, Math.max(0, ev.count), ev.source, ev.containerId, ev.victim, undefined, latest);
  }

  /**
   * A warning is above its threshold (the caller applies hysteresis). The first call fires; each
   * later call counts as one observation, reported at most once per repeat interval. Warnings do
   * not resolve on quiet: only clear() ends them.
   */
  raise(key: AlertKey, context?: AlertContext, containerId?: string): Alert[] {
    return this.observe(key.cgroupPath, key.kind, 1, 'sweep', containerId, undefined, context);
  }

  /** The warning fell below its threshold (with hysteresis): send the resolution. */
  clear(key: AlertKey): Alert[] {
    const k = keyOf(key.cgroupPath, key.kind);
    const s = this.states.get(k);
    if (!s) return [];
    this.states.delete(k);
    return [this.build(s, 'resolved')];
  }

  /** The container is gone: resolve all of its alerts at once. */
  resolveNow(cgroupPath: string): Alert[] {
    const out: Alert[] = [];
    for (const [k, s] of this.states) {
      if (s.cgroupPath !== cgroupPath) continue;
      this.states.delete(k);
      out.push(this.build(s, 'resolved'));
    }
    return out;
  }

  /** Time passes: due updates, and resolutions of limit alerts that went quiet. */
  tick(): Alert[] {
    const now = this.mono();
    const out: Alert[] = [];
    for (const [k, s] of this.states) {
      const warning = WARNING_KINDS.includes(s.kind);
      if (!warning && now - s.lastEventAt >= this.resolveMs) {
        this.states.delete(k);
        out.push(this.build(s, 'resolved'));
      } else if (s.pending > 0 && now - s.lastSentAt >= this.repeatMs) {
        out.push(this.build(s, 'firing'));
      }
    }
    return out;
  }

  /** The latest firing message of every active alert, without changing state (for re-sends and status). */
  active(): Alert[] {
    return [...this.states.values()].map((s) => this.render(s, 'firing', s.total - s.pending, 0));
  }

  get size(): number {
    return this.states.size;
  }

  /** Every condition's state, to save (a restart or kill -9 must not orphan a firing alert). */
  snapshot(): SavedAlertState[] {
    // Saved as wall-clock times: a monotonic clock does not survive the process.
    const toWall = (m: number): number => this.now() - (this.mono() - m);
    return [...this.states.values()].map(({ latest: _, ...s }) => ({ ...s, lastSentAt: toWall(s.lastSentAt), lastEventAt: toWall(s.lastEventAt), sources: [...s.sources] }));
  }

  /** States saved by an earlier run: they go on from their sequence number. */
  restore(saved: SavedAlertState[]): void {
    const toMono = (w: number): number => this.mono() - Math.max(0, this.now() - w);
    for (const s of saved) {
      const k = keyOf(s.cgroupPath, s.kind);
      if (!this.states.has(k)) this.states.set(k, { ...s, lastSentAt: toMono(s.lastSentAt), lastEventAt: toMono(s.lastEventAt), sources: new Set(s.sources) });
    }
  }

  /** Resolve at once the conditions whose subject `keep` says is gone (after a restart). */
  resolveWhere(gone: (cgroupPath: string) => boolean): Alert[] {
    const out: Alert[] = [];
    for (const [k, s] of this.states) {
      if (!gone(s.cgroupPath)) continue;
      this.states.delete(k);
      out.push(this.build(s, 'resolved'));
    }
    return out;
  }

  private observe(
    cgroupPath: string,
    kind: AlertKind,
    count: number,
    source: string,
    containerId: string | undefined,
    victim: OomVictim | undefined,
    given: AlertContext | undefined,
    latest?: AlertContext,
  ): Alert[] {
    const now = this.mono();
    const k = keyOf(cgroupPath, kind);
    let s = this.states.get(k);
    if (!s) {
      s = {
        kind,
        cgroupPath,
        containerId,
        fingerprint: fingerprintOf(this.opts.host, kind, cgroupPath),
        startsAt: this.now(),
        sequence: 0,
        lastSentAt: now,
        lastEventAt: now,
        pending: count,
        total: count,
        sources: new Set([source]),
        victim,
        given,
        latest,
      };
      this.states.set(k, s);
      return [this.build(s, 'firing')];
    }
    s.pending += count;
    s.total += count;
    s.lastEventAt = now;
    s.sources.add(source);
    if (containerId) s.containerId = containerId;
    if (victim) s.victim = victim;
    if (given) s.given = given;
    if (latest) s.latest = latest;
    if (now - s.lastSentAt >= this.repeatMs) return [this.build(s, 'firing')];
    return [];
  }

  /** Emits the next message of a condition: takes the pending count and advances the sequence. */
  private build(s: State, state: 'firing' | 'resolved'): Alert {
    s.sequence += 1;
    const since = s.pending;
    s.pending = 0;
    s.lastSentAt = this.mono();
    return this.render(s, state, since, s.sequence);
  }

  private render(s: State, state: 'firing' | 'resolved', eventsSinceLast: number, sequence: number): Alert {
    const now = this.now();
    const looked = s.latest ?? this.opts.lookup?.(s.cgroupPath, s.kind, s.containerId) ?? {};
    const ctx: AlertContext = { ...looked, ...s.given, container: { ...looked.container, ...s.given?.container } };
    const c = ctx.container ?? {};
    s.identity ??= { name: c.name, pod: c.podName, namespace: c.podNamespace };
    // An OOM kill of this container's task at an ancestor's limit (kmsg oom_memcg): the pod's.
    const atAncestor = s.kind === 'oom-kill' && s.victim?.oomMemcg !== undefined && s.cgroupPath.startsWith(`${s.victim.oomMemcg}/`);
    s.limitScope ??= s.kind === 'host-pids-warning' ? 'node' : atAncestor && ctx.limitScope !== 'node' ? 'pod' : (ctx.limitScope ?? 'container');
    const startsAt = new Date(s.startsAt).toISOString();
    const seq = sequence || s.sequence;
    const alert: Alert = {
      fingerprint: s.fingerprint,
      idempotencyKey: `${s.fingerprint}-${seq}-${s.startsAt}`,
      sequence: seq,
      state,
      kind: s.kind,
      severity: severityOf(s.kind, s.limitScope),
      limitScope: s.limitScope,
      host: this.opts.host,
      summary: '',
      container: {
        id: c.id ?? s.containerId,
        name: c.name,
        runtime: c.runtime,
        image: c.image,
        pod: c.podName,
        namespace: c.podNamespace,
        podUid: c.podUid,
        cgroupPath: s.cgroupPath,
      },
      counters: { current: ctx.current, limit: ctx.limit, eventsSinceLast, eventsTotal: s.total },
      topCommands: ctx.topCommands,
      victim: s.victim
        ? {
            pid: s.victim.pid,
            comm: s.victim.comm,
            anonRssKb: s.victim.anonRssKb,
            fileRssKb: s.victim.fileRssKb,
            totalVmKb: s.victim.totalVmKb,
          }
        : undefined,
      memory: ctx.memory,
      startsAt,
      updatedAt: new Date(now).toISOString(),
      endsAt: state === 'resolved' ? new Date(now).toISOString() : undefined,
      sources: [...s.sources].sort(),
      identity: { ...s.identity },
    };
    alert.summary = summarize(alert);
    return stripUndefined(alert);
  }
}

function stripUndefined<T extends object>(o: T): T {
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined) delete (o as Record<string, unknown>)[k];
    else if (v !== null && typeof v === 'object' && !Array.isArray(v)) stripUndefined(v as object);
  }
  return o;
}

const plural = (n: number, one: string, many: string): string => `${n} ${n === 1 ? one : many}`;

export function formatBytes(b: number | 'max' | undefined): string {
  if (b === undefined) return '?';
  if (b === 'max') return 'max';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = b;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

/** "container web-1 (podman 3f2a1b…)", "container 3f2a1b… (docker)", or the cgroup when no container. */
export function describeTarget(a: Pick<Alert, 'container' | 'kind' | 'host'> & { limitScope?: Alert['limitScope'] }): string {
  const c = a.container;
  if (a.kind === 'host-pids-warning' || a.limitScope === 'node') return `host ${a.host}`;
  const shortId = c.id ? (c.id.length > 12 ? `${c.id.slice(0, 12)}…` : c.id) : undefined;
  const pod = c.pod ? `pod ${c.namespace ? `${c.namespace}/` : ''}${c.pod}` : undefined;
  const label = c.name ?? shortId;
  if (label) {
    const detail = [[c.runtime, c.name ? shortId : undefined].filter(Boolean).join(' '), pod].filter(Boolean).join(', ');
    const where = a.limitScope === 'sub-cgroup' ? `, in its sub-cgroup ${c.cgroupPath},` : '';
    return `container ${label}${detail ? ` (${detail})` : ''}${where}`;
  }
  if (pod) return `${pod} (cgroup ${c.cgroupPath})`;
  return `cgroup ${c.cgroupPath}`;
}

/** The human sentence of an alert; a resolution reports the totals. */
export function summarize(a: Alert): string {
  const who = describeTarget(a);
  const n = a.state === 'resolved' ? a.counters.eventsTotal : a.counters.eventsSinceLast;
  const lim = a.counters.limit;
  const top = a.topCommands?.length
    ? `; top: ${a.topCommands
        .slice(0, 3)
        .map((t) => `${t.comm} ${plural(t.tasks, 'task', 'tasks')}`)
        .join(', ')}`
    : '';
  const memLimit = formatBytes(a.memory?.limitBytes ?? (typeof lim === 'number' ? lim : lim === 'max' ? 'max' : undefined));
  const pct = (cur: number | undefined, l: number | 'max' | undefined): string =>
    cur !== undefined && typeof l === 'number' && l > 0 ? ` (${Math.round((cur / l) * 100)}%)` : '';
  let text: string;
  switch (a.kind) {
    case 'pids-max':
      text = `${who} hit its PID limit${lim !== undefined ? ` ${lim}` : ''}: ${plural(n, 'fork', 'forks')} rejected${top}`;
      break;
    case 'memory-max':
      text = `${who} hit its memory limit ${memLimit}: ${plural(n, 'time', 'times')}`;
      break;
    case 'memory-high':
      text = `${who} was throttled at memory.high ${formatBytes(a.memory?.limitBytes)}: ${plural(n, 'time', 'times')}`;
      break;
    case 'oom':
      text = `${who} ran out of memory (limit ${memLimit}): the OOM killer ran ${plural(n, 'time', 'times')}`;
      break;
    case 'oom-kill': {
      const v = a.victim;
      const last = v ? `; last: ${v.comm} (pid ${v.pid}${v.anonRssKb !== undefined ? `, anon-rss ${formatBytes(v.anonRssKb * 1024)}` : ''})` : '';
      text = a.limitScope === 'node'
        ? `${who} ran out of memory: ${plural(n, 'process', 'processes')} OOM-killed by the kernel (no container limit was hit)${last}${a.container.id ? ` in container ${a.container.id.slice(0, 12)}` : ''}`
        : `${who}: ${plural(n, 'process', 'processes')} OOM-killed (limit ${memLimit})${last}`;
      break;
    }
    case 'oom-group-kill':
      text = `${who}: the whole cgroup was OOM-killed (memory.oom.group, limit ${memLimit})`;
      break;
    case 'pids-warning':
      text = `${who} uses ${a.counters.current ?? '?'} of its PID limit ${lim ?? '?'}${pct(a.counters.current, lim)}${top}`;
      break;
    case 'memory-warning': {
      const used = a.memory?.usageBytes ?? a.counters.current;
      const l = a.memory?.limitBytes ?? lim;
      text = `${who} uses ${formatBytes(used)} of its memory limit ${formatBytes(l)}${pct(used, l)}`;
      break;
    }
    case 'pids-policy-too-low':
      text = `${who} runs ${a.counters.current ?? '?'} tasks, more than its policy value ${lim ?? '?'} allows with headroom: pids.max not lowered${top}`;
      break;
    case 'host-pids-warning':
      text = `${who} runs ${a.counters.current ?? '?'} tasks of kernel.pid_max ${lim ?? '?'}${pct(a.counters.current, lim)}`;
      break;
    case 'test':
      text = `TEST alert from ${who}, sent by \`cgwatchdog test-alert\`: no limit was hit, nothing to do`;
      break;
  }
  return a.state === 'resolved' ? `resolved: ${text}` : text;
}
