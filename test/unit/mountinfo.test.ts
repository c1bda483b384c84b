import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { decodeMountPath, parseMountinfo, parseMountinfoLine } from '../../src/cgroup/mountinfo';
import { layoutFromMounts } from '../../src/cgroup/layout';

// dist/test/unit -> repository root
const FIXTURES = path.resolve(__dirname, '../../../test/fixtures/mountinfo');
const load = (name: string) => parseMountinfo(fs.readFileSync(path.join(FIXTURES, name), 'utf8'));

test('parses this host\'s mountinfo: v1 controllers and the unified cgroup2 mount', () => {
  const entries = load('host-hybrid-6.18.txt');
  const pids = entries.find((e) => e.mountPoint === '/sys/fs/cgroup/pids');
  assert.ok(pids);
  assert.equal(pids.fsType, 'cgroup');
  assert.equal(pids.root, '/');
  assert.deepEqual(pids.superOptions, ['rw', 'pids']);
  const unified = entries.find((e) => e.fsType === 'cgroup2');
  assert.equal(unified?.mountPoint, '/sys/fs/cgroup/unified');
  const ext4 = entries.find((e) => e.mountPoint === '/');
  assert.equal(ext4?.source, '/dev/vda');
  assert.deepEqual(ext4?.superOptions, ['rw', 'discard', 'resv_strict', 'resuid=65534', 'resgid=65534']);
});

test('optional fields (shared:N, master:N) are kept apart from the fs type', () => {
  const e = parseMountinfoLine('32 22 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 master:3 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot');
  assert.deepEqual(e.optionalFields, ['shared:9', 'master:3']);
  assert.equal(e.fsType, 'cgroup2');
  assert.equal(e.source, 'cgroup2');
  assert.deepEqual(e.superOptions, ['rw', 'nsdelegate', 'memory_recursiveprot']);
  assert.deepEqual(e.mountOptions, ['rw', 'nosuid', 'nodev', 'noexec', 'relatime']);
  assert.equal(e.mountId, 32);
  assert.equal(e.parentId, 22);
  assert.equal(e.device, '0:27');
});

test('a v1 mount shared by cpu and cpuacct lists both controllers', () => {
  const e = load('centos7-v1-cpu-cpuacct.txt').find((x) => x.mountPoint === '/sys/fs/cgroup/cpu,cpuacct');
  assert.deepEqual(e?.superOptions, ['rw', 'seclabel', 'cpuacct', 'cpu']);
});

test('octal escapes in paths are decoded (space, tab, backslash)', () => {
  const entries = load('space-in-path.txt');
  assert.equal(entries[2]?.mountPoint, '/mnt/my cgroups');
  assert.equal(entries[3]?.root, '/sub\tdir');
  assert.equal(entries[3]?.mountPoint, '/mnt/tab\\name');
  assert.equal(decodeMountPath('/a\\012b'), '/a\nb');
});

test('a container\'s cgroup mounts have their own cgroup as mount root', () => {
  const entries = load('docker-container-v1.txt');
  const pids = entries.find((e) => e.mountPoint === '/sys/fs/cgroup/pids');
  assert.equal(pids?.root, '/docker/3f6c1a9d0e2b4c5a8f7e6d5c4b3a291807f6e5d4c3b2a1908f7e6d5c4b3a2918');
  assert.deepEqual(pids?.mountOptions.slice(0, 1), ['ro']);
});

test('a truncated line is an error that quotes it', () => {
  assert.throws(() => parseMountinfo('31 23 0:28 / /sys/fs/cgroup rw,relatime tmpfs\n'), /expected a mountinfo line.*\/sys\/fs\/cgroup/);
  assert.throws(() => parseMountinfoLine('x y 0:1 / /a rw - tmpfs t rw'), /numeric mount ids/);
  assert.deepEqual(parseMountinfo('\n\n'), []);
});

test('layout of this host: hybrid, v1 for pids and memory, cgroup2 at /sys/fs/cgroup/unified', () => {
  const layout = layoutFromMounts(load('host-hybrid-6.18.txt'), '/sys/fs/cgroup', []);
  assert.equal(layout.mode, 'hybrid');
  assert.equal(layout.version, 'v1');
  assert.equal(layout.v2Mount, '/sys/fs/cgroup/unified');
  assert.equal(layout.v1Mounts.pids, '/sys/fs/cgroup/pids');
  assert.equal(layout.v1Mounts.memory, '/sys/fs/cgroup/memory');
  assert.equal(layout.v1Mounts.cpu, '/sys/fs/cgroup/cpu');
  assert.equal(layout.v1Mounts.cpuacct, '/sys/fs/cgroup/cpuacct');
  assert.equal(layout.v1Mounts.cpuset, '/sys/fs/cgroup/cpuset');
  // name=systemd is a named hierarchy without a controller.
  assert.equal(layout.v1Mounts['name=systemd'], undefined);
  assert.equal(layout.v1Mounts.systemd, undefined);
});

test('hybrid uses v2 only when the v2 root has pids and memory', () => {
  const entries = load('host-hybrid-6.18.txt');
  assert.equal(layoutFromMounts(entries, '/sys/fs/cgroup', ['pids']).version, 'v1');
  const both = layoutFromMounts(entries, '/sys/fs/cgroup', ['cpu', 'memory', 'pids']);
  assert.equal(both.version, 'v2');
  assert.equal(both.mode, 'hybrid');
  assert.deepEqual(both.v2Controllers, ['cpu', 'memory', 'pids']);
});

test('layout of a pure v2 systemd host', () => {
  const layout = layoutFromMounts(load('debian12-systemd-v2.txt'), '/sys/fs/cgroup', ['cpuset', 'cpu', 'io', 'memory', 'hugetlb', 'pids', 'rdma', 'misc']);
  assert.deepEqual(
    { mode: layout.mode, version: layout.version, v2Mount: layout.v2Mount, v1: layout.v1Mounts },
    { mode: 'v2', version: 'v2', v2Mount: '/sys/fs/cgroup', v1: {} },
  );
});

test('layout of a v1 host: cpu and cpuacct share one mount point', () => {
  const layout = layoutFromMounts(load('centos7-v1-cpu-cpuacct.txt'), '/sys/fs/cgroup');
  assert.equal(layout.mode, 'v1');
  assert.equal(layout.version, 'v1');
  assert.equal(layout.v1Mounts.cpu, '/sys/fs/cgroup/cpu,cpuacct');
  assert.equal(layout.v1Mounts.cpuacct, '/sys/fs/cgroup/cpu,cpuacct');
  assert.equal(layout.v1Mounts.net_cls, '/sys/fs/cgroup/net_cls,net_prio');
  assert.equal(layout.v1Mounts.pids, '/sys/fs/cgroup/pids');
  assert.equal(layout.v2Mount, undefined);
});

test('only mounts under cgroupRoot count: the user-mode Linux tree at /run/cg', () => {
  const entries = load('uml-run-cg-v2.txt');
  const layout = layoutFromMounts(entries, '/run/cg', ['memory', 'pids']);
  assert.equal(layout.v2Mount, '/run/cg');
  assert.equal(layout.version, 'v2');
  assert.throws(() => layoutFromMounts(entries, '/sys/fs/cgroup'), /no cgroup or cgroup2 mount at or under \/sys\/fs\/cgroup/);
  // A cgroup2 mount in a directory whose name needs an escape.
  assert.equal(layoutFromMounts(load('space-in-path.txt'), '/mnt/my cgroups/').v2Mount, '/mnt/my cgroups');
  // A sibling whose name merely starts with the root is not under it.
  assert.throws(() => layoutFromMounts(entries, '/run/c'), /no cgroup/);
});

test('inside a container the v1 mounts are found at their mount points', () => {
  const layout = layoutFromMounts(load('docker-container-v1.txt'), '/sys/fs/cgroup');
  assert.equal(layout.mode, 'v1');
  assert.equal(layout.v1Mounts.pids, '/sys/fs/cgroup/pids');
  assert.equal(layout.v1Mounts.cpu, '/sys/fs/cgroup/cpu,cpuacct');
});
