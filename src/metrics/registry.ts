import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

// One registry of our own (not prom-client's global one), so tests and a reload can make a
// fresh one. Per-container and host series are read at scrape time from an in-memory
// snapshot the daemon keeps up to date: a scrape never touches a cgroup file, so its cost is
// flat in the number of containers (cAdvisor's /metrics slows down past a few hundred because
// it reads at scrape time). Each scrape resets those series and fills them again, so a
// removed container's series disappear.
//
// container_pids_max / container_memory_limit_bytes are omitted for an unlimited ("max")
// cgroup rather than exported as +Inf: an absent series reads "no limit", and ratio queries
// (pids_current / pids_max) simply skip unlimited containers instead of yielding 0.

export interface ContainerSnapshot {
  id: string;
  name?: string;
  runtime: string;
  pod?: string;
  namespace?: string;
  cgroupPath: string;
  pidsCurrent?: number;
  pidsMax?: number | 'max';
  policyPidsMax?: number;
  /** The policy value was not written: the container runs more tasks than it allows. */
  policyTooLow?: boolean;
  coresUsed?: number;
  /** Where coresUsed came from: quota | cpuset | host. */
  coresSource?: string;
  memoryUsage?: number;
  memoryLimit?: number | 'max';
  /** Cumulative since the daemon first saw the container. */
  pidsLimitHits: number;
  oomEvents: number;
  oomKills: number;
  memoryMaxEvents?: number;
  image?: string;
  /** Removed a moment ago: only its counters (and info) are kept, for a last scrape. */
  departed?: boolean;
}

export interface HostSnapshot {
  pidMax?: number;
  threadsMax?: number;
  tasks?: number;
  sumContainersPidsMax?: number;
}

export interface MetricsSource {
  containers(): Iterable<ContainerSnapshot>;
  host(): HostSnapshot;
  detectionRunning(): { ok: boolean; detail: string };
}

const P = 'cgwatchdog_';
/**
 * Per-container series carry the id alone: a name, pod or namespace learned a moment later
 * would otherwise start a second series of the same container. They are in
 * cgwatchdog_container_info, to join on `id`.
 */
const CONTAINER_LABELS = ['id'] as const;
type ContainerLabel = (typeof CONTAINER_LABELS)[number];
const INFO_LABELS = ['id', 'name', 'image', 'runtime', 'pod', 'namespace'] as const;

/** Detection latency buckets: 0.5 ms to 5 s. */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The handles the daemon increments and observes. */
export interface DaemonMetrics {
  eventsTotal: Counter<'kind' | 'source'>;
  detectionLatencySeconds: Histogram<'source'>;
  alertsTotal: Counter<'sink' | 'outcome'>;
  outboxDepth: Gauge;
  outboxDroppedTotal: Counter;
  outboxWriteFailuresTotal: Counter;
  sourceUp: Gauge<'source'>;
  kmsgRestartsTotal: Counter;
  watchFailuresTotal: Counter<'code'>;
  watchesActive: Gauge<'type'>;
  sweepDurationSeconds: Histogram;
  reconcileDurationSeconds: Histogram;
  /** From discovery seeing a container's cgroup to its pids.max written. */
  limitApplyLatencySeconds: Histogram;
  pidsMaxWritesTotal: Counter<'result'>;
  /** result: parsed | unparsed | wrapped. */
  kmsgRecordsTotal: Counter<'result'>;
  /** What the kernel was measured to deliver at start: 1 yes, 0 no, -1 unknown (not established). */
  kernelCapability: Gauge<'capability'>;
}

export interface Metrics {
  registry: Registry;
  daemon: DaemonMetrics;
}

export interface CreateMetricsOptions {
  /** Node process metrics (process_*, nodejs_*), as prom-client names them. Default true. */
  defaultMetrics?: boolean;
}

export function createMetrics(source: MetricsSource, opts: CreateMetricsOptions = {}): Metrics {
  const registry = new Registry();
  // The event-loop lag histogram samples on a libuv timer: prom-client's default of 10 ms
  // wakes an idle daemon 100 times a second; 100 ms is precise enough for a lag gauge.
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
  const registers = [registry];

  // Every per-container metric's collect() calls refresh(); the first call of a scrape does
  // the work for all of them. prom-client starts every metric's get() in one synchronous
  // loop, so a flag cleared on the next turn of the event loop marks "this scrape".
  let fresh = false;
  const refresh = (): void => {
    if (fresh) return;
    fresh = true;
    setImmediate(() => {
      fresh = false;
    });
    fillContainers();
  };

  const cGauge = (name: string, help: string) =>
    new Gauge<ContainerLabel>({ name: P + name, help, labelNames: CONTAINER_LABELS, registers, collect: refresh });
  const cCounter = (name: string, help: string) =>
    new Counter<ContainerLabel>({ name: P + name, help, labelNames: CONTAINER_LABELS, registers, collect: refresh });

  const pidsCurrent = cGauge('container_pids_current', 'Tasks in the container cgroup (pids.current).');
  const pidsMax = cGauge('container_pids_max', 'The container cgroup pids.max; absent when unlimited ("max").');
  const policyMax = cGauge('container_pids_policy_max', 'The pids.max the policy computes for the container.');
  const policyTooLow = cGauge('container_policy_too_low', '1 when the policy value was not written because the container already runs more tasks than it allows (plus headroom).');
  const limitHits = cCounter('container_pids_limit_hits_total', 'Forks rejected at a pids limit, attributed to this container, since cgwatchdog first saw it.');
  const memUsage = cGauge('container_memory_usage_bytes', 'Memory charged to the container cgroup.');
  const memLimit = cGauge('container_memory_limit_bytes', 'The container cgroup memory limit; absent when unlimited.');
  const oomEvents = cCounter('container_oom_events_total', 'Memory cgroup OOM events (memory.events oom) since cgwatchdog first saw the container.');
  const oomKills = cCounter('container_oom_kills_total', 'Processes OOM-killed in the container since cgwatchdog first saw it.');
  const memMaxEvents = cCounter('container_memory_max_events_total', 'Times the container reached its memory limit and reclaimed (memory.events max; v1 failcnt) since cgwatchdog first saw it. Not an alert by default (alerts.metricOnlyKinds).');
  const cores = new Gauge<ContainerLabel | 'source'>({
    name: `${P}container_policy_cores`,
    help: 'Cores the policy counts for the container; source is quota, cpuset or host.',
    labelNames: [...CONTAINER_LABELS, 'source'],
    registers,
    collect: refresh,
  });

  const info = new Gauge<(typeof INFO_LABELS)[number]>({
    name: `${P}container_info`,
    help: 'Names of a container (1): join on id, e.g. cgwatchdog_container_pids_current * on(id) group_left(name, pod, namespace) cgwatchdog_container_info.',
    labelNames: INFO_LABELS,
    registers,
    collect: refresh,
  });
  const perContainer: Array<Gauge<ContainerLabel> | Counter<ContainerLabel> | Gauge<(typeof INFO_LABELS)[number]>> = [info, pidsCurrent, pidsMax, policyMax, policyTooLow, limitHits, memUsage, memLimit, oomEvents, oomKills, memMaxEvents];

  function fillContainers(): void {
    for (const m of perContainer) m.reset();
    cores.reset();
    for (const c of source.containers()) {
      const l: Record<ContainerLabel, string> = { id: c.id };
      info.set({ id: c.id, name: c.name ?? '', image: c.image ?? '', runtime: c.runtime, pod: c.pod ?? '', namespace: c.namespace ?? '' }, 1);
      limitHits.inc(l, c.pidsLimitHits);
      oomEvents.inc(l, c.oomEvents);
      oomKills.inc(l, c.oomKills);
      memMaxEvents.inc(l, c.memoryMaxEvents ?? 0);
      if (c.departed) continue;
      if (c.pidsCurrent !== undefined) pidsCurrent.set(l, c.pidsCurrent);
      if (typeof c.pidsMax === 'number') pidsMax.set(l, c.pidsMax);
      if (c.policyPidsMax !== undefined) policyMax.set(l, c.policyPidsMax);
      if (c.policyTooLow) policyTooLow.set(l, 1);
      if (c.memoryUsage !== undefined) memUsage.set(l, c.memoryUsage);
      if (typeof c.memoryLimit === 'number') memLimit.set(l, c.memoryLimit);
      if (c.coresUsed !== undefined) cores.set({ ...l, source: c.coresSource ?? '' }, c.coresUsed);
    }
  }

  const hostGauge = (name: string, help: string, pick: (h: HostSnapshot) => number | undefined) =>
    new Gauge({
      name: P + name,
      help,
      registers,
      collect() {
        this.reset();
        const v = pick(source.host());
        if (v !== undefined && Number.isFinite(v)) this.set(v);
      },
    });
  hostGauge('host_pid_max', 'kernel.pid_max of the host PID namespace.', (h) => h.pidMax);
  hostGauge('host_tasks', 'Tasks (threads) on the host.', (h) => h.tasks);
  hostGauge('host_threads_max', 'kernel.threads-max.', (h) => h.threadsMax);
  // Not "..._sum": promtool's lint reserves that suffix for histograms and summaries.
  hostGauge('host_containers_pids_max', 'Sum of the numeric pids.max of all containers.', (h) => h.sumContainersPidsMax);
  hostGauge('host_pids_overcommit_ratio', 'Sum of container pids.max divided by kernel.pid_max.', (h) =>
    h.sumContainersPidsMax !== undefined && h.pidMax ? h.sumContainersPidsMax / h.pidMax : undefined,
  );

  const daemon: DaemonMetrics = {
    eventsTotal: new Counter({ name: `${P}events_total`, help: 'Limit-hit events emitted, by kind and the source that saw them first.', labelNames: ['kind', 'source'], registers }),
    detectionLatencySeconds: new Histogram({
      name: `${P}detection_latency_seconds`,
      help: 'From the kernel event to its first sight by cgwatchdog.',
      labelNames: ['source'],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    alertsTotal: new Counter({ name: `${P}alerts_total`, help: 'Alert deliveries by sink and outcome.', labelNames: ['sink', 'outcome'], registers }),
    outboxDepth: new Gauge({ name: `${P}outbox_depth`, help: 'Alerts waiting in the outbox.', registers }),
    outboxDroppedTotal: new Counter({ name: `${P}outbox_dropped_total`, help: 'Alerts dropped because the outbox was full.', registers }),
    outboxWriteFailuresTotal: new Counter({ name: `${P}outbox_write_failures_total`, help: 'Outbox writes the state directory refused (ENOSPC, EROFS, EIO); those alerts are delivered from memory.', registers }),
    sourceUp: new Gauge({ name: `${P}source_up`, help: 'Whether each detection source (kmsg, inotify, sweep) is doing its job: 1 up, 0 down or degraded.', labelNames: ['source'], registers }),
    kmsgRestartsTotal: new Counter({ name: `${P}kmsg_restarts_total`, help: 'Times the /dev/kmsg reader was started again after it died.', registers }),
    watchFailuresTotal: new Counter({ name: `${P}watch_failures_total`, help: 'inotify watches refused (ENOSPC: fs.inotify.max_user_watches reached; EMFILE; EACCES), by errno code. What is not watched is rescanned and swept.', labelNames: ['code'], registers }),
    watchesActive: new Gauge({ name: `${P}watches_active`, help: 'Active inotify watches by type.', labelNames: ['type'], registers }),
    sweepDurationSeconds: new Histogram({ name: `${P}sweep_duration_seconds`, help: 'Duration of one counter sweep.', buckets: DURATION_BUCKETS, registers }),
    reconcileDurationSeconds: new Histogram({ name: `${P}reconcile_duration_seconds`, help: 'Duration of one inventory reconcile.', buckets: DURATION_BUCKETS, registers }),
    limitApplyLatencySeconds: new Histogram({
      name: `${P}limit_apply_latency_seconds`,
      help: 'From a container cgroup seen to its pids.max written.',
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    pidsMaxWritesTotal: new Counter({ name: `${P}pids_max_writes_total`, help: 'pids.max writes by result.', labelNames: ['result'], registers }),
    kmsgRecordsTotal: new Counter({ name: `${P}kmsg_records_total`, help: '/dev/kmsg records read, by result (parsed, unparsed, wrapped).', labelNames: ['result'], registers }),
    kernelCapability: new Gauge({ name: `${P}kernel_capability`, help: 'What the kernel was measured to deliver at start, on a cgroup of the probe\'s own: 1 yes, 0 no, -1 unknown (the probe could not establish it; the sweep covers it).', labelNames: ['capability'], registers }),
  };

  return { registry, daemon };
}
