import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { Coalescer } from '../../src/alerts/coalescer';
import { Delivery } from '../../src/alerts/delivery';
import { Outbox } from '../../src/alerts/outbox';
import { SinkConfig } from '../../src/config/schema';
import { silentLogger } from '../../src/log';
import { need } from '../helpers/prereq';
import { ALERTMANAGER, getJson, startAlertmanager, until, type AmAlertOut } from '../helpers/prometheus';

/** A real Alertmanager, and a Delivery with one sink to it (outbox in a temp dir); all removed after the test. */
async function alertmanagerSink(t: TestContext, extra: Record<string, unknown> = {}) {
  need(fs.existsSync(ALERTMANAGER), `${ALERTMANAGER} (apt-get install prometheus-alertmanager)`);
  const am = await startAlertmanager(t);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgw-am-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const log = silentLogger();
  const outbox = await Outbox.open({ dir: path.join(dir, 'outbox'), maxEntries: 100, log });
  const sink = SinkConfig.parse({ type: 'alertmanager', name: 'am', url: `${am.url}/`, retry: { initialDelayMs: 50, maxDelayMs: 200 }, ...extra });
  const d = new Delivery({ outbox, sinks: [sink], log });
  d.start();
  t.after(async () => {
    await d.stop();
    await outbox.close();
  });
  return { am, d };
}

test('a firing alert sent through our sink is active in a real Alertmanager; the resolution ends it', async (t) => {
  const { am, d } = await alertmanagerSink(t, { resendIntervalSeconds: 1 });

  const id = 'c0ffee'.repeat(10) + 'abcd';
  const c = new Coalescer({
    host: 'node-am',
    repeatIntervalSeconds: 60,
    resolveAfterSeconds: 30,
    lookup: () => ({ container: { id, runtime: 'docker', name: 'api-2' }, limit: 512, current: 512, topCommands: [{ comm: 'node', tasks: 500 }] }),
  });
  const [firing] = c.onEvent({ kind: 'pids-max', cgroupPath: `/system.slice/docker-${id}.scope`, containerId: id, count: 17, source: 'inotify', at: Date.now() });
  await d.enqueue(firing!);

  const mine = (body: unknown): AmAlertOut | undefined => (body as AmAlertOut[]).find((a) => a.labels.container_id === id);
  const active = await until(
    async () => {
      const r = await getJson(`${am.url}/api/v2/alerts?active=true`);
      return r.status === 200 ? mine(r.body) : undefined;
    },
    10_000,
    'the alert to be active',
  );
  assert.equal(d.stats().am!.delivered, 1);
  assert.equal(active.status.state, 'active');
  assert.deepEqual(active.labels, {
    alertname: 'CgwatchdogPIDsMax',
    severity: 'critical',
    kind: 'pids-max',
    host: 'node-am',
    container: 'api-2',
    container_id: id,
    limit_scope: 'container',
    runtime: 'docker',
    cgroup: `/system.slice/docker-${id}.scope`,
  });
  assert.equal(active.annotations.summary, firing!.summary);
  assert.equal(active.annotations.top_commands, 'node=500');
  assert.equal(Date.parse(active.startsAt), Date.parse(firing!.startsAt));
  const firstEnds = Date.parse(active.endsAt);
  assert.ok(firstEnds > Date.now() + 3000 && firstEnds <= Date.now() + 4000, 'endsAt = send time + 4 x resend interval');

  // The re-send hook keeps it alive: after resendIntervalSeconds a fresh endsAt arrives.
  await new Promise((r) => setTimeout(r, 1100));
  assert.equal(await d.resendFiring(), 1);
  await until(
    async () => {
      const r = await getJson(`${am.url}/api/v2/alerts?active=true`);
      const a = mine(r.body);
      return a && Date.parse(a.endsAt) > firstEnds ? a : undefined;
    },
    10_000,
    'a later endsAt after the re-send',
  );
  await until(async () => (d.stats().am!.delivered === 2 ? true : undefined), 15_000, 'two deliveries');

  const resolved = c.resolveNow(`/system.slice/docker-${id}.scope`);
  assert.equal(resolved.length, 1);
  await d.enqueue(resolved[0]!);
  await until(
    async () => {
      const r = await getJson(`${am.url}/api/v2/alerts?active=true`);
      return r.status === 200 && !mine(r.body) ? true : undefined;
    },
    10_000,
    'the alert to be gone from the active alerts',
  );
  await until(async () => (d.stats().am!.delivered === 3 ? true : undefined), 15_000, 'three deliveries');
  assert.equal(await d.resendFiring(), 0, 'a resolved alert is not re-sent');
  assert.equal(d.stats().am!.rejected, 0);
});

test('one condition is one alert in a real Alertmanager: a name, pod and namespace learned after the first send change no label', async (t) => {
  const { am, d } = await alertmanagerSink(t);

  const id = 'feed'.repeat(16);
  const cgroupPath = `/kubepods.slice/kubepods-pod1.slice/cri-containerd-${id}.scope`;
  // The name lookup answers only after the first message went out.
  let names: { name?: string; podName?: string; podNamespace?: string } = {};
  let mono = 0;
  const c = new Coalescer({ host: 'node-am', repeatIntervalSeconds: 10, resolveAfterSeconds: 60, mono: () => mono, lookup: () => ({ container: { id, runtime: 'containerd', ...names }, limit: 6144, current: 6144 }) });
  const ev = () => ({ kind: 'pids-max' as const, cgroupPath, containerId: id, count: 3, source: 'kmsg' as const, at: Date.now() });
  const [first] = c.onEvent(ev());
  await d.enqueue(first!);
  names = { name: 'api', podName: 'api-7d9f', podNamespace: 'shop' };
  mono += 11_000;
  const [update] = c.onEvent(ev());
  assert.equal(update?.sequence, 2);
  await d.enqueue(update!);
  await until(async () => (d.stats().am!.delivered === 2 ? true : undefined), 15_000, 'both messages delivered');

  const r = await getJson(`${am.url}/api/v2/alerts?active=true`);
  const mine = (r.body as AmAlertOut[]).filter((a) => a.labels.container_id === id);
  assert.equal(mine.length, 1, `Alertmanager holds ${mine.length} alerts for one condition: ${JSON.stringify(mine.map((a) => a.labels))}`);
  assert.equal(mine[0]!.labels.container, undefined, 'a name learned later became a label');
  assert.equal(mine[0]!.labels.pod, undefined);
  assert.equal(mine[0]!.labels.limit_scope, 'container');
  assert.match(mine[0]!.annotations.description ?? '', /container: api\npod: shop\/api-7d9f/);
});
