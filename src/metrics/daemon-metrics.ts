import type { Daemon } from '../daemon';
import type { LimitEvent } from '../detect/event';
import type { Container } from '../discovery/container';
import type { Logger } from '../log';
import { createMetrics, type ContainerSnapshot, type DaemonMetrics, type MetricsSource } from './registry';
import { startMetricsServer, type MetricsServer } from './server';

interface Hits {
  pidsLimitHits: number;
  oomEvents: number;
  oomKills: number;
}

/**
 * The daemon's state as Prometheus sees it. Scrapes read memory only (the last applied
 * result, the usage monitor's last read, event totals): at a thousand containers a scrape
 * that read cgroup files would be slow and would race the sweep.
 */
export class DaemonMetricsState implements MetricsSource {
  readonly hits = new Map<string, Hits>();
  daemon!: DaemonMetrics;

  constructor(private readonly d: Daemon) {}

  onEvent(e: LimitEvent): void {
    this.daemon?.eventsTotal.inc({ kind: e.kind, source: e.source }, e.count);
    if (e.latencyMs !== undefined) this.daemon?.detectionLatencySeconds.observe({ source: e.source }, e.latencyMs / 1000);
    // A hit in a container's sub-cgroup (or of one just removed) is the container's.
    const key = this.d.inventory.owner(e.cgroupPath)?.cgroupPath ?? e.cgroupPath;
    const h = this.hits.get(key) ?? { pidsLimitHits: 0, oomEvents: 0, oomKills: 0 };
    if (e.kind === 'pids-max') h.pidsLimitHits += e.count;
    else if (e.kind === 'oom') h.oomEvents += e.count;
    else if (e.kind === 'oom-kill') h.oomKills += e.count;
    this.hits.set(key, h);
  }

  forget(cgroupPath: string): void {
    this.hits.delete(cgroupPath);
  }

  *containers(): Iterable<ContainerSnapshot> {
    for (const c of this.listed()) {
      const r = this.d.applied.get(c.cgroupPath);
      const u = this.d.usage?.usage.get(c.cgroupPath) ?? c.lastUsage;
      const h = this.hits.get(c.cgroupPath);
      yield {
        id: c.id,
        name: c.name,
        runtime: c.runtime,
        pod: c.podName,
        namespace: c.podNamespace,
        cgroupPath: c.cgroupPath,
        pidsCurrent: u?.pidsCurrent,
        pidsMax: u?.pidsMax ?? (r?.written ? r.newPidsMax : r?.oldPidsMax),
        policyPidsMax: r?.policyValue ?? undefined,
        policyTooLow: c.policyTooLow,
        image: c.image,
        departed: this.d.inventory.get(c.cgroupPath) !== c,
        coresUsed: r?.cores,
        coresSource: r?.coresSource,
        memoryUsage: u?.memoryUsage,
        memoryLimit: u?.memoryLimit,
        pidsLimitHits: h?.pidsLimitHits ?? 0,
        oomEvents: h?.oomEvents ?? 0,
        oomKills: h?.oomKills ?? 0,
      };
    }
  }

  /**
   * The live containers, then the removed ones the inventory still remembers that have counts
   * to scrape (the OOM kill that ended one): a churn of thousands of quiet ones adds no series.
   */
  private *listed(): Iterable<Container> {
    yield* this.d.inventory.all();
    for (const c of this.d.inventory.departedAll()) if (this.hits.has(c.cgroupPath)) yield c;
  }

  host() {
    let sum = 0;
    for (const c of this.d.inventory.all()) {
      const r = this.d.applied.get(c.cgroupPath);
      const max = this.d.usage?.usage.get(c.cgroupPath)?.pidsMax ?? (r?.written ? r.newPidsMax : r?.oldPidsMax);
      if (typeof max === 'number') sum += max;
    }
    const h = this.d.usage?.host ?? {};
    return { pidMax: h.pidMax, threadsMax: h.threadsMax, tasks: h.tasks, sumContainersPidsMax: sum };
  }

  detectionRunning() {
    const h = this.d.engine?.health() ?? { ok: false, detail: 'detection not started' };
    const ob = this.d.alerts?.outbox;
    if (!ob?.lastWriteError) return h;
    const disk = `alert outbox cannot write to disk (${ob.lastWriteError}): ${ob.inMemory} alerts held in memory`;
    return { ...h, degraded: [...(h.degraded ?? []), disk] };
  }
}

/** Start /metrics and /healthz for a daemon; returns the server and the handles to observe with. */
export async function serveMetrics(d: Daemon, state: DaemonMetricsState, listen: string, log: Logger): Promise<MetricsServer> {
  const m = createMetrics(state);
  state.daemon = m.daemon;
  return startMetricsServer({ listen, registry: m.registry, source: state, logger: log });
}
