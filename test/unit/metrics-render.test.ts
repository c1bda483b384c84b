import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ContainerRenderer, renderContainers, type ContainerSnapshot } from '../../src/metrics/registry';

const snap = (i: number, over: Partial<ContainerSnapshot> = {}): ContainerSnapshot => ({
  id: i.toString(16).padStart(64, '0'),
  runtime: 'docker',
  cgroupPath: `/docker/${i}`,
  pidsCurrent: 3,
  pidsMax: 6144,
  policyPidsMax: 6144,
  coresUsed: 2,
  coresSource: 'host',
  memoryUsage: 1000,
  memoryLimit: 'max',
  pidsLimitHits: 0,
  oomEvents: 0,
  oomKills: 0,
  limitOrigin: 'daemon',
  ...over,
});

test('kept lines: every scrape equals a fresh render, as values, names and the container set change', () => {
  const r = new ContainerRenderer();
  let list = [snap(1), snap(2), snap(3)];
  assert.equal(r.render(list), renderContainers(list));
  list = [snap(1, { pidsCurrent: 4, name: 'web' }), snap(2, { pidsMax: 'max' }), snap(3, { departed: true, oomKills: 1 })];
  const second = r.render(list);
  assert.equal(second, renderContainers(list));
  assert.match(second, /cgwatchdog_container_pids_current\{id="0+1"\} 4\n/);
  assert.doesNotMatch(second, /cgwatchdog_container_pids_max\{id="0+2"\}/, 'an unlimited container has no pids_max series');
  assert.doesNotMatch(second, /cgwatchdog_container_pids_current\{id="0+3"\}/, 'a departed container keeps only its counters');
  assert.match(second, /cgwatchdog_container_info\{id="0+1",name="web",/);
  // A container gone from the list is gone from the text, and from what is kept.
  list = [snap(2)];
  assert.equal(r.render(list), renderContainers(list));
  assert.doesNotMatch(r.render(list), /id="0+1"/);
  // The same cgroup twice in one scrape (live and departed) gives both rows.
  list = [snap(5), snap(5, { departed: true, oomKills: 2 })];
  assert.equal(r.render(list), renderContainers(list));
});
