import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SafetyNet } from '../../src/detect/safety-net';
import { sweepCoverage, unknownCapabilities, type KernelCapabilities } from '../../src/kernel/capabilities';

test('safety net: every cgroup once a period, spread evenly, adds reached within a period, removals never read', () => {
  const net = new SafetyNet(60_000);
  for (let i = 0; i < 5000; i++) net.add(`/c${i}`);
  const seen = new Map<string, number[]>();
  const perTick: number[] = [];
  for (let tick = 0; tick < 180; tick++) {
    if (tick === 30) net.add('/late');
    if (tick === 30) net.delete('/c4999');
    const { paths } = net.take(1000);
    perTick.push(paths.length);
    for (const p of paths) (seen.get(p) ?? seen.set(p, []).get(p)!).push(tick);
  }
  // 5,000 over 60 ticks: 84 a tick, never a burst.
  assert.ok(Math.max(...perTick) <= 85, `at most ${Math.max(...perTick)} a tick`);
  for (let i = 0; i < 4999; i++) {
    const ticks = seen.get(`/c${i}`)!;
    assert.ok(ticks[0]! < 60, `/c${i} first read at tick ${ticks[0]}`);
    for (let k = 1; k < ticks.length; k++) assert.ok(ticks[k]! - ticks[k - 1]! <= 60, `/c${i}: ${ticks[k - 1]} -> ${ticks[k]}`);
  }
  const late = seen.get('/late')!;
  assert.ok(late[0]! - 30 <= 60, `added at 30, first read at ${late[0]}`);
  assert.ok(!(seen.get('/c4999') ?? []).some((t) => t > 30), 'a removed cgroup is not read');
  assert.equal(net.size, 5000);
});

test('safety net: every tenth round is full', () => {
  const net = new SafetyNet(10_000, 10);
  net.add('/a');
  const full = Array.from({ length: 30 }, () => net.take(1000).full);
  assert.equal(full.filter(Boolean).length, 3);
});

const caps = (o: Partial<KernelCapabilities>): KernelCapabilities => ({ ...unknownCapabilities({ cgroups: { version: 'v1' } as never, procRoot: '/nonexistent' }, 'test'), ...o });

test('sweep coverage follows what the probe measured; unknown covers nothing', () => {
  const alerted = (k: string) => k !== 'memory-max';
  const opts = { inotify: true, kmsg: true, alerted };
  // This host (6.18, v1): no inotify on pids.events, kmsg logs the first rejection.
  assert.deepEqual(sweepCoverage(caps({ pidsInotify: 'no', pidsKmsg: 'yes' }), 'v1', opts), { pidsInotify: false, pidsKmsgFirst: true, memoryInotify: false, memoryKmsg: true });
  // 6.1 on v1: pids.events notifies.
  assert.equal(sweepCoverage(caps({ pidsInotify: 'yes', pidsKmsg: 'yes' }), 'v1', opts).pidsInotify, true);
  // Observe mode: every signal unknown, nothing covered.
  assert.deepEqual(sweepCoverage(caps({}), 'v1', opts), { pidsInotify: false, pidsKmsgFirst: false, memoryInotify: false, memoryKmsg: false });
  assert.deepEqual(sweepCoverage(caps({}), 'v2', opts), { pidsInotify: false, pidsKmsgFirst: false, memoryInotify: false, memoryKmsg: false });
  // v2 measured: both notified.
  const v2 = sweepCoverage(caps({ pidsInotify: 'yes', pidsKmsg: 'yes', memoryInotify: 'yes' }), 'v2', opts);
  assert.equal(v2.pidsInotify && v2.memoryInotify, true);
  // Alerting memory-max on v1 (failcnt is not reported) or turning kmsg off leaves memory uncovered.
  assert.equal(sweepCoverage(caps({ pidsKmsg: 'yes' }), 'v1', { ...opts, alerted: () => true }).memoryKmsg, false);
  assert.equal(sweepCoverage(caps({ pidsKmsg: 'yes' }), 'v1', { ...opts, kmsg: false }).pidsKmsgFirst, false);
  // inotify turned off in the config: not covered even where measured.
  assert.equal(sweepCoverage(caps({ pidsInotify: 'yes' }), 'v2', { ...opts, inotify: false }).pidsInotify, false);
});
