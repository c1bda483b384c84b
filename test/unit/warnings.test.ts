import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nextWarningState, WarningTracker, type WarningSample } from '../../src/detect/warnings';

const T = { pidsPercent: 80, memoryPercent: 90, hostTasksPercent: 80, hysteresisPercent: 5 };
const pids = (value: number, limit: number | 'max' | undefined = 1000): WarningSample => ({ kind: 'pids-warning', subject: '/c1', value, limit });

test('raise at the threshold, no flapping around it, clear only below threshold − hysteresis', () => {
  const w = new WarningTracker(T);
  assert.equal(w.update(pids(799)), undefined);
  const r = w.update(pids(800));
  assert.equal(r?.state, 'raise');
  assert.equal(r?.percent, 80);
  assert.equal(r?.thresholdPercent, 80);
  // Wobbling across 80% and down to exactly 75% keeps it raised.
  for (const v of [799, 801, 790, 800, 760, 750, 810, 751]) assert.equal(w.update(pids(v)), undefined, `value ${v}`);
  const c = w.update(pids(749));
  assert.equal(c?.state, 'clear');
  assert.equal(c?.thresholdPercent, 75);
  for (const v of [790, 799, 760]) assert.equal(w.update(pids(v)), undefined);
  assert.equal(w.update(pids(800))?.state, 'raise');
});

test('"max" and unknown limits never warn; a raised warning clears when the limit becomes max', () => {
  const w = new WarningTracker(T);
  assert.equal(w.update(pids(1_000_000, 'max')), undefined);
  assert.equal(w.update(pids(5, undefined)), undefined);
  assert.equal(w.update(pids(900))?.state, 'raise');
  assert.equal(w.update(pids(900, 'max'))?.state, 'clear');
});

test('memory and host tasks use their own thresholds; subjects are independent', () => {
  const w = new WarningTracker(T);
  const GiB = 1024 ** 3;
  assert.equal(w.update({ kind: 'memory-warning', subject: '/c1', value: 0.89 * GiB, limit: GiB }), undefined);
  assert.equal(w.update({ kind: 'memory-warning', subject: '/c1', value: 0.9 * GiB, limit: GiB })?.state, 'raise');
  assert.equal(w.update({ kind: 'memory-warning', subject: '/c1', value: 0.86 * GiB, limit: GiB }), undefined);
  assert.equal(w.update({ kind: 'memory-warning', subject: '/c1', value: 0.84 * GiB, limit: GiB })?.state, 'clear');
  // kernel.pid_max 32768 on this host: 80% is 26214.4 tasks.
  assert.equal(w.update({ kind: 'host-pids-warning', subject: 'host', value: 26214, limit: 32768 }), undefined);
  assert.equal(w.update({ kind: 'host-pids-warning', subject: 'host', value: 26215, limit: 32768 })?.state, 'raise');
  assert.equal(w.update(pids(800))?.state, 'raise');
  assert.equal(w.active().length, 2);
});

test('forget clears the raised warnings of a removed container', () => {
  const w = new WarningTracker(T);
  w.update(pids(900));
  assert.deepEqual(
    w.forget('/c1').map((t) => [t.kind, t.state]),
    [['pids-warning', 'clear']],
  );
  assert.deepEqual(w.forget('/c1'), []);
});

test('nextWarningState has no rounding at the boundary', () => {
  // 7 of 10 at 70%: exactly at the threshold raises (0.7*10 in floating point is 7.000000000000001).
  assert.equal(nextWarningState(false, 7, 10, 70, 5), true);
  assert.equal(nextWarningState(true, 6.5, 10, 70, 5), true);
  assert.equal(nextWarningState(true, 6.49, 10, 70, 5), false);
  assert.equal(nextWarningState(false, 0, 0, 70, 5), false);
});
