/**
 * Issue 11's pure parts: the spec's cgroupsPath as runc's drivers read it, the policy's inputs
 * from a real podman 4.3.1 config.json (trimmed), the one policy function, runc's argv as the
 * containerd shim passes it (measured with Docker 20.10), and the limit's origin.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cgroupsPathToCgroup, expandSlice, parseJsonLossless, setSpecPidsLimit, specPolicyInputs } from '../../src/policy/spec';
import { evaluatePolicy, type PolicyInput } from '../../src/policy/evaluate';
import { validateConfig } from '../../src/config/load';
import { parseRuncArgs, passedFds } from '../../src/hook/runc-wrapper';
import { limitOrigin, safeFileName, type HookRecord } from '../../src/hook/records';
import { cgroupFromProc } from '../../src/hook/oci-hook';

test('cgroupsPath: cgroupfs paths as they are; systemd "slice:prefix:name" as runc 1.1 expands it', () => {
  assert.equal(cgroupsPathToCgroup('/libpod_parent/libpod-abc'), '/libpod_parent/libpod-abc');
  assert.equal(cgroupsPathToCgroup('system.slice:docker:0123'), '/system.slice/docker-0123.scope');
  assert.equal(cgroupsPathToCgroup('machine.slice:libpod:0123'), '/machine.slice/libpod-0123.scope');
  assert.equal(cgroupsPathToCgroup(':crio:0123'), '/system.slice/crio-0123.scope');
  assert.equal(
    cgroupsPathToCgroup('kubepods-burstable-pod1234_5678.slice:cri-containerd:0123'),
    '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-0123.scope',
  );
  assert.equal(cgroupsPathToCgroup('user.slice:podman:my.slice'), '/user.slice/my.slice');
  assert.equal(cgroupsPathToCgroup('-.slice:x:1'), '/x-1.scope');
  assert.equal(cgroupsPathToCgroup('/a/../b'), null);
  assert.equal(cgroupsPathToCgroup('bad--.slice:x:1'), null);
  assert.equal(cgroupsPathToCgroup(undefined, 'abc'), '/abc');
  assert.equal(expandSlice('a-b-c.slice'), '/a.slice/a-b.slice/a-b-c.slice');
  assert.equal(expandSlice('nope'), null);
});

const podmanSpec = `{"ociVersion":"1.0.2-dev","process":{"rlimits":[{"type":"RLIMIT_NOFILE","hard":18446744073709551615,"soft":18446744073709551615}]},
"linux":{"resources":{"devices":[{"allow":false,"access":"rwm"}],"pids":{"limit":2048},"cpu":{"quota":200000,"period":100000}},
"cgroupsPath":"/libpod_parent/libpod-5baf84d7694b78cadfbd913273c4e09fe36a216bb9b053f67ba2e96b7ebad629"}}`;

test('a podman spec: quota, podman\'s 2048, and a uint64 rlimit that survives the round trip exactly', () => {
  const doc = parseJsonLossless(podmanSpec);
  const i = specPolicyInputs(doc.value);
  assert.deepEqual(i, { cgroupPath: '/libpod_parent/libpod-5baf84d7694b78cadfbd913273c4e09fe36a216bb9b053f67ba2e96b7ebad629', quota: { quotaUs: 200000, periodUs: 100000 }, cpusetCount: null, pidsLimit: 2048 });
  setSpecPidsLimit(doc.value as Record<string, unknown>, 6144);
  const out = doc.stringify(doc.value);
  assert.match(out, /"hard":18446744073709551615,"soft":18446744073709551615/);
  assert.match(out, /"pids":\{"limit":6144\}/);
  // --pids-limit -1: podman writes 0, runc writes nothing, a new cgroup is "max".
  assert.equal(specPolicyInputs({ linux: { resources: { pids: { limit: 0 } } } }).pidsLimit, 'max');
  assert.equal(specPolicyInputs({ linux: { resources: { cpu: { cpus: '0-1', quota: -1 } } } }).cpusetCount, 2);
});

const base = (over: Partial<PolicyInput> = {}): PolicyInput => ({
  policy: validateConfig({}).policy, quota: null, cpusetCount: null, hostCores: 2, ancestors: [], current: 'max', cgroupPath: '/x/y', runtime: 'podman', ...over,
});

test('the one policy function: keep-lower, our own value, overrides, and the headroom only when tasks are known', () => {
  assert.equal(evaluatePolicy(base({ quota: { quotaUs: 800000, periodUs: 100000 }, tasks: null })).policyValue, 8192);
  const kept = evaluatePolicy(base({ current: 2048 }));
  assert.equal(kept.action, 'kept-lower');
  assert.equal(evaluatePolicy(base({ current: 2048, ours: 2048 })).action, 'set', 'a hook\'s own earlier value is not an operator\'s');
  const lowering = evaluatePolicy(base({ current: 'max' }));
  assert.equal(lowering.lowers, true);
  assert.equal(lowering.action, 'set');
  assert.equal(evaluatePolicy(base({ current: 'max', tasks: 6000 })).action, 'too-low');
  assert.equal(evaluatePolicy(base({ current: 'max', tasks: null })).action, 'set', 'no tasks yet at precreate');
  const policy = validateConfig({ policy: { overrides: [{ pathPattern: '^/system\\.slice/docker-', pidsMax: 5000 }] } }).policy;
  assert.equal(evaluatePolicy(base({ policy, cgroupPath: cgroupsPathToCgroup('system.slice:docker:0123')! })).policyValue, 5000, 'the override sees the translated path');
  assert.equal(evaluatePolicy(base({ ancestors: [{ path: '/x', quota: { quotaUs: 700000, periodUs: 100000 } }] })).cores.source, 'parent-quota');
});

test('runc argv as the containerd shim gives it: global flags first, bundle, id, --preserve-fds', () => {
  const argv = ['--root', '/r/moby', '--log', '/b/log.json', '--log-format', 'json', 'create', '--bundle', '/b', '--pid-file', '/b/init.pid', 'c0ffee'];
  const i = parseRuncArgs(argv, '/cwd');
  assert.equal(i.command, 'create');
  assert.equal(i.bundle, '/b');
  assert.equal(i.id, 'c0ffee');
  assert.deepEqual(i.global, { root: '/r/moby', log: '/b/log.json', 'log-format': 'json' });
  assert.equal(parseRuncArgs(['--systemd-cgroup', 'run', '-b=rel', '--preserve-fds=2', 'id'], '/cwd').bundle, '/cwd/rel');
  assert.equal(parseRuncArgs(['create', 'id'], '/cwd').bundle, '/cwd', 'runc\'s default bundle is the working directory');
  assert.equal(parseRuncArgs(['exec', '--preserve-fds', '3', '--process', '/p.json', 'id'], '/').preserveFds, 3);
  assert.equal(parseRuncArgs(['--root', '/r', 'kill', 'id', '9'], '/').command, 'kill');
  assert.deepEqual(passedFds(0, { LISTEN_FDS: 'x' }), []);
});

test('the limit\'s origin, and record file names', () => {
  const rec = { v: 1, stage: 'precreate', cgroupPath: '/a', at: 0, action: 'set', wrote: true, reason: '' } as HookRecord;
  assert.equal(limitOrigin(rec, { action: 'unchanged', written: false }, false), 'creation');
  assert.equal(limitOrigin({ ...rec, failed: true, action: 'error' }, { action: 'set', written: true }, false), 'daemon');
  assert.equal(limitOrigin(undefined, { action: 'kept-lower', written: false }, false), 'runtime');
  assert.equal(limitOrigin(undefined, { action: 'unchanged', written: false }, true), 'daemon');
  assert.equal(safeFileName('/libpod_parent/libpod-ab'), '%2flibpod_parent%2flibpod-ab');
  const long = safeFileName(`/${'k'.repeat(300)}`);
  assert.ok(long.length < 220 && long !== safeFileName(`/${'k'.repeat(301)}`));
  assert.equal(cgroupFromProc('12:pids:/libpod_parent/libpod-ab\n1:name=systemd:/\n0::/\n', 'v1'), '/libpod_parent/libpod-ab');
  assert.equal(cgroupFromProc('0::/libpod_parent/libpod-ab\n', 'v2'), '/libpod_parent/libpod-ab');
});
