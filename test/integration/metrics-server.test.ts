import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createMetrics, type ContainerSnapshot, type HostSnapshot, type MetricsSource } from '../../src/metrics/registry';
import { startMetricsServer } from '../../src/metrics/server';
import { silentLogger } from '../../src/log';
import { need } from '../helpers/prereq';
import { PROMTOOL, promtoolCheckMetrics } from '../helpers/prometheus';


class State implements MetricsSource {
  containers_ = new Map<string, ContainerSnapshot>();
  hostSnap: HostSnapshot = { pidMax: 32768, threadsMax: 190000, tasks: 420, sumContainersPidsMax: 0 };
  running = { ok: true, detail: 'inotify 6 watches, kmsg reading, sweep every 1000 ms' };
  containers(): Iterable<ContainerSnapshot> {
    return this.containers_.values();
  }
  host(): HostSnapshot {
    return this.hostSnap;
  }
  detectionRunning() {
    return this.running;
  }
}

function container(i: number, over: Partial<ContainerSnapshot> = {}): ContainerSnapshot {
  const id = i.toString(16).padStart(64, '0');
  return {
    id,
    runtime: 'podman',
    cgroupPath: `/libpod_parent/libpod-${id}`,
    pidsCurrent: 10 + i,
    pidsMax: 6144,
    policyPidsMax: 6144,
    coresUsed: 6,
    coresSource: 'host',
    memoryUsage: 1_000_000 + i,
    memoryLimit: 'max',
    pidsLimitHits: i,
    oomEvents: 0,
    oomKills: 0,
    ...over,
  };
}

async function get(port: number, path: string): Promise<{ status: number; type: string | null; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, type: r.headers.get('content-type'), body: await r.text() };
}

/** Value of one sample line, by metric name and a label substring. */
function sample(text: string, name: string, labelPart: string): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (!line.includes(labelPart)) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

test('metrics server: real scrape of 3 containers, removal, healthz, promtool', async (t) => {
  const state = new State();
  state.containers_.set('a', container(1, { name: 'web', pod: 'web-7d9', namespace: 'shop', memoryLimit: 512 * 1024 * 1024, coresSource: 'quota', coresUsed: 2 }));
  state.containers_.set('b', container(2, { pidsMax: 'max', pidsLimitHits: 7, oomEvents: 2, oomKills: 3, memoryMaxEvents: 41 }));
  state.containers_.set('c', container(3, { coresSource: 'cpuset', coresUsed: 4 }));
  state.hostSnap.sumContainersPidsMax = 2 * 6144;

  const { registry, daemon } = createMetrics(state);
  daemon.eventsTotal.inc({ kind: 'pids-max', source: 'inotify' }, 2);
  daemon.detectionLatencySeconds.observe({ source: 'kmsg' }, 0.0007);
  daemon.alertsTotal.inc({ sink: 'webhook', outcome: 'sent' });
  daemon.outboxDepth.set(4);
  daemon.watchesActive.set({ type: 'pids.events' }, 3);
  daemon.pidsMaxWritesTotal.inc({ result: 'ok' });
  daemon.kmsgRecordsTotal.inc({ result: 'parsed' });
  daemon.sweepDurationSeconds.observe(0.003);
  daemon.reconcileDurationSeconds.observe(0.02);
  daemon.limitApplyLatencySeconds.observe(0.004);

  const srv = await startMetricsServer({ listen: '127.0.0.1:0', registry, source: state, logger: silentLogger() });
  t.after(() => srv.close());
  assert.ok(srv.port > 0);

  const m1 = await get(srv.port, '/metrics');
  assert.equal(m1.status, 200);
  assert.equal(m1.type, registry.contentType);
  const text = m1.body;
  const idA = container(1).id;
  const idB = container(2).id;
  const idC = container(3).id;
  assert.equal(sample(text, 'cgwatchdog_container_pids_current', `id="${idA}"`), 11);
  // Keyed by id alone; the names are in one info series per container.
  assert.match(text, new RegExp(`^cgwatchdog_container_pids_current\\{id="${idA}"\\} 11$`, 'm'));
  assert.match(text, new RegExp(`^cgwatchdog_container_info\\{id="${idA}",name="web",image="",runtime="podman",pod="web-7d9",namespace="shop"\\} 1$`, 'm'));
  assert.match(text, new RegExp(`^cgwatchdog_container_info\\{id="${idB}",name="",image="",runtime="podman",pod="",namespace=""\\} 1$`, 'm'));
  assert.equal(sample(text, 'cgwatchdog_container_pids_max', `id="${idA}"`), 6144);
  assert.equal(sample(text, 'cgwatchdog_container_pids_max', `id="${idB}"`), undefined, '"max" is omitted');
  assert.equal(sample(text, 'cgwatchdog_container_pids_policy_max', `id="${idC}"`), 6144);
  assert.equal(sample(text, 'cgwatchdog_container_pids_limit_hits_total', `id="${idB}"`), 7);
  assert.match(text, /# TYPE cgwatchdog_container_pids_limit_hits_total counter/);
  assert.equal(sample(text, 'cgwatchdog_container_memory_limit_bytes', `id="${idA}"`), 512 * 1024 * 1024);
  assert.equal(sample(text, 'cgwatchdog_container_memory_limit_bytes', `id="${idB}"`), undefined);
  assert.equal(sample(text, 'cgwatchdog_container_memory_usage_bytes', `id="${idC}"`), 1_000_003);
  assert.equal(sample(text, 'cgwatchdog_container_oom_events_total', `id="${idB}"`), 2);
  assert.equal(sample(text, 'cgwatchdog_container_oom_kills_total', `id="${idB}"`), 3);
  assert.equal(sample(text, 'cgwatchdog_container_memory_max_events_total', `id="${idB}"`), 41, 'memory-max: a metric, not an alert');
  assert.equal(sample(text, 'cgwatchdog_container_policy_cores', `source="quota"`), 2);
  assert.equal(sample(text, 'cgwatchdog_container_policy_cores', `source="cpuset"`), 4);
  assert.equal(sample(text, 'cgwatchdog_host_pid_max', ''), 32768);
  assert.equal(sample(text, 'cgwatchdog_host_tasks', ''), 420);
  assert.equal(sample(text, 'cgwatchdog_host_threads_max', ''), 190000);
  assert.equal(sample(text, 'cgwatchdog_host_containers_pids_max', ''), 12288);
  assert.equal(sample(text, 'cgwatchdog_host_pids_overcommit_ratio', ''), 0.375);
  assert.equal(sample(text, 'cgwatchdog_events_total', 'kind="pids-max",source="inotify"'), 2);
  assert.equal(sample(text, 'cgwatchdog_detection_latency_seconds_bucket', 'le="0.0005"'), 0);
  assert.equal(sample(text, 'cgwatchdog_detection_latency_seconds_bucket', 'le="0.001"'), 1);
  assert.equal(sample(text, 'cgwatchdog_detection_latency_seconds_bucket', 'le="5"'), 1);
  assert.equal(sample(text, 'cgwatchdog_outbox_depth', ''), 4);
  assert.equal(sample(text, 'cgwatchdog_watches_active', 'type="pids.events"'), 3);
  for (const name of ['cgwatchdog_alerts_total', 'cgwatchdog_outbox_dropped_total', 'cgwatchdog_sweep_duration_seconds_bucket', 'cgwatchdog_reconcile_duration_seconds_count', 'cgwatchdog_limit_apply_latency_seconds_sum', 'cgwatchdog_pids_max_writes_total', 'cgwatchdog_kmsg_records_total', 'process_cpu_user_seconds_total', 'nodejs_eventloop_lag_seconds']) {
    assert.match(text, new RegExp(`^${name}`, 'm'), name);
  }

  // Removing a container removes its series on the next scrape.
  state.containers_.delete('b');
  state.hostSnap.sumContainersPidsMax = 12288;
  const text2 = (await get(srv.port, '/metrics')).body;
  assert.ok(!text2.includes(idB), 'no series of the removed container');
  assert.equal(sample(text2, 'cgwatchdog_container_pids_current', `id="${idA}"`), 11);
  assert.equal(sample(text2, 'cgwatchdog_container_oom_kills_total', `id="${idC}"`), 0);

  // /healthz and 404.
  const h = await get(srv.port, '/healthz');
  assert.equal(h.status, 200);
  assert.deepEqual(JSON.parse(h.body), { ok: true, status: 'ok', detail: state.running.detail });
  state.running = { ok: false, detail: 'kmsg reader stopped: EACCES' };
  const h2 = await get(srv.port, '/healthz');
  assert.equal(h2.status, 503);
  assert.deepEqual(JSON.parse(h2.body), { ok: false, status: 'down', detail: 'kmsg reader stopped: EACCES' });
  assert.equal((await get(srv.port, '/nope')).status, 404);

  // promtool lints the exposition text as Prometheus would see it.
  need(fs.existsSync(PROMTOOL), `${PROMTOOL} (Debian package prometheus)`);
  for (const body of [text, text2]) {
    // Exit 1 is a parse error; 3 is lint problems. prom-client's own default metrics
    // nodejs_active_{handles,requests,resources}_total are gauges named like counters
    // (prom-client 15.1.3): the helper lets exactly those through.
    const { code, problems, out } = await promtoolCheckMetrics(body);
    assert.ok(code === 0 || code === 3, `promtool check metrics failed (exit ${code}):\n${out}`);
    assert.deepEqual(problems, [], `promtool reported problems:\n${out}`);
  }
});

test('metrics scrape with 1,000 containers (time reported, not asserted)', async (t) => {
  const state = new State();
  for (let i = 0; i < 1000; i++) state.containers_.set(String(i), container(i, { name: `c${i}`, pod: `pod-${i >> 2}`, namespace: 'bench', memoryLimit: 256 * 1024 * 1024 }));
  const { registry } = createMetrics(state);
  const srv = await startMetricsServer({ listen: '127.0.0.1:0', registry, source: state, logger: silentLogger() });
  t.after(() => srv.close());
  await get(srv.port, '/metrics'); // warm-up
  const times: number[] = [];
  let bytes = 0;
  for (let i = 0; i < 20; i++) {
    const t0 = process.hrtime.bigint();
    const r = await get(srv.port, '/metrics');
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    bytes = r.body.length;
    assert.equal(r.status, 200);
  }
  times.sort((a, b) => a - b);
  const lines = (await get(srv.port, '/metrics')).body.split('\n').filter((l) => l.startsWith('cgwatchdog_container_')).length;
  assert.equal(lines, 11_000, '10 series per container (the memory-max events counter with them) and its info series');
  t.diagnostic(`1000 containers: scrape over HTTP median ${times[10]!.toFixed(1)} ms, max ${times[19]!.toFixed(1)} ms, ${bytes} bytes, ${lines} container series`);
});
