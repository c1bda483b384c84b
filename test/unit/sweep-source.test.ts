import test from 'node:test';
import assert from 'node:assert/strict';
import { SweepSource } from '../../src/detect/sweep-source';

test('the sweep is stalled after five intervals and five seconds without a sweep, on the monotonic clock', async () => {
  let mono = 1000;
  const s = new SweepSource(1000, () => Promise.resolve(), () => undefined, () => mono);
  assert.equal(s.stalled(), false, 'never run is not stalled (the engine says whether it runs)');
  assert.equal(s.msSinceLast, null);
  await s.sweep();
  mono += 10_000;
  assert.equal(s.stalled(), false);
  assert.equal(s.msSinceLast, 10_000);
  mono += 1;
  assert.equal(s.stalled(), true);
});

test('a wall-clock step (NTP, an operator\'s date -s) neither stalls the sweep nor hides a stall', async (t) => {
  const s = new SweepSource(1000, () => Promise.resolve(), () => undefined);
  await s.sweep();
  const realNow = Date.now;
  t.after(() => (Date.now = realNow));
  Date.now = () => realNow() + 3_600_000;
  assert.equal(s.stalled(), false, 'an hour forward on the wall clock is no stall');
  assert.ok((s.msSinceLast ?? Infinity) < 1000, `msSinceLast ${s.msSinceLast}`);
  Date.now = () => realNow() - 3_600_000;
  assert.ok((s.msSinceLast ?? -1) >= 0, 'an hour back is no negative age');
});
