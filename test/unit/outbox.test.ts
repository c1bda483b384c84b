import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import pino from 'pino';
import type { Alert } from '../../src/alerts/alert';
import { Outbox } from '../../src/alerts/outbox';

function captureLogger(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

export function sampleAlert(i: number, state: Alert['state'] = 'firing'): Alert {
  const fp = `fp${String(i % 7).padStart(14, '0')}`;
  return {
    fingerprint: fp,
    idempotencyKey: `${fp}-${i}-1735689600000`,
    sequence: i,
    state,
    kind: 'pids-max',
    severity: 'critical',
    host: 'h1',
    summary: `container c${i} hit its PID limit 100: ${i} forks rejected`,
    container: { id: 'a'.repeat(64), runtime: 'docker', cgroupPath: `/docker/${i}` },
    counters: { current: 100, limit: 100, eventsSinceLast: i, eventsTotal: i },
    startsAt: '2025-01-01T00:00:00.000Z',
    updatedAt: '2025-01-01T00:00:00.000Z',
    limitScope: 'container',
    identity: {},
    sources: ['inotify'],
  };
}

const made: string[] = [];
const tmp = (): string => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cgw-outbox-'));
  made.push(d);
  return d;
};
after(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

test('enqueue, peek in order, ack deletes; survives reopen', async () => {
  const dir = tmp();
  const { log } = captureLogger();
  const ob = await Outbox.open({ dir, maxEntries: 100, log });
  await ob.enqueue('hook', sampleAlert(1));
  await ob.enqueue('slack', sampleAlert(2));
  await Promise.all([3, 4, 5].map((i) => ob.enqueue('hook', sampleAlert(i))));
  assert.equal(ob.depth(), 5);
  assert.equal(ob.depth('hook'), 4);
  assert.deepEqual(
    ob.list('hook').map((e) => e.alert.sequence),
    [1, 3, 4, 5],
  );
  const head = ob.peek('hook')!;
  await ob.ack(head);
  assert.equal(ob.peek('hook')!.alert.sequence, 3);
  assert.equal(fs.readdirSync(path.join(dir, 'hook')).length, 3);
  await ob.close();

  const again = await Outbox.open({ dir, maxEntries: 100, log });
  assert.deepEqual(
    again.list('hook').map((e) => e.alert.sequence),
    [3, 4, 5],
  );
  assert.equal(again.peek('slack')!.alert.idempotencyKey, sampleAlert(2).idempotencyKey);
  const e = await again.enqueue('hook', sampleAlert(6));
  assert.ok(e.seq > again.list('hook')[2]!.seq, 'the sequence continues after the files on disk');
  await again.close();
});

test('bounded: when full (no updates to drop) the oldest entry over all sinks is dropped, counted and logged', async () => {
  const dir = tmp();
  const { log, lines } = captureLogger();
  const ob = await Outbox.open({ dir, maxEntries: 3, log });
  const dropped: number[] = [];
  ob.on('dropped', (e: { alert: Alert }) => dropped.push(e.alert.sequence));
  await ob.enqueue('a', sampleAlert(1, 'resolved'));
  await ob.enqueue('b', sampleAlert(2, 'resolved'));
  await ob.enqueue('a', sampleAlert(3, 'resolved'));
  await ob.enqueue('b', sampleAlert(4, 'resolved'));
  await ob.enqueue('b', sampleAlert(5, 'resolved'));
  assert.equal(ob.depth(), 3);
  assert.deepEqual(dropped, [1, 2]);
  assert.equal(ob.dropped(), 2);
  assert.equal(ob.dropped('a'), 1);
  assert.equal(ob.dropped('b'), 1);
  assert.deepEqual(
    ob.list('a').map((e) => e.alert.sequence),
    [3],
  );
  assert.deepEqual(
    ob.list('b').map((e) => e.alert.sequence),
    [4, 5],
  );
  const warn = lines.filter((l) => l.msg === 'outbox full: dropped the oldest entry');
  assert.equal(warn.length, 2);
  assert.equal(warn[0]!.idempotencyKey, sampleAlert(1, 'resolved').idempotencyKey);
  assert.equal(fs.readdirSync(path.join(dir, 'a')).length + fs.readdirSync(path.join(dir, 'b')).length, 3);
  await ob.close();
});

test('SIGKILL mid-way: every fully enqueued entry is there after restart; bad files are moved aside', async (t) => {
  const dir = tmp();
  const N = 2000;
  const outboxJs = path.resolve(__dirname, '../../src/alerts/outbox.js');
  const childJs = path.join(dir, '..', `${path.basename(dir)}-child.js`);
  fs.writeFileSync(
    childJs,
    `const { Outbox } = require(${JSON.stringify(outboxJs)});
const pino = require(${JSON.stringify(require.resolve('pino'))});
(async () => {
  const ob = await Outbox.open({ dir: ${JSON.stringify(dir)}, maxEntries: 100000, log: pino({ level: 'silent' }) });
  for (let i = 1; i <= ${N}; i++) {
    const a = ${JSON.stringify(sampleAlert(0))};
    a.sequence = i; a.idempotencyKey = 'key-' + i;
    await ob.enqueue(i % 2 ? 'odd' : 'even', a);
    process.stdout.write(i + '\\n');
  }
})();
`,
  );
  const child = spawn(process.execPath, [childJs], { stdio: ['ignore', 'pipe', 'inherit'] });
  const acked: number[] = [];
  let buf = '';
  const killAt = 300;
  await new Promise<void>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const p of parts) acked.push(Number(p));
      if (acked.length >= killAt && child.exitCode === null && !child.killed) child.kill('SIGKILL');
    });
    child.on('exit', () => resolve());
  });
  assert.equal(child.signalCode, 'SIGKILL');
  assert.ok(acked.length >= killAt && acked.length < N, `killed mid-way after ${acked.length} acknowledged enqueues`);

  // What a crash can leave besides whole entries: a half-written temp file, a truncated entry, junk.
  fs.writeFileSync(path.join(dir, 'odd', '9999999999999998.json.tmp'), '{"v":1,"sink":"odd","se');
  fs.writeFileSync(path.join(dir, 'odd', '9999999999999999.json'), '{"v":1,"sink":"odd","seq":99');
  fs.writeFileSync(path.join(dir, 'even', 'notes.txt'), 'hello');

  const { log, lines } = captureLogger();
  const ob = await Outbox.open({ dir, maxEntries: 100000, log });
  const keys = new Set([...ob.list('odd'), ...ob.list('even')].map((e) => e.alert.idempotencyKey));
  for (const i of acked) assert.ok(keys.has(`key-${i}`), `entry ${i} survived`);
  // Order within a sink is the enqueue order.
  const odd = ob.list('odd').map((e) => e.alert.sequence);
  assert.deepEqual(
    odd,
    [...odd].sort((a, b) => a - b),
  );
  // The child itself may have left one temp file of the write it was killed in.
  const corrupt = fs.readdirSync(path.join(dir, 'corrupt'));
  for (const name of ['odd-', 'even-']) assert.ok(corrupt.some((f) => f.startsWith(name)), `moved aside: ${corrupt.join(', ')}`);
  for (const name of ['9999999999999998.json.tmp', '9999999999999999.json', 'notes.txt']) {
    assert.ok(corrupt.some((f) => f.endsWith(`-${name}`)), `${name} moved aside`);
  }
  assert.equal(lines.filter((l) => l.msg === 'outbox: moved a bad entry aside').length, corrupt.length);
  assert.ok(!fs.readdirSync(path.join(dir, 'odd')).some((f) => f.endsWith('.tmp')));
  // New entries continue after the highest whole entry.
  const e = await ob.enqueue('odd', sampleAlert(1));
  assert.ok(e.seq > Math.max(...ob.list('odd').slice(0, -1).map((x) => x.seq)));
  t.diagnostic(`child acknowledged ${acked.length} enqueues before SIGKILL; ${keys.size} entries on disk after restart`);
  await ob.close();
  fs.rmSync(childJs);
});

test('enqueue cost with fsync (measured)', async (t) => {
  const { log } = captureLogger();
  const n = 500;
  const results: string[] = [];
  for (const fsyncDir of [true, false]) {
    const dir = tmp();
    const ob = await Outbox.open({ dir, maxEntries: 100_000, log, fsyncDir });
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await ob.enqueue('s', sampleAlert(i));
    const seqUs = Number(process.hrtime.bigint() - t0) / 1000 / n;
    const t1 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: n }, (_, i) => ob.enqueue(`s${i % 4}`, sampleAlert(i))));
    const parUs = Number(process.hrtime.bigint() - t1) / 1000 / n;
    results.push(`fsyncDir=${fsyncDir}: ${seqUs.toFixed(0)} µs/alert sequential, ${parUs.toFixed(0)} µs/alert with 4 sinks concurrent`);
    assert.equal(ob.depth(), 2 * n);
    await ob.close();
    fs.rmSync(dir, { recursive: true });
  }
  for (const r of results) t.diagnostic(`outbox enqueue: ${r}`);
});

test('a full outbox drops updates before it drops the first firing or the resolution of an alert', async () => {
  const { log, lines } = captureLogger();
  const ob = await Outbox.open({ dir: tmp(), maxEntries: 3, log, fsyncDir: false });
  await ob.enqueue('s', sampleAlert(1)); // first firing
  await ob.enqueue('s', sampleAlert(2)); // update
  await ob.enqueue('s', sampleAlert(3, 'resolved'));
  await ob.enqueue('s', sampleAlert(1)); // another alert's first firing: the update goes
  assert.deepEqual(ob.list('s').map((e) => [e.alert.sequence, e.alert.state]), [[1, 'firing'], [3, 'resolved'], [1, 'firing']]);
  await ob.enqueue('s', sampleAlert(1)); // no update left: the oldest entry goes
  assert.deepEqual(ob.list('s').map((e) => [e.alert.sequence, e.alert.state]), [[3, 'resolved'], [1, 'firing'], [1, 'firing']]);
  assert.equal(ob.dropped('s'), 2);
  assert.equal(lines.filter((l) => l.msg === 'outbox full: dropped the oldest entry').length, 2);
  await ob.close();
});
