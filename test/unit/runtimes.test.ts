import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildRecognisers, builtinRuntimes, isPodCgroup, recognise } from '../../src/runtimes/index';

const ID = '9c6f1e7c2d4b8a0f3e5d7c9b1a2f4e6d8c0b2a4f6e8d0c2b4a6f8e0d2c4b6a8f';
const ID2 = 'ef807430361e6e82b45db92e2e9b6fbec98f419b12c591e655c1a725565e73a8';
const UID = 'fbdfe8e3-1c87-4ff2-907c-b2ec8e25d012';
const UID_ = UID.replace(/-/g, '_');

const all = buildRecognisers(builtinRuntimes, []);
const rec = (p: string) => recognise(all, p);

describe('docker', () => {
  it('cgroupfs /docker/<id>', () => assert.deepEqual(rec(`/docker/${ID}`), { runtime: 'docker', id: ID }));
  it('systemd docker-<id>.scope', () =>
    assert.deepEqual(rec(`/system.slice/docker-${ID}.scope`), { runtime: 'docker', id: ID }));
  it('nested under a prefix', () =>
    assert.deepEqual(rec(`/cgwd-test-abc/docker/${ID}`), { runtime: 'docker', id: ID }));
  it('a sub-cgroup is not a new container', () => {
    assert.equal(rec(`/docker/${ID}/init.scope`), null);
    assert.equal(rec(`/system.slice/docker-${ID}.scope/init.scope`), null);
  });
  it('the docker parent and other services are not containers', () => {
    assert.equal(rec('/docker'), null);
    assert.equal(rec('/system.slice/docker.service'), null);
    assert.equal(rec('/system.slice/docker-abc.scope'), null);
  });
  it('docker-shim in a Kubernetes pod carries the pod', () =>
    assert.deepEqual(
      rec(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/docker-${ID}.scope`),
      {
        runtime: 'docker',
        id: ID,
        podUid: UID,
        podPath: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice`,
      },
    ));
});

describe('containerd / Kubernetes', () => {
  for (const qos of ['burstable/', 'besteffort/', '']) {
    it(`cgroupfs /kubepods/${qos}pod<uid>/<id>`, () =>
      assert.deepEqual(rec(`/kubepods/${qos}pod${UID}/${ID2}`), {
        runtime: 'containerd',
        id: ID2,
        podUid: UID,
        podPath: `/kubepods/${qos}pod${UID}`,
      }));
  }
  it('systemd cri-containerd-<id>.scope, dashes restored in the pod UID', () =>
    assert.deepEqual(
      rec(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice/cri-containerd-${ID}.scope`),
      {
        runtime: 'containerd',
        id: ID,
        podUid: UID,
        podPath: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice`,
      },
    ));
  it('systemd guaranteed pod (kubepods-pod<uid>.slice)', () =>
    assert.deepEqual(rec(`/kubepods.slice/kubepods-pod${UID_}.slice/cri-containerd-${ID}.scope`)?.podUid, UID));
  it('static pod with a 32-hex UID', () =>
    assert.deepEqual(rec(`/kubepods/burstable/pod6a1b2c3d4e5f60718293a4b5c6d7e8f9/${ID}`)?.podUid, '6a1b2c3d4e5f60718293a4b5c6d7e8f9'));
  it('nested under a prefix (kubelet --cgroup-root)', () =>
    assert.equal(rec(`/cgwd-test-x/kubepods/burstable/pod${UID}/${ID}`)?.runtime, 'containerd'));
  it('the pod cgroup itself is not a container', () => {
    assert.equal(rec(`/kubepods/burstable/pod${UID}`), null);
    assert.equal(rec(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_}.slice`), null);
    assert.equal(rec('/kubepods/burstable'), null);
    assert.equal(rec('/kubepods.slice'), null);
  });
  it('a bare 64-hex directory outside a pod or /docker is not claimed', () => assert.equal(rec(`/other/${ID}`), null));
  it('a bare 64-hex directory under a "pod..." not in kubepods is not claimed', () =>
    assert.equal(rec(`/mystuff/pod${UID}/${ID}`), null));
});

describe('containerd alone: /<namespace>/<id>', () => {
  it('ctr run in the default namespace: the id is any name', () => {
    assert.deepEqual(rec('/default/redis-1'), { runtime: 'containerd', id: 'redis-1', namespace: 'default' });
    assert.deepEqual(rec(`/default/${ID}`), { runtime: 'containerd', id: ID, namespace: 'default' });
  });
  it('only at the top, only two levels, only valid identifiers', () => {
    assert.equal(rec('/default'), null);
    assert.equal(rec('/default/redis-1/sub'), null);
    assert.equal(rec('/x/default/redis-1'), null);
    assert.equal(rec('/default/-bad'), null);
    assert.equal(rec('/default/bad.'), null);
  });
  it('other namespaces only when configured', () => {
    assert.equal(rec('/k8s.io/abc'), null);
    assert.equal(rec('/system.slice/cron.service'), null);
    const rs = buildRecognisers(builtinRuntimes, [], { containerdNamespaces: ['k8s.io', 'cgwd-test-ns'] });
    assert.deepEqual(recognise(rs, '/k8s.io/abc'), { runtime: 'containerd', id: 'abc', namespace: 'k8s.io' });
    assert.deepEqual(recognise(rs, '/cgwd-test-ns/c1'), { runtime: 'containerd', id: 'c1', namespace: 'cgwd-test-ns' });
    assert.equal(recognise(rs, '/default/redis-1'), null, 'the list replaces the default');
  });
  it('Docker\'s /docker/<id> stays Docker\'s', () => assert.deepEqual(recognise(buildRecognisers(builtinRuntimes, [], { containerdNamespaces: ['docker'] }), `/docker/${ID}`), { runtime: 'docker', id: ID }));
});

describe('nerdctl and docker --cgroup-parent (fixtures: neither runs here)', () => {
  it('nerdctl, systemd driver: system.slice/nerdctl-<id>.scope (rootless: user.slice)', () => {
    assert.deepEqual(rec(`/system.slice/nerdctl-${ID}.scope`), { runtime: 'containerd', id: ID });
    assert.deepEqual(rec(`/user.slice/user-1000.slice/user@1000.service/user.slice/nerdctl-${ID}.scope`), { runtime: 'containerd', id: ID });
    assert.equal(rec(`/system.slice/nerdctl-${ID}.scope/init.scope`), null);
  });
  it('nerdctl, cgroupfs driver: /<namespace>/<id>, like ctr', () => assert.deepEqual(rec(`/default/${ID}`), { runtime: 'containerd', id: ID, namespace: 'default' }));
  it('docker run --cgroup-parent /tenant-a: claimed only under a configured parent', () => {
    assert.equal(rec(`/tenant-a/${ID}`), null);
    const rs = buildRecognisers(builtinRuntimes, [], { dockerCgroupParents: ['/tenant-a', '/org/team-b/'] });
    assert.deepEqual(recognise(rs, `/tenant-a/${ID}`), { runtime: 'docker', id: ID });
    assert.deepEqual(recognise(rs, `/org/team-b/${ID}`), { runtime: 'docker', id: ID });
    assert.equal(recognise(rs, `/tenant-a/x/${ID}`), null, 'directly under the parent only');
    assert.equal(recognise(rs, '/tenant-a/not-hex'), null);
    assert.deepEqual(recognise(rs, `/docker/${ID}`), { runtime: 'docker', id: ID }, '/docker/<id> still');
  });
});

describe('isPodCgroup', () => {
  it('cgroupfs pod directories', () => {
    assert.deepEqual(isPodCgroup(`/kubepods/burstable/pod${UID}`), { podUid: UID, podPath: `/kubepods/burstable/pod${UID}` });
    assert.deepEqual(isPodCgroup(`/kubepods/pod${UID}`), { podUid: UID, podPath: `/kubepods/pod${UID}` });
  });
  it('systemd pod slices', () => {
    const p = `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice`;
    assert.deepEqual(isPodCgroup(p), { podUid: UID, podPath: p });
  });
  it('containers, QoS classes and other cgroups are not pods', () => {
    assert.equal(isPodCgroup(`/kubepods/burstable/pod${UID}/${ID}`), null);
    assert.equal(isPodCgroup('/kubepods/burstable'), null);
    assert.equal(isPodCgroup('/kubepods.slice/kubepods-burstable.slice'), null);
    assert.equal(isPodCgroup(`/podcast/pod${UID}`), null);
    assert.equal(isPodCgroup('/'), null);
  });
});

describe('cri-o', () => {
  const pod = `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${UID_}.slice`;
  it('crio-<id>.scope in a pod slice', () =>
    assert.deepEqual(rec(`${pod}/crio-${ID}.scope`), { runtime: 'crio', id: ID, podUid: UID, podPath: pod }));
  it('cgroupfs crio-<id>', () => assert.equal(rec(`/kubepods/besteffort/pod${UID}/crio-${ID}`)?.runtime, 'crio'));
  it('conmon is not the container', () => {
    assert.equal(rec(`${pod}/crio-conmon-${ID}.scope`), null);
    assert.equal(rec(`/kubepods/besteffort/pod${UID}/crio-conmon-${ID}`), null);
  });
});

describe('podman', () => {
  it('cgroupfs /libpod_parent/libpod-<id> (this host)', () =>
    assert.deepEqual(rec(`/libpod_parent/libpod-${ID}`), { runtime: 'podman', id: ID }));
  it('systemd /machine.slice/libpod-<id>.scope', () =>
    assert.deepEqual(rec(`/machine.slice/libpod-${ID}.scope`), { runtime: 'podman', id: ID }));
  it('rootless, in the user slice', () =>
    assert.deepEqual(rec(`/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope`), { runtime: 'podman', id: ID }));
  it('podman pod', () =>
    assert.deepEqual(rec(`/machine.slice/machine-libpod_pod_${ID2}.slice/libpod-${ID}.scope`), { runtime: 'podman', id: ID }));
  it('nested under a test prefix', () =>
    assert.deepEqual(rec(`/cgwd-test-abc/libpod_parent/libpod-${ID}`), { runtime: 'podman', id: ID }));
  it('conmon and sub-cgroups are not containers', () => {
    assert.equal(rec(`/machine.slice/libpod-conmon-${ID}.scope`), null);
    assert.equal(rec(`/libpod_parent/conmon`), null);
    assert.equal(rec(`/libpod_parent/libpod-${ID}/container`), null);
    assert.equal(rec(`/machine.slice/libpod-${ID}.scope/container`), null);
    assert.equal(rec('/libpod_parent'), null);
  });
});

describe('lxc', () => {
  it('/lxc.payload.<name> (LXC 4+)', () => assert.deepEqual(rec('/lxc.payload.web-1'), { runtime: 'lxc', id: 'web-1' }));
  it('/lxc.payload/<name> (older)', () => assert.deepEqual(rec('/lxc.payload/web-1'), { runtime: 'lxc', id: 'web-1' }));
  it('/lxc/<name> (LXC 2)', () => assert.deepEqual(rec('/lxc/db'), { runtime: 'lxc', id: 'db' }));
  it('the monitor and sub-cgroups are not containers', () => {
    assert.equal(rec('/lxc.monitor.web-1'), null);
    assert.equal(rec('/lxc.monitor/web-1'), null);
    assert.equal(rec('/lxc.payload.web-1/init.scope'), null);
    assert.equal(rec('/lxc.payload.web-1/system.slice/cron.service'), null);
    assert.equal(rec('/lxc.payload'), null);
    assert.equal(rec('/lxc.payload.'), null);
  });
});

describe('extra patterns', () => {
  it('named group id, tried before built-ins', () => {
    const rs = buildRecognisers(['docker'], [{ runtime: 'garden', pattern: '^garden-(?<id>[0-9a-f]{8})$' }]);
    assert.deepEqual(recognise(rs, '/garden/garden-deadbeef'), { runtime: 'garden', id: 'deadbeef' });
    assert.equal(recognise(rs, '/garden/garden-deadbeef/sub'), null);
  });
  it('without a named group the whole component is the id', () => {
    const rs = buildRecognisers([], [{ runtime: 'nspawn', pattern: '^machine-.+\\.scope$' }]);
    assert.deepEqual(recognise(rs, '/machine.slice/machine-box.scope'), { runtime: 'nspawn', id: 'machine-box.scope' });
  });
  it('an extra pattern overrides a built-in for the same path', () => {
    const rs = buildRecognisers(builtinRuntimes, [{ runtime: 'mine', pattern: `^(?<id>[0-9a-f]{64})$` }]);
    assert.equal(recognise(rs, `/docker/${ID}`)?.runtime, 'mine');
  });
  it('only the selected built-ins are used', () => {
    const rs = buildRecognisers(['podman'], []);
    assert.equal(recognise(rs, `/docker/${ID}`), null);
    assert.equal(recognise(rs, `/libpod_parent/libpod-${ID}`)?.runtime, 'podman');
  });
  it('unknown runtime names and bad patterns are errors that say what is wrong', () => {
    assert.throws(() => buildRecognisers(['rkt'], []), /unknown runtime "rkt"/);
    assert.throws(() => buildRecognisers(['constructor'], []), /unknown runtime/);
    assert.throws(() => buildRecognisers([], [{ runtime: 'x', pattern: '(' }]), /runtime "x": invalid pattern/);
  });
});
