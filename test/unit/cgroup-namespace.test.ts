// The cgroup namespace verdict on real samples: mountinfo, /proc/self/cgroup and
// /proc/self/ns/cgroup captured on this host's 6.18 v1 hierarchies and in UML 7.2 cgroup2
// (test/fixtures/cgroupns/README.md), with the directory facts measured there.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { layoutFromMounts } from '../../src/cgroup/layout';
import { parseMountinfo } from '../../src/cgroup/mountinfo';
import {
  checkCgroupNamespace, findNamespaceRoot, hierarchyViews, INITIAL_CGROUP_NS_INODE, isHierarchyRoot, judgeNamespace, nsRootDepth, parseNsLink,
  parseProcCgroup, resolveUnder, toMountPath, translateProcCgroup, type HierarchyView,
} from '../../src/cgroup/namespace';

const FIXTURES = path.resolve(__dirname, '../../../test/fixtures');
const read = (rel: string): string => fs.readFileSync(path.join(FIXTURES, rel), 'utf8');

/** The views of a captured case, with the directory facts and search results given. */
function views(dir: string, facts: Partial<Pick<HierarchyView, 'atHierarchyRoot' | 'candidates'>>, v2Controllers: string[] = []): { views: HierarchyView[]; nsInode: number | null } {
  const mounts = parseMountinfo(read(`cgroupns/${dir}/mountinfo`));
  const root = mounts.some((m) => m.mountPoint === '/run/cg') ? '/run/cg' : '/sys/fs/cgroup';
  const layout = layoutFromMounts(mounts, root, v2Controllers);
  const v = hierarchyViews(mounts, layout, parseProcCgroup(read(`cgroupns/${dir}/cgroup`))).map((x) => ({ atHierarchyRoot: null, ...x, ...facts }));
  return { views: v, nsInode: parseNsLink(read(`cgroupns/${dir}/ns`)) };
}

/** One sentence: no full stop inside, none at the end (the CLI prints "cgwatchdog: <sentence>"). */
function oneSentence(s: string | undefined): string {
  assert.ok(s, 'a sentence');
  assert.doesNotMatch(s, /\.\s|\.$|\n/);
  return s;
}

// /proc/self/cgroup of this host's agent processes (initial namespace, 6.18).
const HOST_SELF = '9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n4:memory:/process_api/bda13dbd5ab2c019bdfea4e935c64a1c\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n';

test('/proc/<pid>/cgroup lines: v1 controller lists, the v2 line, ".." paths and colons in names', () => {
  const e = parseProcCgroup('12:cpu,cpuacct:/a:b\n1:name=systemd:/../x\n0::/../docker/c1\n');
  assert.deepEqual(e, [
    { hierarchyId: 12, controllers: ['cpu', 'cpuacct'], path: '/a:b' },
    { hierarchyId: 1, controllers: ['name=systemd'], path: '/../x' },
    { hierarchyId: 0, controllers: [], path: '/../docker/c1' },
  ]);
  assert.throws(() => parseProcCgroup('garbage\n'), /expected a \/proc\/<pid>\/cgroup line .*garbage/);
  assert.equal(parseNsLink('cgroup:[4026531835]\n'), INITIAL_CGROUP_NS_INODE);
  assert.equal(parseNsLink('pid:[4026531836]'), null);
  assert.equal(resolveUnder('/a/b', '/../c'), '/a/c');
  assert.equal(resolveUnder('/a/b', '/../..'), '/');
  assert.equal(resolveUnder('/a', '/../..'), null);
});

test('this host, initial namespace: every hierarchy root is "/", nothing to translate', () => {
  const mounts = parseMountinfo(read('mountinfo/host-hybrid-6.18.txt'));
  const layout = layoutFromMounts(mounts, '/sys/fs/cgroup');
  const v = hierarchyViews(mounts, layout, parseProcCgroup(HOST_SELF)).map((x) => ({ ...x, atHierarchyRoot: true }));
  assert.deepEqual(v.map((x) => x.hierarchy), ['pids', 'memory', 'cpu', 'cpuset']);
  const verdict = judgeNamespace(v, INITIAL_CGROUP_NS_INODE);
  assert.equal(verdict.kind, 'host');
  assert.equal(verdict.namespace, 'initial');
  assert.equal(verdict.hierarchies.find((h) => h.hierarchy === 'memory')?.self, '/process_api/bda13dbd5ab2c019bdfea4e935c64a1c');
  assert.equal(nsRootDepth(v[0]!), null);
});

test('host v1 under unshare --cgroup: roots print as "/../..", the namespace root is found and paths translate', () => {
  const { views: v, nsInode } = views('host-v1-6.18-unshare', { atHierarchyRoot: true, candidates: ['/cgwd-test-nsexp1/launch'] });
  assert.deepEqual(v.map((x) => [x.hierarchy, x.mountRoot, x.selfPath, nsRootDepth(x)]), [
    ['pids', '/../..', '/', 2], ['memory', '/../..', '/', 2], ['cpu', '/../..', '/', 2], ['cpuset', '/../..', '/', 2],
  ]);
  const verdict = judgeNamespace(v, nsInode);
  assert.equal(verdict.kind, 'translated');
  assert.equal(verdict.namespace, 'private');
  for (const h of verdict.hierarchies) assert.equal(h.nsRoot, '/cgwd-test-nsexp1/launch');
  // A sibling container's /proc/<pid>/cgroup as read from inside, and PID 1's (in the root).
  assert.equal(toMountPath(verdict, '/sys/fs/cgroup/pids', '/../docker/abc'), '/cgwd-test-nsexp1/docker/abc');
  assert.deepEqual(translateProcCgroup(verdict, '8:pids:/../..\n4:memory:/../../process_api/x\n1:cpu:/\n0::/\n'), {
    '/sys/fs/cgroup/pids': '/',
    '/sys/fs/cgroup/memory': '/process_api/x',
    '/sys/fs/cgroup/cpu': '/cgwd-test-nsexp1/launch',
  });
  assert.equal(toMountPath(verdict, '/sys/fs/cgroup/pids', '/../../..'), null);
  assert.equal(toMountPath(verdict, '/sys/fs/cgroup/blkio', '/'), null);
});

test('host v1 under unshare --cgroup: a namespace root that cannot be placed stops, in one sentence', () => {
  for (const [candidates, says] of [[[], /no cgroup there lists this process/], [['/a/b', '/c/d'], /2 cgroups there list this process/], [null, /more than 100000 cgroups/]] as const) {
    const { views: v, nsInode } = views('host-v1-6.18-unshare', { atHierarchyRoot: true, candidates: candidates as string[] | null });
    const verdict = judgeNamespace(v, nsInode);
    assert.equal(verdict.kind, 'blind');
    const s = oneSentence(verdict.sentence);
    assert.match(s, says);
    assert.match(s, /^this container's cgroups cannot be placed in the host's hierarchy \(its cgroup namespace root lies 2 levels below \/sys\/fs\/cgroup\/pids/);
    assert.match(s, /--cgroupns=host/);
  }
  // "/.." in field 4 but the directory is no hierarchy root: a bind of an ancestor subtree.
  const { views: v, nsInode } = views('host-v1-6.18-unshare', { atHierarchyRoot: false, candidates: ['/x'] });
  assert.match(oneSentence(judgeNamespace(v, nsInode).sentence), /^only part of the cgroup hierarchy is visible \(the cgroup mount at \/sys\/fs\/cgroup\/pids, with mountinfo root "\/\.\.\/\.\.", lies above/);
});

test('host v1, unshare --cgroup --mount and a fresh cgroupfs: root "/" but no hierarchy root there: blind, one sentence naming --cgroupns=host', () => {
  // Measured there: /sys/fs/cgroup/pids lists pids.max and no cgroup.sane_behavior.
  const { views: v, nsInode } = views('host-v1-6.18-own-mount', { atHierarchyRoot: false });
  assert.deepEqual(v.map((x) => x.mountRoot), ['/', '/', '/', '/']);
  const verdict = judgeNamespace(v, nsInode);
  assert.equal(verdict.kind, 'blind');
  const s = oneSentence(verdict.sentence);
  assert.equal(s, 'only this container\'s own cgroups are visible (the cgroup mount at /sys/fs/cgroup/pids has mountinfo root "/" in a private cgroup namespace and is not the hierarchy\'s root): run it in the host\'s cgroup namespace (docker/podman run --cgroupns=host --pid=host), or mount the host\'s /sys/fs/cgroup into its container (Kubernetes: a hostPath volume, with hostPID: true) and point paths.cgroupRoot at it');
  // If the files could not tell, a private namespace with root "/" is not trusted either.
  const unsure = views('host-v1-6.18-own-mount', { atHierarchyRoot: null });
  assert.match(oneSentence(judgeNamespace(unsure.views, unsure.nsInode).sentence), /^this container may see only its own cgroups/);
});

test('UML 7.2 cgroup2: unshare --cgroup translates ("0::/../docker/c1" is /cgwd-test/docker/c1); a fresh cgroup2 mount is blind', () => {
  const b = views('uml-v2-7.2-unshare', { atHierarchyRoot: true, candidates: ['/cgwd-test/agent'] }, ['pids', 'memory']);
  assert.deepEqual(b.views.map((x) => [x.hierarchy, x.mountPoint, x.mountRoot, x.selfPath]), [['v2', '/run/cg', '/../..', '/']]);
  const verdict = judgeNamespace(b.views, b.nsInode);
  assert.equal(verdict.kind, 'translated');
  assert.deepEqual(translateProcCgroup(verdict, '0::/../docker/c1\n'), { '/run/cg': '/cgwd-test/docker/c1' });

  // The over-mount is listed after the inherited one: the last mount at /run/cg is the visible one.
  const a = views('uml-v2-7.2-own-mount', { atHierarchyRoot: false }, ['pids', 'memory']);
  assert.deepEqual(a.views.map((x) => x.mountRoot), ['/']);
  const blind = judgeNamespace(a.views, a.nsInode);
  assert.equal(blind.kind, 'blind');
  assert.match(oneSentence(blind.sentence), /^only this container's own cgroups are visible \(the cgroup mount at \/run\/cg /);
});

test('a pre-cgroupns Docker container (its own cgroup bind-mounted, initial namespace): blind, mount the whole hierarchy', () => {
  const mounts = parseMountinfo(read('mountinfo/docker-container-v1.txt'));
  const layout = layoutFromMounts(mounts, '/sys/fs/cgroup');
  const id = '3f6c1a9d0e2b4c5a8f7e6d5c4b3a291807f6e5d4c3b2a1908f7e6d5c4b3a2918';
  const self = `12:pids:/docker/${id}\n11:memory:/docker/${id}\n10:cpu,cpuacct:/docker/${id}\n9:cpuset:/docker/${id}\n`;
  const v = hierarchyViews(mounts, layout, parseProcCgroup(self)).map((x) => ({ ...x, atHierarchyRoot: false }));
  assert.deepEqual(v.map((x) => x.hierarchy), ['pids', 'memory', 'cpu', 'cpuset']);
  const verdict = judgeNamespace(v, INITIAL_CGROUP_NS_INODE);
  assert.equal(verdict.kind, 'blind');
  assert.match(oneSentence(verdict.sentence), new RegExp(`^only part of the cgroup hierarchy is visible \\(the cgroup mount at /sys/fs/cgroup/pids is the subtree "/docker/${id}", not the hierarchy's root\\): mount the whole cgroup hierarchy`));
});

test('a fixture tree (no kernel files, no namespace link) is taken as the mount says; a cgroup outside our own namespace cannot be placed', () => {
  const mounts = parseMountinfo('35 24 0:30 / /tmp/cg rw - cgroup2 cgroup2 rw\n');
  const layout = layoutFromMounts(mounts, '/tmp/cg', ['pids', 'memory']);
  const v = hierarchyViews(mounts, layout, []).map((x) => ({ ...x, atHierarchyRoot: null }));
  assert.equal(judgeNamespace(v, null).kind, 'host');
  assert.equal(judgeNamespace(v, null).namespace, 'unknown');
  const outside = hierarchyViews(parseMountinfo('35 24 0:30 /.. /tmp/cg rw - cgroup2 cgroup2 rw\n'), layout, parseProcCgroup('0::/../elsewhere\n')).map((x) => ({ ...x, atHierarchyRoot: true }));
  assert.equal(nsRootDepth(outside[0]!), null);
  assert.match(oneSentence(judgeNamespace(outside, 4026532095).sentence), /this process's cgroup "\/\.\.\/elsewhere" lies outside its own cgroup namespace/);
});

// ---- the I/O part on a fake proc and cgroup2 tree ------------------------------------------

function fakeHost(t: TestContext, mountRoot: string, nsLink: string): { proc: string; cg: string } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-ns-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const proc = path.join(root, 'proc');
  const cg = path.join(root, 'cg');
  fs.mkdirSync(path.join(proc, 'self', 'ns'), { recursive: true });
  fs.writeFileSync(path.join(proc, 'self', 'mountinfo'), `35 24 0:30 ${mountRoot} ${cg} rw - cgroup2 cgroup2 rw\n`);
  fs.writeFileSync(path.join(proc, 'self', 'cgroup'), '0::/\n');
  fs.symlinkSync(nsLink, path.join(proc, 'self', 'ns', 'cgroup'));
  // The root has cgroup.procs and no cgroup.events; every other cgroup has both.
  fs.mkdirSync(cg);
  fs.writeFileSync(path.join(cg, 'cgroup.procs'), '1\n');
  for (const [rel, procs] of [['/kubepods/pod1/c1', '4242\n'], ['/kubepods/pod1/c2', '7\n'], ['/system.slice/x', ''], ['/kubepods/pod2/agent', `${process.pid}\n`]] as const) {
    fs.mkdirSync(path.join(cg, rel), { recursive: true });
    fs.writeFileSync(path.join(cg, rel, 'cgroup.procs'), procs);
    fs.writeFileSync(path.join(cg, rel, 'cgroup.events'), 'populated 1\nfrozen 0\n');
  }
  return { proc, cg };
}

test('checkCgroupNamespace: the root files, the search by our pid and the verdict, on a fake tree', (t) => {
  const { proc, cg } = fakeHost(t, '/../../..', 'cgroup:[4026532095]');
  const layout = { mode: 'v2' as const, version: 'v2' as const, v1Mounts: {}, v2Mount: cg, v2Controllers: ['pids', 'memory'] };
  assert.equal(isHierarchyRoot(cg, 'v2'), true);
  assert.equal(isHierarchyRoot(path.join(cg, 'kubepods', 'pod1', 'c1'), 'v2'), false);
  assert.equal(isHierarchyRoot(path.join(cg, 'kubepods', 'pod1'), 'v2'), null); // neither file: no kernel cgroup
  assert.deepEqual(findNamespaceRoot(cg, 3, '/', process.pid), ['/kubepods/pod2/agent']);
  assert.deepEqual(findNamespaceRoot(cg, 3, '/', 4242), ['/kubepods/pod1/c1']);
  assert.equal(findNamespaceRoot(cg, 3, '/', process.pid, 3), null);
  const verdict = checkCgroupNamespace(proc, layout);
  assert.equal(verdict.kind, 'translated');
  assert.equal(verdict.hierarchies[0]?.nsRoot, '/kubepods/pod2/agent');
  assert.equal(verdict.hierarchies[0]?.self, '/kubepods/pod2/agent');
  // Our pid nowhere at that depth: stop.
  assert.equal(checkCgroupNamespace(proc, layout, 999999).kind, 'blind');
});

test('checkCgroupNamespace: a private namespace whose mount is a non-root cgroup is blind; a proc root without cgroup files is not an error', (t) => {
  const { proc, cg } = fakeHost(t, '/', 'cgroup:[4026532095]');
  const layout = { mode: 'v2' as const, version: 'v2' as const, v1Mounts: {}, v2Mount: path.join(cg, 'kubepods', 'pod2', 'agent'), v2Controllers: [] };
  fs.writeFileSync(path.join(proc, 'self', 'mountinfo'), `35 24 0:30 / ${layout.v2Mount} rw - cgroup2 cgroup2 rw\n`);
  assert.equal(checkCgroupNamespace(proc, layout).kind, 'blind');
  fs.rmSync(path.join(proc, 'self', 'cgroup'));
  fs.rmSync(path.join(proc, 'self', 'ns', 'cgroup'));
  const hostLayout = { ...layout, v2Mount: cg };
  fs.writeFileSync(path.join(proc, 'self', 'mountinfo'), `35 24 0:30 / ${cg} rw - cgroup2 cgroup2 rw\n`);
  const v = checkCgroupNamespace(proc, hostLayout);
  assert.equal(v.kind, 'host');
  assert.equal(v.namespace, 'unknown');
  assert.equal(v.hierarchies[0]?.selfPath, null);
});
