import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CounterTracker, diffCounters, diffMemoryEvents, diffPidsEvents } from '../../src/detect/counter-diff';
import type { MemoryEvents } from '../../src/cgroup/types';

// memory.events as read inside user-mode Linux 6.1 ("low 0 high 0 max 12 oom 1 oom_kill 1
// oom_group_kill 0"), in the shape src/cgroup/ hands out.
const mem = (over: Partial<MemoryEvents> = {}): MemoryEvents => ({ low: 0, high: 0, max: 12, oom: 1, oomKill: 1, oomGroupKill: 0, ...over });

test('first read is a baseline: nothing emitted', () => {
  assert.deepEqual(diffPidsEvents(undefined, { max: 7 }), { increases: [], rebaselined: [] });
  assert.deepEqual(diffMemoryEvents(undefined, mem()), { increases: [], rebaselined: [] });
  const t = new CounterTracker();
  assert.deepEqual(t.update('/a', { pids: { max: 3 }, memory: mem() }).increases, []);
});

test('pids.events max increase -> pids-max with count and counter', () => {
  assert.deepEqual(diffPidsEvents({ max: 3 }, { max: 5 }).increases, [{ kind: 'pids-max', count: 2, counter: 5 }]);
});

test('every memory.events field maps to its kind', () => {
  const r = diffMemoryEvents(mem(), mem({ high: 4, max: 15, oom: 2, oomKill: 3, oomGroupKill: 1, low: 9 }));
  assert.deepEqual(r.increases, [
    { kind: 'memory-max', count: 3, counter: 15 },
    { kind: 'memory-high', count: 4, counter: 4 },
    { kind: 'oom', count: 1, counter: 2 },
    { kind: 'oom-kill', count: 2, counter: 3 },
    { kind: 'oom-group-kill', count: 1, counter: 1 },
  ]);
});

test('spurious wake-up (same counters) produces nothing', () => {
  const t = new CounterTracker();
  t.update('/c', { pids: { max: 1 }, memory: mem() });
  for (let i = 0; i < 5; i++) assert.deepEqual(t.update('/c', { pids: { max: 1 }, memory: mem() }), { increases: [], rebaselined: [] });
});

test('a counter that went down: cgroup recreated, re-baseline, emit nothing, then count from there', () => {
  const t = new CounterTracker();
  t.update('/libpod_parent/libpod-x', { pids: { max: 40 } });
  const r = t.update('/libpod_parent/libpod-x', { pids: { max: 2 } });
  assert.deepEqual(r, { increases: [], rebaselined: ['pids'] });
  assert.deepEqual(t.update('/libpod_parent/libpod-x', { pids: { max: 3 } }).increases, [{ kind: 'pids-max', count: 1, counter: 3 }]);
  // memory: one field down (oom_kill) while another went up is still a new cgroup.
  const m = diffMemoryEvents(mem({ oomKill: 5, max: 3 }), mem({ oomKill: 0, max: 4 }));
  assert.deepEqual(m, { increases: [], rebaselined: ['memory'] });
});

test('v1 memory counters (no high/oom/group fields) and fields that appear later', () => {
  const v1 = (max: number, oomKill: number): MemoryEvents => ({ max, oomKill });
  assert.deepEqual(diffMemoryEvents(v1(10, 0), v1(12, 1)).increases, [
    { kind: 'memory-max', count: 2, counter: 12 },
    { kind: 'oom-kill', count: 1, counter: 1 },
  ]);
  assert.deepEqual(diffMemoryEvents(v1(10, 0), { max: 10, oomKill: 0, high: 5 }).increases, []);
});

test('a missing file in one read keeps the other file baseline', () => {
  const t = new CounterTracker();
  t.update('/c', { pids: { max: 1 }, memory: mem() });
  assert.deepEqual(t.update('/c', { pids: { max: 2 } }).increases, [{ kind: 'pids-max', count: 1, counter: 2 }]);
  assert.deepEqual(t.update('/c', { memory: mem({ oomKill: 2 }) }).increases, [{ kind: 'oom-kill', count: 1, counter: 2 }]);
  assert.deepEqual(diffCounters(undefined, {}), { increases: [], rebaselined: [] });
  t.forget('/c');
  assert.equal(t.size, 0);
  assert.deepEqual(t.update('/c', { pids: { max: 9 } }).increases, []);
});
