import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderChunks, renderContainers, type ContainerSnapshot } from '../../src/metrics/registry';

const snap = (i: number, over: Partial<ContainerSnapshot> = {}): ContainerSnapshot => ({
  id: i.toString(16).padStart(64, '0'),
  runtime: 'docker',
  cgroupPath: `/docker/${i}`,
  pidsCurrent: 3,
  pidsMax: 6144,
  policyPidsMax: 6144,
  coresUsed: 2,
  coresSource: 'host',
  memoryUsage: 1000 + i,
  memoryLimit: 'max',
  pidsLimitHits: 0,
  oomEvents: 0,
  oomKills: 0,
  limitOrigin: 'daemon',
  ...over,
});

test('per-container families in pieces: every line whole, pieces near 64 KiB, the families each contiguous', () => {
  const list = Array.from({ length: 3000 }, (_, i) => snap(i, i % 7 === 0 ? { departed: true, oomKills: 1 } : i % 5 === 0 ? { pidsMax: 'max', name: 'we"b\\1', pod: 'p', namespace: 'ns' } : {}));
  const pieces = [...renderChunks(list)];
  assert.ok(pieces.length > 10, `only ${pieces.length} pieces`);
  for (const p of pieces.slice(0, -1)) {
    assert.ok(p.endsWith('\n'), 'a piece ends inside a line');
    assert.ok(p.length >= 64 * 1024 && p.length < 64 * 1024 + 512, `piece of ${p.length} bytes`);
  }
  const text = pieces.join('');
  assert.equal(text, renderContainers(list));
  const lines = text.split('\n').filter(Boolean);
  // Each family's samples follow its HELP/TYPE, none elsewhere.
  const seen = new Set<string>();
  let current = '';
  for (const l of lines) {
    if (l.startsWith('# HELP ')) {
      current = l.split(' ')[2]!;
      assert.ok(!seen.has(current), `${current} twice`);
      seen.add(current);
      continue;
    }
    if (l.startsWith('# TYPE ')) continue;
    assert.equal(l.slice(0, l.indexOf('{')), current, `a ${l.slice(0, 40)} line outside its family`);
  }
  assert.equal(lines.filter((l) => l.startsWith('cgwatchdog_container_info{')).length, 3000);
  // A departed container keeps its counters only; an unlimited one has no pids_max; labels escaped.
  assert.equal(lines.filter((l) => l.startsWith('cgwatchdog_container_pids_current{')).length, 3000 - Math.ceil(3000 / 7));
  assert.match(text, new RegExp(`cgwatchdog_container_oom_kills_total\\{id="${snap(7).id}"\\} 1\\n`));
  assert.doesNotMatch(text, new RegExp(`cgwatchdog_container_pids_max\\{id="${snap(5).id}"\\}`));
  assert.match(text, new RegExp(`cgwatchdog_container_info\\{id="${snap(5).id}",name="we\\\\"b\\\\\\\\1",image="",runtime="docker",pod="p",namespace="ns"\\} 1\\n`));
  assert.match(text, new RegExp(`cgwatchdog_container_memory_usage_bytes\\{id="${snap(1).id}"\\} 1001\\n`));
  assert.deepEqual([...renderChunks([])].join('').split('\n').filter((l) => !l.startsWith('#') && l), []);
});
