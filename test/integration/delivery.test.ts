import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import pino from 'pino';
import type { Alert } from '../../src/alerts/alert';
import { Delivery } from '../../src/alerts/delivery';
import { sinkName } from '../../src/config/schema';
import { Outbox } from '../../src/alerts/outbox';
import { SinkConfig } from '../../src/config/schema';

interface Received {
  at: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A real receiver on 127.0.0.1; `respond` decides the status of each request. */
async function receiver(respond: (r: Received, n: number) => number | 'hang' = () => 200, port = 0) {
  const got: Received[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r = { at: Date.now(), headers: req.headers, body: Buffer.concat(chunks) };
      got.push(r);
      const status = respond(r, got.length);
      if (status === 'hang') return;
      res.writeHead(status, { 'Content-Type': 'text/plain' }).end(status < 300 ? 'ok' : 'nope');
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  // A test that fails before its close() must not keep the test process alive (and the run).
  server.unref();
  const addr = server.address() as AddressInfo;
  return {
    got,
    port: addr.port,
    url: `http://127.0.0.1:${addr.port}/hook`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const p = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

function captureLogger() {
  const raw: string[] = [];
  const log = pino({ level: 'trace' }, { write: (s: string) => raw.push(s) });
  return { log, raw, records: () => raw.map((s) => JSON.parse(s) as Record<string, unknown>) };
}

async function until(cond: () => boolean, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function alert(i: number, kind: Alert['kind'] = 'pids-max'): Alert {
  const fp = `f${String(i).padStart(15, '0')}`;
  return {
    fingerprint: fp,
    idempotencyKey: `${fp}-1-1735689600000`,
    sequence: 1,
    state: 'firing',
    kind,
    severity: kind === 'pids-max' ? 'critical' : 'info',
    host: 'h1',
    summary: `container c${i} hit its PID limit 100: 5 forks rejected`,
    container: { id: 'b'.repeat(64), runtime: 'docker', name: `c${i}`, cgroupPath: `/docker/${i}` },
    counters: { limit: 100, current: 100, eventsSinceLast: 5, eventsTotal: 5 },
    startsAt: '2025-01-01T00:00:00.000Z',
    updatedAt: '2025-01-01T00:00:00.000Z',
    limitScope: 'container',
    identity: {},
    sources: ['inotify'],
  };
}

const made: string[] = [];
const tmp = (): string => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cgw-delivery-'));
  made.push(d);
  return d;
};
after(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

test('HMAC verified by the receiver; bearer token from a file sent but never logged', async () => {
  const dir = tmp();
  const token = 'tok-5f1c9e0a7b3d';
  const secret = 'hmac-secret-93ac2e';
  fs.writeFileSync(path.join(dir, 'token'), `${token}\n`);
  process.env.CGW_TEST_HMAC = `${secret}\n`;
  const rx = await receiver((r) => {
    const sig = String(r.headers['x-signature'] ?? '');
    const want = `sha256=${createHmac('sha256', secret).update(r.body).digest('hex')}`;
    if (sig.length !== want.length || !timingSafeEqual(Buffer.from(sig), Buffer.from(want))) return 401;
    if (r.headers.authorization !== `Bearer ${token}`) return 403;
    return 200;
  });
  const { log, raw } = captureLogger();
  const outbox = await Outbox.open({ dir: path.join(dir, 'outbox'), maxEntries: 100, log });
  const cfg = SinkConfig.parse({
    type: 'webhook',
    name: 'hook',
    url: rx.url,
    headers: { 'X-Team': 'infra' },
    bearerToken: { file: path.join(dir, 'token') },
    hmac: { secret: { env: 'CGW_TEST_HMAC' }, header: 'X-Signature' },
  });
  const d = new Delivery({ outbox, sinks: [cfg], log });
  d.start();
  // A config object passed to the logger by mistake is redacted too.
  log.info({ sink: cfg }, 'sink configured');
  for (let i = 0; i < 5; i++) await d.enqueue(alert(i));
  await until(() => d.stats().hook!.delivered === 5, 5000, 'delivery');
  assert.equal(d.stats().hook!.rejected, 0);
  assert.equal(rx.got.length, 5);
  for (const r of rx.got) {
    assert.equal(r.headers['content-type'], 'application/json');
    assert.equal(r.headers['x-team'], 'infra');
    const body = JSON.parse(r.body.toString()) as Alert;
    assert.equal(r.headers['idempotency-key'], body.idempotencyKey);
  }
  await d.stop();
  await outbox.close();
  await rx.close();
  delete process.env.CGW_TEST_HMAC;
  const logs = raw.join('');
  assert.ok(logs.length > 0);
  assert.ok(!logs.includes(token), 'token absent from logs');
  assert.ok(!logs.includes(secret), 'HMAC secret absent from logs');
});

test('receiver down: entries queue on disk; receiver up: every alert arrives with its idempotency key', async () => {
  const dir = tmp();
  const port = await freePort();
  const { log, raw } = captureLogger();
  const outbox = await Outbox.open({ dir, maxEntries: 1000, log });
  const cfg = SinkConfig.parse({ type: 'webhook', name: 'hook', url: `http://127.0.0.1:${port}/hook`, retry: { initialDelayMs: 10, maxDelayMs: 100 } });
  const d = new Delivery({ outbox, sinks: [cfg], log });
  d.start();
  const N = 50;
  const sent = Array.from({ length: N }, (_, i) => alert(i));
  for (const a of sent) await d.enqueue(a);
  await until(() => d.stats().hook!.retried >= 3, 5000, 'retries while down');
  assert.equal(outbox.depth('hook'), N);
  assert.equal(fs.readdirSync(path.join(dir, 'hook')).length, N, 'queued on disk');
  assert.equal(d.stats().hook!.delivered, 0);

  const rx = await receiver(() => 200, port);
  await until(() => outbox.depth('hook') === 0, 10_000, 'drain after the receiver came up');
  const keys = rx.got.map((r) => String(r.headers['idempotency-key']));
  assert.deepEqual(new Set(keys), new Set(sent.map((a) => a.idempotencyKey)), 'every alert, at least once');
  // In order: the head is retried until delivered.
  assert.deepEqual(
    [...new Set(keys)],
    sent.map((a) => a.idempotencyKey),
  );
  const st = d.stats().hook!;
  assert.equal(st.delivered, N);
  assert.equal(st.depth, 0);
  assert.ok(raw.some((l) => l.includes('will retry') && l.includes('ECONNREFUSED')));
  await d.stop();
  await outbox.close();
  await rx.close();
});

test('400 is rejected and not retried; logged with status and sink name', async () => {
  const dir = tmp();
  const rx = await receiver(() => 400);
  const { log, records } = captureLogger();
  const outbox = await Outbox.open({ dir, maxEntries: 100, log });
  const d = new Delivery({ outbox, sinks: [SinkConfig.parse({ type: 'webhook', name: 'bad', url: rx.url, retry: { initialDelayMs: 10, maxDelayMs: 20 } })], log });
  d.start();
  for (let i = 0; i < 3; i++) await d.enqueue(alert(i));
  await until(() => d.stats().bad!.rejected === 3, 5000, 'rejections');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(rx.got.length, 3, 'one request each, no retry');
  const st = d.stats().bad!;
  assert.equal(st.retried, 0);
  assert.equal(st.delivered, 0);
  assert.equal(st.depth, 0);
  const errs = records().filter((r) => r.level === 50);
  assert.equal(errs.length, 3);
  assert.equal(errs[0]!.sink, 'bad');
  assert.equal(errs[0]!.status, 400);
  await d.stop();
  await outbox.close();
  await rx.close();
});

test('an entry a failing sink never takes is dropped after the outbox TTL (counted), and the sink goes on with the next', async () => {
  const dir = tmp();
  let status = 503;
  const rx = await receiver(() => status);
  const { log, records } = captureLogger();
  const outbox = await Outbox.open({ dir, maxEntries: 100, log });
  const outcomes: string[] = [];
  const d = new Delivery({
    outbox,
    sinks: [SinkConfig.parse({ type: 'webhook', name: 'flaky', url: rx.url, retry: { initialDelayMs: 20, maxDelayMs: 40 } })],
    log,
    ttlMs: 300,
    onOutcome: (_s, o) => outcomes.push(o),
  });
  d.start();
  await d.enqueue(alert(1));
  await until(() => outcomes.includes('expired'), 5000, 'the TTL drop');
  status = 200;
  await d.enqueue(alert(2));
  await until(() => outcomes.includes('delivered'), 5000, 'the next entry delivered');
  assert.equal(outbox.depth('flaky'), 0);
  assert.ok(records().some((r) => r.msg === 'alert not delivered within the outbox TTL; dropped' && r.sink === 'flaky'));
  await d.stop();
  await outbox.close();
  await rx.close();
});

test('an NTP step of the wall clock neither drops a waiting entry early nor stalls Alertmanager re-sends (monotonic ages and schedules)', async () => {
  const dir = tmp();
  let status = 503;
  const rx = await receiver(() => status);
  const { log } = captureLogger();
  const outbox = await Outbox.open({ dir, maxEntries: 100, log });
  const outcomes: string[] = [];
  let wall = Date.now();
  const d = new Delivery({
    outbox,
    sinks: [
      SinkConfig.parse({ type: 'webhook', name: 'hook', url: rx.url, retry: { initialDelayMs: 20, maxDelayMs: 40 } }),
      SinkConfig.parse({ type: 'alertmanager', name: 'am', url: rx.url, resendIntervalSeconds: 1, retry: { initialDelayMs: 20, maxDelayMs: 40 } }),
    ],
    log,
    ttlMs: 5000,
    now: () => wall,
    mono: () => performance.now(),
    onOutcome: (_s, o) => outcomes.push(o),
  });
  d.start();
  await d.enqueue(alert(1));
  // The clock jumps two days ahead while the receiver is down: the entry is 0.4 s old, not two days.
  wall += 2 * 86_400_000;
  await new Promise((r) => setTimeout(r, 400));
  assert.ok(!outcomes.includes('expired'), `dropped as expired after a forward clock step: ${outcomes.join(',')}`);
  status = 200;
  await until(() => outcomes.filter((o) => o === 'delivered').length >= 2, 5000, 'both sinks to deliver');
  // Back an hour: the re-send to Alertmanager is still due one second later.
  wall -= 3_600_000;
  await new Promise((r) => setTimeout(r, 1100));
  assert.equal(await d.resendFiring(), 1, 'the Alertmanager re-send stalled after a backward clock step');
  await d.stop();
  await outbox.close();
  await rx.close();
});

test('503 is retried with exponential backoff, then delivered', async () => {
  const dir = tmp();
  const rx = await receiver((_, n) => (n <= 5 ? 503 : 200));
  const { log } = captureLogger();
  const outbox = await Outbox.open({ dir, maxEntries: 100, log });
  const outcomes: string[] = [];
  // random() = 1 - epsilon: the jitter takes the whole cap, so the delays are 40, 80, 160, 320, 400.
  const d = new Delivery({
    outbox,
    sinks: [SinkConfig.parse({ type: 'webhook', name: 'flaky', url: rx.url, retry: { initialDelayMs: 40, maxDelayMs: 400 } })],
    log,
    random: () => 0.999999,
    onOutcome: (_s, o) => outcomes.push(o),
  });
  d.start();
  await d.enqueue(alert(1));
  // The outcome is reported after the entry's file is removed: wait for it, not for the count.
  await until(() => outcomes.includes('delivered'), 10_000, 'delivery after 503s');
  assert.equal(d.stats().flaky!.delivered, 1);
  assert.equal(rx.got.length, 6);
  assert.equal(d.stats().flaky!.retried, 5);
  assert.deepEqual(outcomes, ['retried', 'retried', 'retried', 'retried', 'retried', 'delivered']);
  const gaps = rx.got.slice(1).map((r, i) => r.at - rx.got[i]!.at);
  const want = [40, 80, 160, 320, 400];
  for (let i = 0; i < want.length; i++) assert.ok(gaps[i]! >= want[i]! - 2, `gap ${i}: ${gaps[i]} ms >= ${want[i]} ms`);
  assert.ok(gaps[4]! < 400 + 300, 'capped at maxDelayMs');
  assert.equal(new Set(rx.got.map((r) => r.headers['idempotency-key'])).size, 1, 'same key on every attempt');
  await d.stop();
  await outbox.close();
  await rx.close();
});

test('timeout is retried; stop() aborts a hanging request and keeps the entry on disk', async () => {
  const dir = tmp();
  const rx = await receiver(() => 'hang');
  const { log } = captureLogger();
  let outbox = await Outbox.open({ dir, maxEntries: 100, log });
  const cfg = SinkConfig.parse({ type: 'webhook', name: 'slow', url: rx.url, timeoutMs: 100, retry: { initialDelayMs: 10, maxDelayMs: 20 } });
  const d = new Delivery({ outbox, sinks: [cfg], log });
  d.start();
  await d.enqueue(alert(1));
  await until(() => d.stats().slow!.retried >= 1, 5000, 'a timeout');
  assert.match(d.stats().slow!.lastError ?? '', /timeout after 100 ms/);
  const t0 = Date.now();
  await d.stop(50);
  assert.ok(Date.now() - t0 < 1000, 'stop returns promptly');
  await outbox.close();
  await rx.close();
  outbox = await Outbox.open({ dir, maxEntries: 100, log });
  assert.equal(outbox.depth('slow'), 1, 'the undelivered entry is still there');
  await outbox.close();
});

test('per-sink filters at enqueue; a sink removed by a reload drops its entries (counted), an unknown one on disk is kept; throughput to a local receiver', async (t) => {
  const dir = tmp();
  const rx = await receiver(() => 200);
  const { log, records } = captureLogger();
  const outbox = await Outbox.open({ dir, maxEntries: 100_000, log });
  const all = SinkConfig.parse({ type: 'webhook', name: 'all', url: rx.url });
  const critical = SinkConfig.parse({ type: 'slack', url: `${rx.url}?slack`, minSeverity: 'critical' });
  const d = new Delivery({ outbox, sinks: [all, critical], log });
  await d.enqueue(alert(1, 'pids-max'));
  await d.enqueue(alert(2, 'memory-high'));
  assert.equal(outbox.depth('all'), 2);
  assert.equal(outbox.depth(sinkName(critical)), 1);
  assert.ok(!sinkName(critical).includes('127.0.0.1'), 'the URL is not in the name');

  // Throughput: enqueue N first, then time the drain with one worker.
  const N = 2000;
  for (let i = 0; i < N; i++) await outbox.enqueue('all', alert(100 + i));
  const t0 = process.hrtime.bigint();
  d.start();
  await until(() => outbox.depth('all') === 0, 60_000, 'drain');
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  t.diagnostic(`delivery throughput to a local receiver: ${Math.round((N + 2) / secs)} alerts/s (${N + 2} in ${secs.toFixed(2)} s, one worker, ack = unlink)`);
  await until(() => outbox.depth() === 0, 5000, 'slack drain');
  const slackReq = rx.got.find((r) => JSON.parse(r.body.toString()).text !== undefined)!;
  assert.match(JSON.parse(slackReq.body.toString()).text, /^\[CRITICAL\] h1: container c1/);

  // A reload that removes a sink drops what it still had waiting, counted and logged.
  // (Stopped, so the entry is still waiting when the reload comes.)
  await d.stop();
  await outbox.enqueue(sinkName(critical), alert(3));
  const dropped: string[] = [];
  outbox.on('dropped', (e: { sink: string }) => dropped.push(e.sink));
  assert.deepEqual(await d.reload([all]), []);
  assert.equal(outbox.depth(sinkName(critical)), 0, 'a removed sink keeps nothing');
  assert.equal(outbox.dropped(sinkName(critical)), 1);
  assert.deepEqual(dropped, [sinkName(critical)]);
  assert.ok(records().some((r) => r.msg === 'sink removed by a reload: its undelivered entries were dropped' && r.sink === sinkName(critical) && r.dropped === 1));
  assert.deepEqual(await d.reload([all, critical]), [sinkName(critical)], 'the added sink is named');
  await d.stop();

  // Entries on disk for a sink the config does not have (a restart with another config): kept.
  await outbox.enqueue('gone-sink', alert(4));
  const d2 = new Delivery({ outbox, sinks: [all], log });
  d2.start();
  assert.equal(outbox.depth('gone-sink'), 1, 'kept on disk');
  assert.ok(records().some((r) => r.msg === 'outbox has entries for a sink that is not configured; kept on disk' && r.sink === 'gone-sink'));
  await d2.stop();
  await outbox.close();
  await rx.close();
});
