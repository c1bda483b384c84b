import test from 'node:test';
import assert from 'node:assert/strict';
import { validateConfig } from '../../src/config/load';
import { ancestorsOf, coresFor } from '../../src/policy/cores';
import { decide, policyValue, tooLowForTasks } from '../../src/policy/decide';

const policy = validateConfig({}).policy;
const host = 2;

test('cores: the quota rounded up, else the cpuset, else the host', () => {
  assert.deepEqual(coresFor({ quotaUs: 150000, periodUs: 100000 }, 8, host).cores, 2);
  assert.equal(coresFor({ quotaUs: 150000, periodUs: 100000 }, 8, host).source, 'quota');
  assert.equal(coresFor({ quotaUs: 200000, periodUs: 100000 }, null, host).cores, 2);
  assert.equal(coresFor({ quotaUs: 1600000, periodUs: 100000 }, null, host).cores, 16);
  assert.equal(coresFor({ quotaUs: 50000, periodUs: 100000 }, null, host).cores, 1);
  assert.deepEqual(coresFor({ quotaUs: 'max', periodUs: 100000 }, 4, 8), { cores: 4, source: 'cpuset', detail: 'cpuset of 4' });
  assert.equal(coresFor(null, null, host).source, 'host');
  assert.equal(coresFor(null, 0, 12).cores, 12);
});

test('cores: a cpuset counts only when it is narrower than the host', () => {
  assert.deepEqual(coresFor(null, 8, 8), { cores: 8, source: 'host', detail: 'host has 8' });
  assert.deepEqual(coresFor(null, 7, 8), { cores: 7, source: 'cpuset', detail: 'cpuset of 7' });
  // A cpuset wider than the online CPUs (offline ones listed) is the host.
  assert.equal(coresFor(null, 16, 8).source, 'host');
});

test('cores: the tightest quota on the container or an ancestor (a Kubernetes pod-level limit)', () => {
  const q = (cores: number | 'max') => ({ quotaUs: cores === 'max' ? ('max' as const) : cores * 100000, periodUs: 100000 });
  const pod = '/kubepods/burstable/podx';
  assert.deepEqual(coresFor(q('max'), null, 2, [{ path: pod, quota: q(8) }, { path: '/kubepods/burstable', quota: q('max') }]), {
    cores: 8,
    source: 'parent-quota',
    detail: `quota 800000/100000 of ${pod}`,
  });
  assert.equal(coresFor(q(4), null, 2, [{ path: pod, quota: q(8) }]).source, 'quota', 'its own, tighter');
  assert.deepEqual(coresFor(q(16), null, 2, [{ path: pod, quota: q(8) }]).cores, 8, "the pod's, tighter");
  assert.equal(coresFor(null, 1, 2, [{ path: pod, quota: null }]).source, 'cpuset', 'an ancestor without cpu.max has no say');
  assert.deepEqual(ancestorsOf('/kubepods/burstable/podx/abc'), ['/kubepods/burstable/podx', '/kubepods/burstable', '/kubepods']);
  assert.deepEqual(ancestorsOf('/abc'), []);
});

test('policy value: max(cores, 6) x 1024', () => {
  assert.equal(policyValue(policy, 2), 6144); // a 2-CPU container
  assert.equal(policyValue(policy, 1), 6144);
  assert.equal(policyValue(policy, 6), 6144);
  assert.equal(policyValue(policy, 7), 7168);
  assert.equal(policyValue(policy, 16), 16384); // a 16-CPU container
  assert.equal(policyValue(policy, Math.ceil(1.5)), 6144);
});

const cores = (n: number) => coresFor({ quotaUs: n * 100000, periodUs: 100000 }, null, host);

test('existing limits: max is replaced, lower kept by default, higher lowered, equal unchanged', () => {
  assert.equal(decide(policy, cores(2), 'max', '/docker/x', 'docker').action, 'set');
  const lower = decide(policy, cores(2), 2048, '/docker/x', 'docker');
  assert.equal(lower.action, 'kept-lower');
  assert.match(lower.reason, /2048.*6144.*keep-lower/);
  assert.equal(decide(policy, cores(2), 100000, '/docker/x', 'docker').action, 'set');
  assert.equal(decide(policy, cores(2), 6144, '/docker/x', 'docker').action, 'unchanged');
  const replace = { ...policy, existing: 'replace' as const };
  assert.equal(decide(replace, cores(2), 2048, '/docker/x', 'docker').action, 'set');
  assert.equal(decide(replace, cores(2), 2048, '/docker/x', 'docker').policyValue, 6144);
});

test('overrides: first match wins; exclude, fixed value, own numbers; by path and by runtime', () => {
  const p = validateConfig({
    policy: {
      overrides: [
        { runtime: 'lxc', exclude: true },
        { pathPattern: '^/kubepods/besteffort/', pidsMax: 4096 },
        { runtime: 'podman', minCores: 2, pidsPerCore: 512 },
        { runtime: 'podman', pidsMax: 1 },
      ],
    },
  }).policy;
  assert.equal(decide(p, cores(2), 'max', '/lxc.payload.web', 'lxc').action, 'excluded');
  assert.equal(decide(p, cores(2), 'max', '/kubepods/besteffort/podx/abc', 'containerd').policyValue, 4096);
  assert.equal(decide(p, cores(2), 'max', '/kubepods/burstable/podx/abc', 'containerd').policyValue, 6144);
  assert.equal(decide(p, cores(3), 'max', '/libpod_parent/libpod-abc', 'podman').policyValue, 1536);
});

test('keep-lower protects limits others set, not the value cgwatchdog itself wrote earlier', () => {
  // Written from host cores before the runtime's quota of 8 CPUs landed: 6144, now the policy says 8192.
  const d = decide(policy, cores(8), 6144, '/docker/x', 'docker', 6144);
  assert.equal(d.action, 'set');
  assert.equal(d.policyValue, 8192);
  assert.match(d.reason, /our earlier 6144/);
  // Someone else's 4096 is still kept.
  assert.equal(decide(policy, cores(8), 4096, '/docker/x', 'docker', 6144).action, 'kept-lower');
});

test('a lowering write never goes below the tasks running plus 10% headroom', () => {
  assert.equal(tooLowForTasks(6144, 9000), 'policy 6144 is below the 9000 tasks it runs plus 900 headroom: not written (every fork would fail); raise it with an override');
  assert.equal(tooLowForTasks(9900, 9000), null);
  assert.notEqual(tooLowForTasks(9899, 9000), null);
  assert.equal(tooLowForTasks(40, 0), null, 'an idle container takes any limit');
  assert.notEqual(tooLowForTasks(5, 5), null, 'a limit at pids.current leaves no fork');
  assert.equal(tooLowForTasks(6144, null), null, 'unknown (cgroup gone): nothing to protect');
});
