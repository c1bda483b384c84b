import type { HostUsage } from '../detect/usage-monitor';
import type { LimitEvent } from '../detect/event';
import type { ContainerRecord } from '../discovery/container';
import type { Logger } from '../log';
import { createMetrics, type ContainerSnapshot, type DaemonMetrics, type MetricsSource } from './registry';
import { startMetricsServer, type MetricsServer, type MetricsServerOptions } from './server';

/** What the metrics read: the container records, the host's usage, the sources' health. Nothing else of the daemon. */
export interface MetricsView {
  all(): Iterable<ContainerRecord>;
  departedAll(): Iterable<ContainerRecord>;
  /** The container a cgroup belongs to (also a sub-cgroup's, and one removed a moment ago). */
  owner(cgroupPath: string): ContainerRecord | undefined;
  hostUsage(): HostUsage;
  health(): { ok: boolean; detail: string; degraded?: string[] };
}

/** The pids.max a container has now: as last read, else as the policy left it. */
function pidsMaxOf(c: ContainerRecord): number | 'max' | undefined {
  const r = c.applied;
  return c.usage?.pidsMax ?? (r?.written ? r.newPidsMax : r?.oldPidsMax);
}

/**
 * The daemon's state as Prometheus sees it. Scrapes read memory only (each record's last
 * applied result and usage, its hit counts): at a thousand containers a scrape that read
 * cgroup files would be slow and would race the sweep.
 */
export class DaemonMetricsState implements MetricsSource {
  daemon!: DaemonMetrics;

  constructor(private readonly view: MetricsView) {}

  onEvent(e: LimitEvent): void {
    this.daemon?.eventsTotal.inc({ kind: e.kind, source: e.source }, e.count);
    if (e.latencyMs !== undefined) this.daemon?.detectionLatencySeconds.observe({ source: e.source }, e.latencyMs / 1000);
    // A hit in a container's sub-cgroup (or of one just removed) is the container's; a pod's
    // is in the host-level counter above.
    const owner = this.view.owner(e.cgroupPath);
    if (!owner) return;
    const h = owner.hits;
    owner.lastEvent = { kind: e.kind, at: e.at };
    if (e.kind === 'pids-max') h.pidsLimitHits += e.count;
    else if (e.kind === 'oom') h.oomEvents += e.count;
    else if (e.kind === 'oom-kill') h.oomKills += e.count;
    else if (e.kind === 'memory-max') h.memoryMaxEvents += e.count;
  }

  *containers(): Iterable<ContainerSnapshot> {
    for (const c of this.listed()) {
      const r = c.applied;
      const u = c.usage;
      yield {
        id: c.id,
        name: c.name,
        runtime: c.runtime,
        pod: c.podName,
        namespace: c.podNamespace,
        cgroupPath: c.cgroupPath,
        pidsCurrent: u?.pidsCurrent,
        pidsMax: pidsMaxOf(c),
        policyPidsMax: r?.policyValue ?? undefined,
        policyTooLow: c.policyTooLow,
        image: c.image,
        departed: c.removedAt !== undefined,
        coresUsed: r?.cores,
        coresSource: r?.coresSource,
        limitOrigin: c.limitOrigin,
        memoryUsage: u?.memoryUsage,
        memoryLimit: u?.memoryLimit,
        // Named, not spread: one object shape for every snapshot (a spread was ~9 % of a scrape's CPU at 5,000).
        pidsLimitHits: c.hits.pidsLimitHits,
        oomEvents: c.hits.oomEvents,
        oomKills: c.hits.oomKills,
        memoryMaxEvents: c.hits.memoryMaxEvents,
      };
    }
  }

  /**
   * The live containers, then the removed ones still remembered that have counts to scrape
   * (the OOM kill that ended one): a churn of thousands of quiet ones adds no series.
   */
  private *listed(): Iterable<ContainerRecord> {
    yield* this.view.all();
    for (const c of this.view.departedAll()) if (c.hits.pidsLimitHits + c.hits.oomEvents + c.hits.oomKills + c.hits.memoryMaxEvents > 0) yield c;
  }

  host() {
    let sum = 0;
    for (const c of this.view.all()) {
      const max = pidsMaxOf(c);
      if (typeof max === 'number') sum += max;
    }
    const h = this.view.hostUsage();
    return { pidMax: h.pidMax, threadsMax: h.threadsMax, tasks: h.tasks, sumContainersPidsMax: sum };
  }

  detectionRunning() {
    return this.view.health();
  }
}

/** Start /metrics and /healthz; returns the server (the handles to observe with are on `state`). */
export async function serveMetrics(state: DaemonMetricsState, listen: string, log: Logger, web?: MetricsServerOptions['web']): Promise<MetricsServer> {
  const m = createMetrics(state);
  state.daemon = m.daemon;
  return startMetricsServer({ listen, registry: m.registry, source: state, logger: log, ...(web ? { web } : {}) });
}
