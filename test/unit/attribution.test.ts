import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attributeMemoryEvents, attributePidsHits, hitsBelow, nearestWatchedAncestors, subtractChildren, type PidsObservation } from '../../src/detect/attribution';

// A Kubernetes pod with two containers, the kubepods tree above it watched too.
const KP = '/kubepods';
const POD = '/kubepods/burstable/pod1234';
const C1 = `${POD}/c1`;
const C2 = `${POD}/c2`;

const obs = (path: string, delta: number, current: number | undefined, max: number | 'max' | undefined, hierarchical: boolean): PidsObservation => ({
  path,
  delta,
  current,
  max,
  hierarchical,
});

test('nearest watched ancestors come from the paths; unwatched levels are skipped', () => {
  const m = nearestWatchedAncestors([KP, POD, C1, `${C2}/`]);
  assert.equal(m.get(C1), POD);
  assert.equal(m.get(C2), POD);
  assert.equal(m.get(POD), KP); // /kubepods/burstable is not watched
  assert.equal(m.get(KP), undefined);
});

test('>= 6.11: pod-level limit hit 3 times shows in pod and kubepods, attributed to the pod only', () => {
  // The pod is at its limit of 100 (c1 has 60, c2 has 40); c1's forks fail. Hierarchical
  // pids.events: max+3 in the pod and every ancestor, nothing in the containers.
  const r = attributePidsHits([
    obs(KP, 3, 500, 'max', true),
    obs(POD, 3, 100, 100, true),
    obs(C1, 0, 60, 'max', true),
    obs(C2, 0, 40, 'max', true),
  ]);
  assert.deepEqual(r, [{ path: POD, count: 3, seenIn: [POD, KP] }]);
});

test('>= 6.11: container-level limit hit: the container only', () => {
  const r = attributePidsHits([obs(KP, 2, 500, 'max', true), obs(POD, 2, 80, 1000, true), obs(C1, 2, 50, 50, true), obs(C2, 0, 30, 50, true)]);
  assert.deepEqual(r, [{ path: C1, count: 2, seenIn: [C1, POD, KP] }]);
});

test('>= 6.11: both at once: container hit twice, pod hit once (from c2)', () => {
  const r = attributePidsHits([obs(KP, 3, 500, 'max', true), obs(POD, 3, 100, 100, true), obs(C1, 2, 50, 50, true), obs(C2, 0, 50, 'max', true)]);
  assert.deepEqual(r, [
    { path: POD, count: 1, seenIn: [POD, KP] },
    { path: C1, count: 2, seenIn: [C1, POD, KP] },
  ]);
  const total = r.reduce((s, a) => s + a.count, 0);
  assert.equal(total, 3, 'each hit counted once');
});

test('>= 6.11: a child read that raced ahead of its parent never makes the parent negative', () => {
  const r = attributePidsHits([obs(POD, 0, 10, 100, true), obs(C1, 1, 10, 10, true)]);
  assert.deepEqual(r, [{ path: C1, count: 1, seenIn: [C1] }]);
});

test('< 6.11: pod-level limit hit shows in the forking container; attributed to the pod', () => {
  const r = attributePidsHits([obs(KP, 0, 500, 'max', false), obs(POD, 0, 100, 100, false), obs(C1, 3, 60, 'max', false), obs(C2, 0, 40, 'max', false)]);
  assert.deepEqual(r, [{ path: POD, count: 3, seenIn: [C1] }]);
});

test('< 6.11: container-level limit hit stays in the container', () => {
  const r = attributePidsHits([obs(POD, 0, 80, 1000, false), obs(C1, 2, 50, 50, false), obs(C2, 0, 30, 50, false)]);
  assert.deepEqual(r, [{ path: C1, count: 2, seenIn: [C1] }]);
});

test('< 6.11: both: container at its own limit keeps its hits; the other container at pod limit goes to the pod', () => {
  const r = attributePidsHits([obs(POD, 0, 100, 100, false), obs(C1, 2, 50, 50, false), obs(C2, 1, 50, 'max', false)]);
  assert.deepEqual(r, [
    { path: POD, count: 1, seenIn: [C2] },
    { path: C1, count: 2, seenIn: [C1] },
  ]);
});

test('< 6.11: nobody at the limit any more (a task exited): least headroom wins; nothing known: itself', () => {
  assert.deepEqual(attributePidsHits([obs(POD, 0, 97, 100, false), obs(C1, 1, 40, 50, false)]), [{ path: POD, count: 1, seenIn: [C1] }]);
  assert.deepEqual(attributePidsHits([obs(POD, 0, undefined, undefined, false), obs(C1, 1, undefined, 'max', false)]), [{ path: C1, count: 1, seenIn: [C1] }]);
});

test('no deltas: nothing', () => {
  assert.deepEqual(attributePidsHits([obs(POD, 0, 100, 100, true), obs(C1, 0, 1, 1, false)]), []);
});

test('subtractChildren: sums only the nearest watched children', () => {
  const own = subtractChildren(new Map([[KP, 5], [POD, 4], [C1, 1], [C2, 2]]));
  assert.deepEqual(Object.fromEntries(own), { [KP]: 1, [POD]: 1, [C1]: 1, [C2]: 2 });
});

test('memory.events (hierarchical): container OOM kill seen in pod and ancestors -> the container only', () => {
  // The kernel counts oom_kill in the victim's memcg and every ancestor.
  const r = attributeMemoryEvents([
    { path: KP, deltas: { 'oom-kill': 1, 'memory-max': 5 }, hierarchical: true },
    { path: POD, deltas: { 'oom-kill': 1, oom: 1, 'memory-max': 5 }, hierarchical: true },
    { path: C1, deltas: { 'oom-kill': 1, oom: 0, 'memory-max': 3 }, hierarchical: true },
    { path: C2, deltas: {}, hierarchical: true },
  ]);
  assert.deepEqual(r, [
    { path: POD, kind: 'memory-max', count: 2 },
    // Pod and container limits equal: `oom` lands in the pod; oom_kill is the container's.
    { path: POD, kind: 'oom', count: 1 },
    { path: C1, kind: 'memory-max', count: 3 },
    { path: C1, kind: 'oom-kill', count: 1 },
  ]);
});

test('memory.events.local: each cgroup\'s own events exactly, also when a child\'s counter races ahead of its parent\'s read', () => {
  // The pod's own limit was hit (oom in the pod), and a moment later the container's: the pod
  // was read before the container's event, so its hierarchical delta holds only its own.
  const racing = [
    { path: POD, deltas: { oom: 1 }, hierarchical: true },
    { path: C1, deltas: { oom: 1 }, hierarchical: true },
  ];
  // Subtraction alone loses the pod's event in this read (1 - 1 = 0).
  assert.deepEqual(attributeMemoryEvents(racing), [{ path: C1, kind: 'oom', count: 1 }]);
  const withLocal = [
    { ...racing[0]!, localDeltas: { oom: 1 } },
    { ...racing[1]!, localDeltas: { oom: 1 } },
  ];
  assert.deepEqual(attributeMemoryEvents(withLocal), [
    { path: POD, kind: 'oom', count: 1 },
    { path: C1, kind: 'oom', count: 1 },
  ]);
  // An OOM kill in a sub-cgroup nobody watches (the container's init.scope): in the container's
  // hierarchical counter, not in its local one: still the container's.
  assert.deepEqual(attributeMemoryEvents([{ path: C1, deltas: { 'oom-kill': 1 }, hierarchical: true, localDeltas: {} }]), [{ path: C1, kind: 'oom-kill', count: 1 }]);
  // A pod whose container's scope was removed before it could be read (the OOM killed its
  // last process): the pod's hierarchical counters moved, its own did not: not the pod's.
  assert.deepEqual(attributeMemoryEvents([{ path: POD, deltas: { oom: 1, 'oom-kill': 1 }, hierarchical: true, localDeltas: {}, ownsBelow: false }]), []);
});

test('memory v1 (local counters): taken as they are', () => {
  const r = attributeMemoryEvents([
    { path: POD, deltas: { 'oom-kill': 1 }, hierarchical: false },
    { path: C1, deltas: { 'oom-kill': 2 }, hierarchical: false },
  ]);
  assert.deepEqual(r, [
    { path: POD, kind: 'oom-kill', count: 1 },
    { path: C1, kind: 'oom-kill', count: 2 },
  ]);
});

// 6.11+ with pids.events.local (counts as measured in UML 6.12 and 7.2).
const local = (path: string, delta: number, localDelta: number): PidsObservation => ({ path, delta, hierarchical: true, localDelta });

test('6.11+: pids.events.local gives each cgroup its own limit hits exactly, no subtraction', () => {
  // A container's systemd set pids.max on init.scope; 4 forks rejected there.
  assert.deepEqual(attributePidsHits([local('/c', 4, 0), local('/c/init.scope', 4, 4)]).map((a) => [a.path, a.count, a.seenIn]), [['/c/init.scope', 4, ['/c/init.scope', '/c']]]);
  // A pod limit hit by a container's fork: the pod's.
  assert.deepEqual(attributePidsHits([local(POD, 1, 1), local(C1, 0, 0)]).map((a) => [a.path, a.count]), [[POD, 1]]);
  assert.deepEqual(hitsBelow([local(POD, 1, 1), local(C1, 0, 0)]), []);
});

test('6.11+: a child counter read ahead of its parent invents no hit; a hit below every watched cgroup is found, not given to the container', () => {
  // The pod read first (1), its container a moment later (2): nothing in the pod itself.
  assert.deepEqual(attributePidsHits([local(POD, 1, 0), local(C1, 2, 2)]).map((a) => [a.path, a.count]), [[C1, 2]]);
  assert.deepEqual(hitsBelow([local(POD, 1, 0), local(C1, 2, 2)]), []);
  // The sub-cgroup is not watched yet: the container's own counter did not move, so no
  // container hit; the 4 are below it, for the engine to find.
  assert.deepEqual(attributePidsHits([local('/c', 4, 0)]), []);
  assert.deepEqual(hitsBelow([local('/c', 4, 0)]), [{ path: '/c', count: 4 }]);
});

test('memory.events.local read ahead of memory.events (the kernel bumps local first): counted once, in whichever read shows it', () => {
  // A pod's own oom: read N sees only the local file move, read N+1 only the hierarchical one.
  const carry = new Map();
  const n = attributeMemoryEvents([{ path: POD, deltas: {}, hierarchical: true, localDeltas: { oom: 1 }, ownsBelow: false }], carry);
  assert.deepEqual(n, [{ path: POD, kind: 'oom', count: 1 }]);
  const n1 = attributeMemoryEvents([{ path: POD, deltas: { oom: 1 }, hierarchical: true, localDeltas: {}, ownsBelow: false }], carry);
  assert.deepEqual(n1, []);
  // A container's own OOM kill split the same way: not counted a second time as its sub-cgroups'.
  const c = new Map();
  assert.deepEqual(attributeMemoryEvents([{ path: C1, deltas: {}, hierarchical: true, localDeltas: { 'oom-kill': 1 }, ownsBelow: true }], c), [{ path: C1, kind: 'oom-kill', count: 1 }]);
  assert.deepEqual(attributeMemoryEvents([{ path: C1, deltas: { 'oom-kill': 1 }, hierarchical: true, localDeltas: {}, ownsBelow: true }], c), []);
  // Without the carry, the second read would have invented a hit below the container.
  assert.deepEqual(attributeMemoryEvents([{ path: C1, deltas: { 'oom-kill': 1 }, hierarchical: true, localDeltas: {}, ownsBelow: true }]), [{ path: C1, kind: 'oom-kill', count: 1 }]);
  // A watched sub-cgroup read after its container, ahead of it: the container owes it, then a real hit below still counts.
  const SUB = `${C1}/init.scope`;
  const s = new Map();
  assert.deepEqual(
    attributeMemoryEvents([
      { path: C1, deltas: {}, hierarchical: true, localDeltas: {}, ownsBelow: true },
      { path: SUB, deltas: { 'oom-kill': 1 }, hierarchical: true, localDeltas: { 'oom-kill': 1 }, ownsBelow: true },
    ], s),
    [{ path: SUB, kind: 'oom-kill', count: 1 }],
  );
  assert.deepEqual(attributeMemoryEvents([{ path: C1, deltas: { 'oom-kill': 1 }, hierarchical: true, localDeltas: {}, ownsBelow: true }, { path: SUB, deltas: {}, hierarchical: true, localDeltas: {}, ownsBelow: true }], s), []);
  assert.deepEqual(attributeMemoryEvents([{ path: C1, deltas: { 'oom-kill': 1 }, hierarchical: true, localDeltas: {}, ownsBelow: true }, { path: SUB, deltas: {}, hierarchical: true, localDeltas: {}, ownsBelow: true }], s), [{ path: C1, kind: 'oom-kill', count: 1 }]);
});
