import test, { type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { validateConfig } from '../../src/config/load';
import { Daemon } from '../../src/daemon';
import { LiveDiscovery } from '../../src/discovery/live';
import { walkCgroups } from '../../src/discovery/walk';
import { silentLogger } from '../../src/log';
import { buildRecognisers } from '../../src/runtimes/index';

// Layouts of runtimes we cannot run on this host (systemd-driver Kubernetes with containerd
// and CRI-O, LXC, Docker with the systemd driver), as fake cgroup v2 trees in a temp dir,
// reached through a configured proc root whose mountinfo points at the tree. The real v2
// kernel is exercised in test/uml/, real v1 cgroups in test/kernel/.

const hex = (c: string) => c.repeat(64);
const POD_UID = '1b4e28ba-2fa1-11d2-883f-0016d3cca427';
const POD_SLICE = `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD_UID.replace(/-/g, '_')}.slice`;

const CONTAINERS: Record<string, { path: string; runtime: string; cpuMax?: string; cpuset?: string; expect: number }> = {
  containerd: { path: `${POD_SLICE}/cri-containerd-${hex('a')}.scope`, runtime: 'containerd', cpuMax: '1600000 100000', expect: 16384 },
  crio: { path: `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${'b'.repeat(32)}.slice/crio-${hex('b')}.scope`, runtime: 'crio', cpuMax: '150000 100000', expect: 6144 },
  dockerSystemd: { path: `/system.slice/docker-${hex('c')}.scope`, runtime: 'docker', cpuMax: '800000 100000', expect: 8192 }, // a cpuset is counted only when narrower than the host: the host-v1 test covers that
  lxc: { path: '/lxc.payload.web1', runtime: 'lxc', cpuMax: 'max 100000', expect: 6144 },
};

interface Tree {
  root: string;
  cg: string;
  proc: string;
  /** Daemons to stop before the tree goes: a daemon stopping later writes its state into it again. */
  stops: (() => Promise<void>)[];
}

function makeTree(t: TestContext): Tree {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-fake-'));
  const stops: (() => Promise<void>)[] = [];
  t.after(async () => {
    for (const stop of stops) await stop();
    fs.rmSync(root, { recursive: true, force: true });
  });
  const cg = path.join(root, 'cgroup');
  const proc = path.join(root, 'proc');
  fs.mkdirSync(path.join(proc, 'self'), { recursive: true });
  fs.mkdirSync(path.join(proc, 'sys', 'kernel'), { recursive: true });
  fs.writeFileSync(path.join(proc, 'self', 'mountinfo'), `35 24 0:30 / ${cg} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n`);
  fs.writeFileSync(path.join(proc, 'sys', 'kernel', 'pid_max'), '4194304\n');
  fs.writeFileSync(path.join(proc, 'sys', 'kernel', 'threads-max'), '192730\n');
  fs.writeFileSync(path.join(proc, 'loadavg'), '0.00 0.01 0.05 1/180 4242\n');
  mkCgroup(cg, '/');
  fs.writeFileSync(path.join(cg, 'cgroup.controllers'), 'cpuset cpu io memory pids\n');
  return { root, cg, proc, stops };
}

/** A fake v2 cgroup directory with the files cgwatchdog reads. */
function mkCgroup(cg: string, rel: string, files: Record<string, string> = {}): string {
  const dir = path.join(cg, rel);
  fs.mkdirSync(dir, { recursive: true });
  const defaults: Record<string, string> = {
    'pids.max': 'max\n',
    'pids.current': '1\n',
    'pids.events': 'max 0\n',
    'cpu.max': 'max 100000\n',
    'memory.events': 'low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n',
    'memory.current': '4096\n',
    'memory.max': 'max\n',
    'cgroup.threads': '',
  };
  for (const [f, v] of Object.entries({ ...defaults, ...files })) fs.writeFileSync(path.join(dir, f), v);
  return dir;
}

function mkContainer(cg: string, c: (typeof CONTAINERS)[string]): void {
  mkCgroup(cg, c.path, { ...(c.cpuMax ? { 'cpu.max': `${c.cpuMax}\n` } : {}), ...(c.cpuset ? { 'cpuset.cpus.effective': `${c.cpuset}\n` } : {}) });
}

const readMax = (cg: string, rel: string) => fs.readFileSync(path.join(cg, rel, 'pids.max'), 'utf8').trim();

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('walk finds every runtime layout and does not descend into containers', (t) => {
  const { cg } = makeTree(t);
  for (const c of Object.values(CONTAINERS)) mkContainer(cg, c);
  mkCgroup(cg, `/system.slice/docker-${hex('c')}.scope/init.scope`); // systemd inside a container
  mkCgroup(cg, '/system.slice/sshd.service');
  mkCgroup(cg, `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD_UID.replace(/-/g, '_')}.slice/crio-conmon-${hex('d')}.scope`);
  return walkCgroups(cg, ['/'], 10, buildRecognisers(['docker', 'containerd', 'crio', 'podman', 'lxc'], [])).then((r) => {
    const found = new Map(r.containers.map((c) => [c.cgroupPath, c]));
    assert.equal(found.size, 4, [...found.keys()].join(', '));
    for (const c of Object.values(CONTAINERS)) assert.equal(found.get(c.path)?.runtime, c.runtime, c.path);
    assert.equal(found.get(CONTAINERS.containerd!.path)?.podUid, POD_UID);
    assert.ok(r.dirs.includes('/system.slice/sshd.service'));
    assert.ok(!r.dirs.some((d) => d.includes('init.scope')), 'a container is not descended into');
  });
});

test('walk: each directory is handed to beforeList before it is listed (a watch set there misses no child)', async (t) => {
  const { cg } = makeTree(t);
  mkCgroup(cg, '/kubepods.slice/kubepods-burstable.slice');
  const order: string[] = [];
  const ctr = `${POD_SLICE}/cri-containerd-${hex('f')}.scope`;
  fs.mkdirSync(path.join(cg, POD_SLICE));
  const r = await walkCgroups(cg, ['/kubepods.slice'], 10, buildRecognisers(['containerd'], []), (rel) => {
    order.push(rel);
    // The container is made the moment the pod directory's watch would be set: it must be in the listing.
    if (rel === POD_SLICE) fs.mkdirSync(path.join(cg, ctr));
  });
  assert.deepEqual(order, ['/kubepods.slice', '/kubepods.slice/kubepods-burstable.slice', POD_SLICE]);
  assert.deepEqual(r.containers.map((c) => c.cgroupPath), [ctr]);
});

test('live discovery: a new pod directory and the containers made in it are found through inotify', async (t) => {
  const { cg } = makeTree(t);
  mkCgroup(cg, '/kubepods.slice');
  const appeared: string[] = [];
  const vanished: string[] = [];
  const live = new LiveDiscovery(cg, 10, buildRecognisers(['containerd', 'crio'], []), {
    appeared: (f) => appeared.push(f.cgroupPath),
    vanished: (rel) => vanished.push(rel),
  }, silentLogger());
  t.after(() => live.close());
  live.watch('/');
  live.watch('/kubepods.slice');
  // A new QoS slice, a new pod slice in it, and a container in the pod: each level appears after its parent.
  mkCgroup(cg, '/kubepods.slice/kubepods-burstable.slice');
  await until(() => live.isWatched('/kubepods.slice/kubepods-burstable.slice'), 2000, 'the QoS slice to be watched');
  mkCgroup(cg, POD_SLICE);
  await until(() => live.isWatched(POD_SLICE), 2000, 'the pod slice to be watched');
  mkContainer(cg, CONTAINERS.containerd!);
  await until(() => appeared.includes(CONTAINERS.containerd!.path), 2000, 'the container to appear');
  // A pod made with its container already inside (created faster than we can watch) is found by the walk.
  const pod2 = `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${'e'.repeat(32)}.slice`;
  fs.mkdirSync(path.join(cg, pod2, `cri-containerd-${hex('e')}.scope`), { recursive: true });
  await until(() => appeared.includes(`${pod2}/cri-containerd-${hex('e')}.scope`), 2000, 'the container made with its pod');
  fs.rmSync(path.join(cg, CONTAINERS.containerd!.path), { recursive: true });
  await until(() => vanished.includes(CONTAINERS.containerd!.path), 2000, 'the removal to be seen');
  assert.equal(appeared.length, 2, 'each container appears once');
});

function daemonConfig(tree: Tree, extra: Record<string, unknown> = {}) {
  return validateConfig({
    paths: { cgroupRoot: tree.cg, procRoot: tree.proc, stateDir: path.join(tree.root, 'state'), hookSocket: path.join(tree.root, 'hook.sock') },
    kernel: { manage: false },
    detection: { kmsg: false },
    metrics: { enabled: false },
    discovery: { reconcileSchedule: '* * * * * *' }, // every second: the drift test waits for it
    ...extra,
  });
}

test('the daemon applies the policy to every layout at start, to new containers at once, and repairs drift', async (t) => {
  const tree = makeTree(t);
  const { cg } = tree;
  mkContainer(cg, CONTAINERS.containerd!);
  mkContainer(cg, CONTAINERS.crio!);
  mkContainer(cg, CONTAINERS.lxc!);
  const latencies: number[] = [];
  const d = new Daemon(daemonConfig(tree), null, silentLogger(), { applyLatency: (s) => latencies.push(s) });
  tree.stops.push(() => d.stop());
  await d.start();
  for (const key of ['containerd', 'crio', 'lxc']) assert.equal(readMax(cg, CONTAINERS[key]!.path), String(CONTAINERS[key]!.expect), key);

  // A new container while running: written through inotify, long before the next reconcile.
  mkCgroup(cg, '/system.slice');
  await until(() => d.parts!.keeper.live!.isWatched('/system.slice'), 2000, '/system.slice to be watched');
  mkContainer(cg, CONTAINERS.dockerSystemd!);
  await until(() => readMax(cg, CONTAINERS.dockerSystemd!.path) === '8192', 2000, 'the new container to get 8192 (an 8-CPU quota)');
  assert.equal(latencies.length, 1);
  t.diagnostic(`fake tree creation-to-limit: ${(latencies[0]! * 1000).toFixed(2)} ms`);

  // Someone rewrites a limit: the reconcile puts it back.
  fs.writeFileSync(path.join(cg, CONTAINERS.crio!.path, 'pids.max'), 'max\n');
  await until(() => readMax(cg, CONTAINERS.crio!.path) === '6144', 3000, 'drift to be repaired');

  // A container removed between listing and writing is dropped quietly.
  fs.rmSync(path.join(cg, CONTAINERS.lxc!.path), { recursive: true });
  await until(() => !d.inventory.has(CONTAINERS.lxc!.path), 3000, 'the removed container to leave the inventory');
});

test('observe mode computes and reports but writes nothing; overrides exclude and fix values', async (t) => {
  const tree = makeTree(t);
  const { cg } = tree;
  for (const c of Object.values(CONTAINERS)) mkContainer(cg, c);
  const observe = new Daemon(daemonConfig(tree, { mode: 'observe' }), null, silentLogger());
  await observe.start();
  await observe.stop();
  for (const c of Object.values(CONTAINERS)) assert.equal(readMax(cg, c.path), 'max', `${c.runtime} left alone in observe mode`);
  assert.equal(observe.inventory.get(CONTAINERS.containerd!.path)?.applied?.policyValue, 16384, 'observe still computes the policy');

  const d = new Daemon(daemonConfig(tree, { policy: { overrides: [{ runtime: 'lxc', exclude: true }, { pathPattern: 'crio-', pidsMax: 4096 }] } }), null, silentLogger());
  tree.stops.push(() => d.stop());
  await d.start();
  assert.equal(readMax(cg, CONTAINERS.lxc!.path), 'max');
  assert.equal(readMax(cg, CONTAINERS.crio!.path), '4096');
  assert.equal(readMax(cg, CONTAINERS.containerd!.path), '16384');
});
