import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { buildInfo } from '../build-info';

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
  /** Where its limit came from: creation (an OCI hook, the Docker wrapper), daemon (afterwards), runtime. */
  limitOrigin?: string;
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
interface Family {
  name: string;
  help: string;
  type: 'gauge' | 'counter';
  /** The value of one container's series; undefined: no series. */
  value: (c: ContainerSnapshot) => number | undefined;
}

const live = (f: (c: ContainerSnapshot) => number | undefined) => (c: ContainerSnapshot) => (c.departed ? undefined : f(c));
const num = (v: number | 'max' | undefined): number | undefined => (typeof v === 'number' ? v : undefined);

const FAMILIES: Family[] = [
  { name: 'container_pids_current', type: 'gauge', help: 'Tasks in the container cgroup (pids.current).', value: live((c) => c.pidsCurrent) },
  { name: 'container_pids_max', type: 'gauge', help: 'The container cgroup pids.max; absent when unlimited ("max").', value: live((c) => num(c.pidsMax)) },
  { name: 'container_pids_policy_max', type: 'gauge', help: 'The pids.max the policy computes for the container.', value: live((c) => c.policyPidsMax) },
  { name: 'container_policy_too_low', type: 'gauge', help: '1 when the policy value was not written because the container already runs more tasks than it allows (plus headroom).', value: live((c) => (c.policyTooLow ? 1 : undefined)) },
  { name: 'container_pids_limit_hits_total', type: 'counter', help: 'Forks rejected at a pids limit, attributed to this container, since cgwatchdog first saw it.', value: (c) => c.pidsLimitHits },
  { name: 'container_memory_usage_bytes', type: 'gauge', help: 'Memory charged to the container cgroup.', value: live((c) => c.memoryUsage) },
  { name: 'container_memory_limit_bytes', type: 'gauge', help: 'The container cgroup memory limit; absent when unlimited.', value: live((c) => num(c.memoryLimit)) },
  { name: 'container_oom_events_total', type: 'counter', help: 'Memory cgroup OOM events (memory.events oom) since cgwatchdog first saw the container.', value: (c) => c.oomEvents },
  { name: 'container_oom_kills_total', type: 'counter', help: 'Processes OOM-killed in the container since cgwatchdog first saw it.', value: (c) => c.oomKills },
  { name: 'container_memory_max_events_total', type: 'counter', help: 'Times the container reached its memory limit and reclaimed (memory.events max; v1 failcnt) since cgwatchdog first saw it. Not an alert by default (alerts.metricOnlyKinds).', value: (c) => c.memoryMaxEvents ?? 0 },
];

/** A label value as the text format wants it: backslash, double quote and newline escaped. */
function esc(v: string): string {
  return /[\\"\n]/.test(v) ? v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n') : v;
}

/** A sample value as prom-client writes it. */
function fmt(v: number): string {
  return Number.isNaN(v) ? 'NaN' : v === Infinity ? '+Inf' : v === -Infinity ? '-Inf' : String(v);
}

const CHUNK_BYTES = 64 * 1024;

/**
 * The per-container families in Prometheus text format: keyed by id alone (a name, pod or
 * namespace learned a moment later would otherwise start a second series of the same
 * container); the names in cgwatchdog_container_info, to join on `id`.
 *
 * Made in pieces of about CHUNK_BYTES, each joined from an array of flat strings, for the
 * server to write one by one. Measured at 5,000 containers (55,000 lines, 6.5 MB): one string
 * grown with += was a rope that Buffer.byteLength flattened again in the write (most of a
 * 110 ms scrape), and holding the whole text took RSS from 109 to 198 MB over ten scrapes;
 * keeping each line between scrapes cost 8.5 MB of heap. This way a scrape is ~5-7 ms of
 * formatting and holds one piece at a time.
 */
export function* renderChunks(containers: Iterable<ContainerSnapshot>): Generator<string> {
  const list: ContainerSnapshot[] = [];
  const ids: string[] = [];
  for (const c of containers) {
    list.push(c);
    ids.push(esc(c.id));
  }
  const frags = ids.map((id) => ['{id="', id, '"} '].join(''));
  let parts: string[] = [];
  let size = 0;
  const add = (...xs: string[]): string | undefined => {
    for (const x of xs) {
      parts.push(x);
      size += x.length;
    }
    if (size < CHUNK_BYTES) return undefined;
    const out = parts.join('');
    parts = [];
    size = 0;
    return out;
  };
  for (const f of FAMILIES) {
    const name = P + f.name;
    let out = add(`# HELP ${name} ${f.help}\n# TYPE ${name} ${f.type}\n`);
    if (out) yield out;
    for (let i = 0; i < list.length; i++) {
      const v = f.value(list[i]!);
      if (v !== undefined && (out = add(name, frags[i]!, fmt(v), '\n'))) yield out;
    }
  }
  let out = add(`# HELP ${P}container_policy_cores Cores the policy counts for the container; source is quota, cpuset or host.\n# TYPE ${P}container_policy_cores gauge\n`);
  if (out) yield out;
  for (let i = 0; i < list.length; i++) {
    const c = list[i]!;
    if (!c.departed && c.coresUsed !== undefined && (out = add(P, 'container_policy_cores{id="', ids[i]!, '",source="', esc(c.coresSource ?? ''), '"} ', fmt(c.coresUsed), '\n'))) yield out;
  }
  out = add(`# HELP ${P}container_limit_origin Where the container's pids limit came from (1): origin="creation" (an OCI hook or the Docker wrapper, before its first process), "daemon" (only after it started), "runtime" (the runtime's own limit, kept).\n# TYPE ${P}container_limit_origin gauge\n`);
  if (out) yield out;
  for (let i = 0; i < list.length; i++) {
    const c = list[i]!;
    if (!c.departed && c.limitOrigin !== undefined && (out = add(P, 'container_limit_origin{id="', ids[i]!, '",origin="', esc(c.limitOrigin), '"} 1\n'))) yield out;
  }
  out = add(`# HELP ${P}container_info Names of a container (1): join on id, e.g. cgwatchdog_container_pids_current * on(id) group_left(name, pod, namespace) cgwatchdog_container_info.\n# TYPE ${P}container_info gauge\n`);
  if (out) yield out;
  for (let i = 0; i < list.length; i++) {
    const c = list[i]!;
    out = add(P, 'container_info{id="', ids[i]!, '",name="', esc(c.name ?? ''), '",image="', esc(c.image ?? ''), '",runtime="', esc(c.runtime), '",pod="', esc(c.pod ?? ''), '",namespace="', esc(c.namespace ?? ''), '"} 1\n');
    if (out) yield out;
  }
  if (parts.length > 0) yield parts.join('');
}

/** The per-container families, as one string. */
export function renderContainers(containers: Iterable<ContainerSnapshot>): string {
  return [...renderChunks(containers)].join('');
}

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
  stateWriteFailuresTotal: Counter<'file'>;
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
  /** Entries of the daemon's per-container state, by map: flat under churn, or a leak. */
  stateEntries: Gauge<'map'>;
  /** OCI hook / Docker wrapper runs that could not set the limit, from their records. */
  hookFailuresTotal: Counter<'stage'>;
}

export interface Metrics {
  registry: MetricsRegistry;
  daemon: DaemonMetrics;
}

export interface CreateMetricsOptions {
  /** Node process metrics (process_*, nodejs_*), as prom-client names them. Default true. */
  defaultMetrics?: boolean;
}

/** prom-client's registry, with the per-container families appended to its text. */
export class MetricsRegistry extends Registry {
  extraChunks: () => Iterable<string> = () => [];

  /** prom-client's own families, then the per-container ones in pieces (see renderChunks). */
  async *textChunks(): AsyncGenerator<string> {
    yield await super.metrics();
    yield* this.extraChunks();
  }

  override async metrics(): Promise<string> {
    let out = '';
    for await (const c of this.textChunks()) out += c;
    return out;
  }
}

export function createMetrics(source: MetricsSource, opts: CreateMetricsOptions = {}): Metrics {
  const registry = new MetricsRegistry();
  // The event-loop lag histogram samples on a libuv timer: prom-client's default of 10 ms
  // wakes an idle daemon 100 times a second; 100 ms is precise enough for a lag gauge.
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
  const registers = [registry];

  // The per-container families are written by hand, not through prom-client: at 5,000
  // containers (55,000 series) prom-client's reset-and-set per scrape (a label hash per series)
  // and its formatting took 340-420 ms a scrape and left megabytes of garbage (profile:
  // getMetricsAsString, Gauge.get, setValue, hashObject). The text below is the same
  // exposition format, family by family.
  registry.extraChunks = () => renderChunks(source.containers());
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
  // As Prometheus' own *_build_info: 1, the facts in labels (commit "" when dist/ does not know it).
  const info = buildInfo();
  new Gauge({ name: `${P}build_info`, help: 'The cgwatchdog build (1): version, Node.js version, git commit of dist/ ("" when unknown).', labelNames: ['version', 'node', 'commit'], registers }).set({ version: info.version, node: info.node, commit: info.commit ?? '' }, 1);
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
    outboxDroppedTotal: new Counter({ name: `${P}outbox_dropped_total`, help: 'Outbox entries dropped undelivered: the oldest when the outbox was full, or the waiting entries of a sink a reload removed (entries past their TTL are cgwatchdog_alerts_total{outcome="expired"}).', registers }),
    outboxWriteFailuresTotal: new Counter({ name: `${P}outbox_write_failures_total`, help: 'Outbox writes the state directory refused (ENOSPC, EROFS, EIO); those alerts are delivered from memory.', registers }),
    stateWriteFailuresTotal: new Counter({ name: `${P}state_write_failures_total`, help: 'Saves of a state file (alert-state.json, written-pids-max.json) the state directory refused (ENOSPC, EROFS, EIO), by file; its data stays in memory, a restart would lose what changed.', labelNames: ['file'], registers }),
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
    hookFailuresTotal: new Counter({ name: `${P}hook_failures_total`, help: 'OCI hook and Docker wrapper runs that could not set a container\'s PID limit (fail open: it started without; fail closed: refused), by stage, as the daemon found their records.', labelNames: ['stage'], registers }),
    stateEntries: new Gauge({ name: `${P}state_entries`, help: 'Entries of the daemon\'s per-container state by map (containers, departed containers, watched cgroups, counter baselines, kept-open fds, fast-swept and safety-net cgroups): back to where it was after a churn, or a leak.', labelNames: ['map'], registers }),
    kernelCapability: new Gauge({ name: `${P}kernel_capability`, help: 'What the kernel was measured to deliver at start, on a cgroup of the probe\'s own: 1 yes, 0 no, -1 unknown (the probe could not establish it; the sweep covers it).', labelNames: ['capability'], registers }),
  };

  return { registry, daemon };
}
