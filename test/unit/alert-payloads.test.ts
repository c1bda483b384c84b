import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Alert } from '../../src/alerts/alert';
import { Coalescer } from '../../src/alerts/coalescer';
import { alertName, alertmanagerPayload } from '../../src/alerts/sinks/alertmanager';
import { classifyStatus, signBody } from '../../src/alerts/sinks/http-post';
import { slackBody, slackText } from '../../src/alerts/sinks/slack';
import { webhookBody } from '../../src/alerts/sinks/webhook';
import { backoffDelay, sinkAccepts } from '../../src/alerts/delivery';
import { SinkConfig } from '../../src/config/schema';

const ID = '3f2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0';
const T0 = Date.parse('2025-03-01T12:00:00Z');

function alerts(): { firing: Alert; update: Alert; resolved: Alert } {
  let t = T0;
  const c = new Coalescer({
    host: 'node-7',
    repeatIntervalSeconds: 60,
    resolveAfterSeconds: 30,
    now: () => t,
    lookup: () => ({
      container: { id: ID, runtime: 'docker', name: 'web-1', image: 'python:3.12', podName: 'web-1-abc', podNamespace: 'shop' },
      current: 6144,
      limit: 6144,
      topCommands: [
        { comm: 'python3', tasks: 6100 },
        { comm: 'sh', tasks: 44 },
      ],
    }),
  });
  const ev = { kind: 'pids-max' as const, cgroupPath: `/kubepods/pod1/${ID}`, containerId: ID, count: 1532, source: 'inotify' as const, at: t };
  const firing = c.onEvent(ev)[0]!;
  t += 61_000;
  const update = c.onEvent({ ...ev, count: 10, at: t })[0]!;
  t += 31_000;
  const resolved = c.tick()[0]!;
  return { firing, update, resolved };
}

test('webhook body is the Alert JSON, with the idempotency key and counters', () => {
  const { firing, resolved } = alerts();
  const body = JSON.parse(webhookBody(firing).toString('utf8')) as Alert;
  assert.deepEqual(body, firing);
  assert.equal(body.state, 'firing');
  assert.equal(body.sequence, 1);
  assert.equal(body.counters.eventsSinceLast, 1532);
  assert.equal(body.container.pod, 'web-1-abc');
  assert.equal(body.startsAt, '2025-03-01T12:00:00.000Z');
  assert.equal(body.endsAt, undefined);
  assert.match(body.idempotencyKey, new RegExp(`^${body.fingerprint}-1-`));
  const r = JSON.parse(webhookBody(resolved).toString('utf8')) as Alert;
  assert.equal(r.state, 'resolved');
  assert.equal(r.endsAt, '2025-03-01T12:01:32.000Z');
  assert.equal(r.counters.eventsTotal, 1542);
});

test('Slack text is a readable one-liner; blocks carry the fields', () => {
  const { firing, update, resolved } = alerts();
  assert.equal(
    slackText(firing),
    `[CRITICAL] node-7: container web-1 (docker ${ID.slice(0, 12)}…, pod shop/web-1-abc) hit its PID limit 6144: 1532 forks rejected; top: python3 6100 tasks, sh 44 tasks`,
  );
  assert.match(slackText(update), /^\[CRITICAL\] node-7: .*10 forks rejected.*\(update\)$/);
  assert.match(slackText(resolved), /^\[RESOLVED\] node-7: resolved: .*1542 forks rejected/);
  const b = slackBody(firing);
  assert.equal(b.text, slackText(firing));
  const json = JSON.stringify(b.blocks);
  assert.match(json, /\*Top commands\*\\npython3 6100, sh 44/);
  assert.match(json, /\*Pod\*\\nshop\/web-1-abc/);
  assert.match(json, /\*Events\*\\n1532 since last message, 1532 in total/);
  const lt = slackBody({ ...firing, summary: 'a <b> & c' });
  assert.match(JSON.stringify(lt.blocks), /a &lt;b&gt; &amp; c/);
});

test('Alertmanager payload: labels, annotations, endsAt for firing and resolved', () => {
  const { firing, resolved } = alerts();
  const now = T0 + 5000;
  const [am] = alertmanagerPayload(firing, 60, now);
  assert.deepEqual(am!.labels, {
    alertname: 'CgwatchdogPIDsMax',
    severity: 'critical',
    kind: 'pids-max',
    host: 'node-7',
    container: 'web-1',
    container_id: ID,
    limit_scope: 'container',
    runtime: 'docker',
    pod: 'web-1-abc',
    namespace: 'shop',
    cgroup: `/kubepods/pod1/${ID}`,
  });
  assert.equal(am!.annotations.summary, firing.summary);
  assert.equal(am!.annotations.top_commands, 'python3=6100, sh=44');
  assert.match(am!.annotations.description!, /events since last message: 1532; total: 1532/);
  assert.equal(am!.startsAt, '2025-03-01T12:00:00.000Z');
  assert.equal(am!.endsAt, new Date(now + 4 * 60_000).toISOString());
  assert.equal(am!.generatorURL, undefined);
  const [r] = alertmanagerPayload(resolved, 60, now);
  assert.equal(r!.endsAt, new Date(now).toISOString());
  assert.deepEqual(r!.labels, am!.labels, 'same label set: Alertmanager matches the resolution to the alert');

  // Empty or missing values never become labels.
  const bare: Alert = { ...firing, container: { cgroupPath: '/user.slice', name: '', pod: '' }, identity: { name: '', pod: '' }, topCommands: undefined };
  const [b] = alertmanagerPayload(bare, 60, now);
  assert.deepEqual(Object.keys(b!.labels).sort(), ['alertname', 'cgroup', 'host', 'kind', 'limit_scope', 'severity']);
  for (const v of Object.values(b!.labels)) assert.ok(typeof v === 'string' && v.length > 0);
  assert.equal(b!.annotations.top_commands, undefined);
  assert.equal(alertName('oom-group-kill'), 'CgwatchdogOOMGroupKill');
  assert.equal(alertName('host-pids-warning'), 'CgwatchdogHostPIDsWarning');
});

test('status classes, HMAC format, backoff bounds and sink filters', () => {
  assert.equal(classifyStatus(200), 'delivered');
  assert.equal(classifyStatus(204), 'delivered');
  for (const s of [408, 429, 500, 502, 503]) assert.equal(classifyStatus(s), 'retry');
  for (const s of [400, 401, 403, 404, 410, 301]) assert.equal(classifyStatus(s), 'rejected');
  // RFC 4231 test case 2.
  assert.equal(signBody('Jefe', Buffer.from('what do ya want for nothing?')), 'sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843');
  for (let n = 0; n < 30; n++) {
    const d = backoffDelay(n, 500, 60_000, () => 0.999999);
    assert.ok(d <= Math.min(60_000, 500 * 2 ** n) && d >= 0);
    assert.equal(backoffDelay(n, 500, 60_000, () => 0), 0);
  }
  assert.equal(backoffDelay(3, 500, 60_000, () => 0.5), 2000);
  const cfg = SinkConfig.parse({ type: 'webhook', url: 'http://127.0.0.1/x', kinds: ['pids-max', 'oom-kill'], minSeverity: 'critical' });
  const { firing } = alerts();
  assert.equal(sinkAccepts(cfg, firing), true);
  assert.equal(sinkAccepts(cfg, { ...firing, kind: 'memory-max', severity: 'warning' }), false);
  assert.equal(sinkAccepts(SinkConfig.parse({ type: 'webhook', url: 'http://x/', minSeverity: 'warning' }), { ...firing, kind: 'memory-high', severity: 'info' }), false);
});

test('one alert keeps one identity: a name learned after the first message goes to the annotations, never the labels', () => {
  let t = T0;
  let known: { name?: string; podName?: string; podNamespace?: string } = {};
  const c = new Coalescer({
    host: 'node-7',
    repeatIntervalSeconds: 1,
    resolveAfterSeconds: 30,
    now: () => t,
    lookup: () => ({ container: { id: ID, runtime: 'containerd', ...known } }),
  });
  const ev = { kind: 'oom-kill' as const, cgroupPath: `/kubepods/pod1/${ID}`, containerId: ID, count: 1, source: 'kmsg' as const, at: t };
  const first = c.onEvent(ev)[0]!;
  known = { name: 'web-1', podName: 'web-1-abc', podNamespace: 'shop' };
  t += 2000;
  const update = c.onEvent({ ...ev, at: t })[0]!;
  t += 31_000;
  const resolved = c.tick()[0]!;
  const [a1] = alertmanagerPayload(first, 60, t);
  const [a2] = alertmanagerPayload(update, 60, t);
  const [a3] = alertmanagerPayload(resolved, 60, t);
  assert.equal(a1!.labels.container, undefined, 'no name was known at the first message');
  assert.deepEqual(a2!.labels, a1!.labels, 'the update is the same alert in Alertmanager');
  assert.deepEqual(a3!.labels, a1!.labels, 'the resolution ends that alert, not another');
  assert.match(a2!.annotations.description!, /container: web-1/);
  assert.match(a2!.annotations.description!, /pod: shop\/web-1-abc/);
  assert.equal(update.container.name, 'web-1', 'the webhook body carries the latest name');
  assert.deepEqual(update.identity, {}, 'identity stays as it was first sent');
});

test('a sub-cgroup limit (a container\'s own systemd TasksMax) pages one level lower and says where', () => {
  const c = new Coalescer({
    host: 'node-7',
    repeatIntervalSeconds: 60,
    resolveAfterSeconds: 30,
    now: () => T0,
    lookup: () => ({ container: { id: ID, runtime: 'docker' }, limitScope: 'sub-cgroup', limit: 5 }),
  });
  const a = c.onEvent({ kind: 'pids-max', cgroupPath: `/docker/${ID}/init.scope`, containerId: ID, count: 3, source: 'kmsg', at: T0 })[0]!;
  assert.equal(a.limitScope, 'sub-cgroup');
  assert.equal(a.severity, 'warning');
  assert.match(a.summary, /in its sub-cgroup \/docker\/[0-9a-f]+\/init\.scope/);
  assert.equal(alertmanagerPayload(a, 60, T0)[0]!.labels.limit_scope, 'sub-cgroup');
});
