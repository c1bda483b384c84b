import os from 'node:os';
import path from 'node:path';
import type { CgroupFs } from '../cgroup/types';
import type { AlertKind, Config } from '../config/schema';
import type { LimitEvent } from '../detect/event';
import type { UsageMonitor } from '../detect/usage-monitor';
import { HOST_SUBJECT } from '../detect/usage-monitor';
import type { WarningTransition } from '../detect/warnings';
import type { ContainerRecord } from '../discovery/container';
import type { Inventory } from '../discovery/inventory';
import { topCommands } from '../kernel/proc';
import type { Logger } from '../log';
import type { Alert } from './alert';
import { Coalescer, type AlertContext, type SavedAlertState } from './coalescer';
import { StateFile } from '../state/state-file';
import type { StateWriteHealth } from '../state/write-health';
import { Delivery, type DeliveryOutcome } from './delivery';
import { NameResolver } from './names';
import { Outbox } from './outbox';

/**
 * Reading /proc/<tid>/comm costs ~12 µs here, ~1 ms in user-mode Linux under load; beyond this
 * many tasks an even sample is read and scaled (±3 % on a share). 2,000 reads held a 8,192-thread
 * bomb's alert 2.1 s in UML 7.2, and over 15 s under CI load.
 */
const TOP_SAMPLE = 256;
const TOP_N = 5;
/** A fork bomb fires many events a second: the task census is reused for this long. */
const TOP_CACHE_MS = 1000;
/**
 * A removed container's alerts resolve this long after its removal, not at once: the events
 * of its last moments (kmsg's OOM record, held up to 2 s for its counter) still arrive, and
 * must join the same alert instead of opening one that would only resolve on quiet.
 */
const REMOVAL_GRACE_MS = 3000;
/** A name lookup that found nothing is asked again after these waits (then every minute, as the resolver caches). */
const NAME_RETRIES_MS = [250, 500, 1000, 2000];
/** Alert states are saved at most this long after a message (a burst is one write). */
const SAVE_DELAY_MS = 100;
const ALERT_STATE_FORMAT = 1;

function migrateAlertState(data: Record<string, unknown>, version: number): { alerts: SavedAlertState[] } | null {
  if (version !== 1 || !Array.isArray(data.alerts)) return null;
  return { alerts: data.alerts as SavedAlertState[] };
}

export interface PipelineOptions {
  config: Config;
  log: Logger;
  inventory: Inventory;
  usage: UsageMonitor;
  cgroups: CgroupFs;
  onOutcome?: (sink: string, outcome: DeliveryOutcome) => void;
  /** Each message as it is enqueued (metrics, tests). */
  onAlert?: (a: Alert) => void;
  /** Failed saves of alert-state.json are counted and shown here. */
  stateWrites?: StateWriteHealth;
}

/**
 * From limit events and warning transitions to delivered alerts: coalesce (one alert per
 * container and kind, bounded updates), add what an operator needs (names, counters, top
 * commands, the OOM victim), and hand each message to the durable outbox.
 */
export class AlertPipeline {
  readonly coalescer: Coalescer;
  outbox!: Outbox;
  delivery!: Delivery;
  readonly names: NameResolver;
  /** Task censuses of the last TOP_CACHE_MS, by cgroup (a container's, a sub-cgroup's, a pod's). */
  private readonly tops = new Map<string, { at: number; top: { comm: string; tasks: number }[] }>();
  private ticker?: NodeJS.Timeout;
  private saveTimer?: NodeJS.Timeout;
  private stateFile?: StateFile<{ alerts: SavedAlertState[] }>;
  private readonly removals = new Set<NodeJS.Timeout>();
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: PipelineOptions) {
    const a = o.config.alerts;
    this.coalescer = new Coalescer({
      host: a.host ?? os.hostname(),
      repeatIntervalSeconds: a.repeatIntervalSeconds,
      resolveAfterSeconds: a.resolveAfterSeconds,
      lookup: (cgroupPath) => this.baseContext(cgroupPath),
    });
    this.names = new NameResolver({ ...o.config.names, log: o.log });
  }

  async start(): Promise<void> {
    const { config, log } = this.o;
    this.outbox = await Outbox.open({ dir: config.alerts.outbox.dir ?? path.join(config.paths.stateDir, 'outbox'), maxEntries: config.alerts.outbox.maxEntries, log });
    this.delivery = new Delivery({ outbox: this.outbox, sinks: config.alerts.sinks, log, ttlMs: config.alerts.outbox.ttlSeconds * 1000, onOutcome: (sink, outcome) => this.o.onOutcome?.(sink, outcome) });
    this.delivery.start();
    this.stateFile = new StateFile(config.paths.stateDir, 'alert-state.json', ALERT_STATE_FORMAT, migrateAlertState);
    try {
      const saved = this.stateFile.read();
      if (saved) {
        this.coalescer.restore(saved.alerts);
        if (saved.alerts.length > 0) log.info({ alerts: saved.alerts.length }, 'alert states restored: firing alerts go on from their sequence numbers');
      }
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'cannot restore alert states; alerts start afresh');
    }
    this.ticker = setInterval(() => void this.tick(), 1000);
    this.ticker.unref();
  }

  async stop(): Promise<void> {
    if (this.ticker) clearInterval(this.ticker);
    for (const t of this.removals) clearTimeout(t);
    this.removals.clear();
    await this.chain;
    this.names.close();
    await this.delivery?.stop();
    await this.outbox?.close();
    this.saveState();
  }

  /**
   * A reload: firing alerts keep their state and sequence and resolve as they would have,
   * under the new intervals; sinks added get what is firing now, removed sinks' waiting
   * entries are dropped (counted). In the send order, after everything already made.
   */
  reconfigure(config: Config): Promise<void> {
    return new Promise((resolve, reject) => {
      this.serial(async () => {
        try {
          const a = config.alerts;
          this.o.config = config;
          this.coalescer.reconfigure({ host: a.host ?? os.hostname(), repeatIntervalSeconds: a.repeatIntervalSeconds, resolveAfterSeconds: a.resolveAfterSeconds });
          const added = new Set(await this.delivery.reload(a.sinks));
          if (added.size > 0) for (const alert of this.coalescer.active()) await this.delivery.enqueue(alert, added);
          resolve();
        } catch (err) {
          reject(err as Error);
        }
      });
    });
  }

  containerAdded(c: ContainerRecord): void {
    // Nothing to ask (no socket, no podman): its alerts must not wait nameWaitMs for nothing
    // (measured in UML: every such alert went out 500 ms late).
    if (!this.names.canAsk(c)) return;
    // Asked the moment its cgroup appears, the runtime may not answer yet (measured: podman
    // inspect during `podman run` in UML sometimes found nothing): ask again a few times.
    const attempt = async (n: number): Promise<void> => {
      const info = await this.names.lookup(c, n > 0);
      if (Object.keys(info).length === 0 && n < NAME_RETRIES_MS.length && c.removedAt === undefined) {
        await new Promise((r) => setTimeout(r, NAME_RETRIES_MS[n]).unref());
        return attempt(n + 1);
      }
      Object.assign(c, { name: info.name ?? c.name, image: info.image ?? c.image, podName: info.podName ?? c.podName, podNamespace: info.podNamespace ?? c.podNamespace });
    };
    c.naming = attempt(0)
      .catch(() => undefined)
      .finally(() => (c.naming = undefined));
  }

  containerRemoved(c: ContainerRecord): void {
    const timer = setTimeout(() => {
      this.removals.delete(timer);
      this.serial(async () => {
        // Back again meanwhile (a reload, a restart with the same path): nothing to resolve.
        if (this.o.inventory.get(c.cgroupPath)) return;
        await this.send(this.coalescer.resolveNow(c.cgroupPath));
        this.names.forget(c.id);
      });
    }, REMOVAL_GRACE_MS);
    timer.unref();
    this.removals.add(timer);
  }

  event(ev: LimitEvent): void {
    if (this.o.config.alerts.metricOnlyKinds.includes(ev.kind as AlertKind)) return;
    this.serial(async () => {
      const ctx = await this.prepare(ev.cgroupPath, ev.kind);
      await this.send(this.coalescer.onEvent(ev, ctx));
    });
  }

  warning(t: WarningTransition, c: ContainerRecord | undefined): void {
    this.serial(async () => {
      const key = { cgroupPath: t.subject, kind: t.kind as AlertKind };
      if (t.state === 'clear') return this.send(this.coalescer.clear(key));
      const ctx = await this.prepare(t.subject, t.kind);
      if (t.kind === 'host-pids-warning') Object.assign(ctx, { current: t.value, limit: t.limit });
      await this.send(this.coalescer.raise(key, ctx, c?.id));
    });
  }

  /**
   * The policy value was not written because the container already runs more tasks (raise),
   * or it was written or no longer too low (clear).
   */
  policyTooLow(c: ContainerRecord, tooLow: { tasks?: number; policy: number } | null): void {
    this.serial(async () => {
      const key = { cgroupPath: c.cgroupPath, kind: 'pids-policy-too-low' as const };
      if (!tooLow) return this.send(this.coalescer.clear(key));
      const ctx = await this.prepare(c.cgroupPath, 'pids-policy-too-low');
      Object.assign(ctx, { current: tooLow.tasks ?? ctx.current, limit: tooLow.policy });
      await this.send(this.coalescer.raise(key, ctx, c.id));
    });
  }

  private async tick(): Promise<void> {
    this.serial(() => this.send(this.coalescer.tick()));
    await this.delivery?.resendFiring().catch((err) => this.o.log.warn({ err: (err as Error).message }, 'alertmanager re-send failed'));
  }

  /** Alerts go out in the order they were made. */
  private serial(f: () => Promise<unknown>): void {
    this.chain = this.chain.then(f).catch((err) => this.o.log.error({ err: (err as Error).message }, 'alert pipeline error'));
  }

  /**
   * After a restart: the restored alerts whose container (or pod) is not there any more
   * resolve now, as they would have had we seen it go.
   */
  resolveRestored(known: (cgroupPath: string) => boolean): void {
    this.serial(() => this.send(this.coalescer.resolveWhere((p) => p !== HOST_SUBJECT && !known(p))));
  }

  private scheduleSave(): void {
    if (this.saveTimer) return;
    this.saveTimer = setTimeout(() => this.saveState(), SAVE_DELAY_MS);
    this.saveTimer.unref();
  }

  private saveState(): void {
    if (this.saveTimer) clearTimeout(this.saveTimer);
    this.saveTimer = undefined;
    try {
      if (!this.stateFile) return;
      this.stateFile.write({ alerts: this.coalescer.snapshot() });
      this.o.stateWrites?.saved(this.stateFile.file);
    } catch (err) {
      if (this.o.stateWrites && this.stateFile) this.o.stateWrites.failed(this.stateFile.file, err);
      else this.o.log.warn({ err: (err as Error).message }, 'cannot save alert states: a restart would start them afresh');
    }
  }

  private async send(alerts: Alert[]): Promise<void> {
    if (alerts.length > 0) this.scheduleSave();
    for (const a of alerts) {
      this.o.log[a.state === 'firing' ? 'warn' : 'info']({ alert: { kind: a.kind, state: a.state, severity: a.severity, limitScope: a.limitScope, sequence: a.sequence, container: a.container, counters: a.counters, victim: a.victim, topCommands: a.topCommands } }, a.summary);
      this.o.onAlert?.(a);
      await this.delivery.enqueue(a);
    }
  }

  /** The container a cgroup is, or lies in; also one removed a moment ago. */
  private containerFor(cgroupPath: string): ContainerRecord | undefined {
    return this.o.inventory.owner(cgroupPath);
  }

  private baseContext(cgroupPath: string): AlertContext {
    if (cgroupPath === HOST_SUBJECT) return { limitScope: 'node' };
    const c = this.containerFor(cgroupPath);
    if (!c) {
      const pod = this.o.inventory.podOf(cgroupPath);
      return pod ? { limitScope: 'pod', container: { podUid: pod.podUid, podName: pod.podName, podNamespace: pod.podNamespace } } : {};
    }
    const own = c.cgroupPath === cgroupPath;
    const u = own ? c.usage : undefined;
    return {
      container: { id: c.id, runtime: c.runtime, name: c.name, image: c.image, podName: c.podName, podNamespace: c.podNamespace, podUid: c.podUid },
      memory: u ? { usageBytes: u.memoryUsage, limitBytes: u.memoryLimit } : undefined,
      limitScope: own ? 'container' : 'sub-cgroup',
    };
  }

  /** Gather what the alert will say: fresh counters, names (briefly awaited), top commands for PID kinds. */
  private async prepare(cgroupPath: string, kind: AlertKind): Promise<AlertContext> {
    const c = this.containerFor(cgroupPath);
    if (c?.naming) await Promise.race([c.naming, new Promise((r) => setTimeout(r, this.o.config.alerts.nameWaitMs).unref())]);
    const ctx = this.baseContext(cgroupPath);
    if (cgroupPath !== HOST_SUBJECT) {
      // A departed container's last reading stands in for the one its removal made impossible.
      const fresh = !c ? undefined : c.cgroupPath === cgroupPath ? this.o.usage.read(c) : this.o.usage.readCgroup(cgroupPath);
      const u = fresh ?? (c?.cgroupPath === cgroupPath ? c.usage : undefined);
      if (kind === 'pids-max' || kind === 'pids-warning' || kind === 'pids-policy-too-low') {
        // A container gone before its usage was first read (busybox sh gives up at its first
        // failed fork): the limit the policy saw at its last apply is still its limit.
        const applied = c && c.cgroupPath === cgroupPath ? c.applied?.newPidsMax : undefined;
        Object.assign(ctx, { current: u?.pidsCurrent, limit: u?.pidsMax ?? applied, topCommands: await this.top(cgroupPath), memory: undefined });
      } else if (u) {
        // The cgroup is gone and its last reading is from its first moment, before runc wrote
        // memory.max (measured: podman run --rm OOM-killed at once, UML 6.12): that "max" is
        // stale, as the kernel killed inside this cgroup's own limit. Unknown is the truth.
        const stale = fresh === undefined && u.memoryLimit === 'max' && (kind === 'memory-max' || kind === 'oom' || kind === 'oom-kill' || kind === 'oom-group-kill');
        const limit = stale ? undefined : u.memoryLimit;
        Object.assign(ctx, { current: u.memoryUsage, limit, memory: { usageBytes: u.memoryUsage, limitBytes: limit } });
      }
    }
    return ctx;
  }

  private async top(cgroupPath: string): Promise<{ comm: string; tasks: number }[] | undefined> {
    const cached = this.tops.get(cgroupPath);
    if (cached && Date.now() - cached.at < TOP_CACHE_MS) return cached.top;
    let tids: number[] | null;
    try {
      tids = await this.o.cgroups.readTasks(cgroupPath);
    } catch {
      return undefined;
    }
    if (!tids || tids.length === 0) return undefined;
    const step = Math.max(1, tids.length / TOP_SAMPLE);
    const sample = step === 1 ? tids : Array.from({ length: Math.floor(tids.length / step) }, (_, i) => tids![Math.floor(i * step)]!);
    const top = topCommands(this.o.config.paths.procRoot, sample, TOP_N).map((t) => ({ comm: t.comm, tasks: Math.round(t.tasks * step) }));
    // A cache, not state: what is older than TOP_CACHE_MS goes (a fork bomb's burst reuses one census).
    const now = Date.now();
    for (const [k, v] of this.tops) if (now - v.at >= TOP_CACHE_MS) this.tops.delete(k);
    this.tops.set(cgroupPath, { at: now, top });
    return top;
  }
}
