import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { detectLayout, openCgroupFs, CgroupError, CounterReader, UNCHANGED, type CgroupFs } from '../../src/cgroup/index';

// A fake cgroup2 tree in a temp dir, reached through configurable proc and cgroup roots as the
// daemon would inside user-mode Linux. Real v2 kernel behaviour is tested under test/uml/.

const CONTAINER = '/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope';

const FILES: Record<string, string> = {
  'pids.max': '2048\n',
  'pids.current': '17\n',
  'pids.events': 'max 5\n',
  'pids.events.local': 'max 2\n',
  'cpu.max': '150000 100000\n',
  'cpuset.cpus.effective': '0-3,8\n',
  'cpuset.cpus': '\n',
  'memory.events': 'low 0\nhigh 3\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n',
  'memory.current': '52428800\n',
  'memory.max': 'max\n',
  'cgroup.threads': '101\n102\n250\n',
};

function fakeTree(t: TestContext, files: Record<string, string> = FILES): { root: string; cgRoot: string; cg: CgroupFs } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-v2-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  const cgRoot = path.join(root, 'cg root'); // a space, escaped as \040 in mountinfo
  fs.mkdirSync(path.join(root, 'proc', 'self'), { recursive: true });
  fs.writeFileSync(
    path.join(root, 'proc', 'self', 'mountinfo'),
    `27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n41 27 0:38 / ${cgRoot.replace(/ /g, '\\040')} rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n`,
  );
  fs.mkdirSync(path.join(cgRoot, CONTAINER), { recursive: true });
  fs.writeFileSync(path.join(cgRoot, 'cgroup.controllers'), 'cpuset cpu io memory hugetlb pids rdma misc\n');
  for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(cgRoot, CONTAINER, name), content);
  const layout = detectLayout(path.join(root, 'proc'), cgRoot);
  return { root, cgRoot, cg: openCgroupFs(layout, cgRoot) };
}

test('detectLayout reads mountinfo and cgroup.controllers under the configured roots', (t) => {
  const { cgRoot, cg } = fakeTree(t);
  assert.equal(cg.version, 'v2');
  assert.equal(cg.layout.mode, 'v2');
  assert.equal(cg.layout.v2Mount, cgRoot);
  assert.deepEqual(cg.layout.v2Controllers, ['cpuset', 'cpu', 'io', 'memory', 'hugetlb', 'pids', 'rdma', 'misc']);
  assert.equal(cg.discoveryRoot, cgRoot);
  assert.equal(cg.dir('memory', CONTAINER), path.join(cgRoot, CONTAINER));
  assert.deepEqual(cg.eventFiles(CONTAINER), {
    pids: path.join(cgRoot, CONTAINER, 'pids.events'),
    memory: path.join(cgRoot, CONTAINER, 'memory.events'),
  });
});

test('v2 files are read into the common types', async (t) => {
  const { cg } = fakeTree(t);
  assert.equal(await cg.readPidsMax(CONTAINER), 2048);
  assert.equal(await cg.readPidsCurrent(CONTAINER), 17);
  assert.deepEqual(await cg.readPidsEvents(CONTAINER), { max: 5, localMax: 2 });
  assert.deepEqual(await cg.readCpuQuota(CONTAINER), { quotaUs: 150000, periodUs: 100000 });
  assert.equal(await cg.readCpuset(CONTAINER), '0-3,8');
  assert.deepEqual(await cg.readMemoryEvents(CONTAINER), { low: 0, high: 3, max: 9, oom: 2, oomKill: 1, oomGroupKill: 0 });
  assert.deepEqual(await cg.readMemoryUsage(CONTAINER), { usageBytes: 52428800, limitBytes: 'max' });
  assert.deepEqual(await cg.readTasks(CONTAINER), [101, 102, 250]);
});

test('kernels before 6.11 have no pids.events.local; cpuset falls back to cpuset.cpus', async (t) => {
  const files = { ...FILES, 'cpuset.cpus.effective': '', 'cpuset.cpus': '2-3\n', 'cpu.max': 'max 100000\n' };
  delete (files as Record<string, string>)['pids.events.local'];
  const { cg } = fakeTree(t, files);
  assert.deepEqual(await cg.readPidsEvents(CONTAINER), { max: 5 });
  assert.equal(await cg.readCpuset(CONTAINER), '2-3');
  assert.deepEqual(await cg.readCpuQuota(CONTAINER), { quotaUs: 'max', periodUs: 100000 });
});

test('writePidsMax replaces the value; a missing cgroup is gone and nothing is created', async (t) => {
  const { cgRoot, cg } = fakeTree(t);
  assert.equal(await cg.writePidsMax(CONTAINER, 6144), 'ok');
  assert.equal(fs.readFileSync(path.join(cgRoot, CONTAINER, 'pids.max'), 'utf8'), '6144');
  assert.equal(await cg.readPidsMax(CONTAINER), 6144);
  assert.equal(await cg.writePidsMax('/kubepods.slice/gone', 10), 'gone');
  assert.equal(fs.existsSync(path.join(cgRoot, 'kubepods.slice', 'gone')), false);
  await assert.rejects(cg.writePidsMax(CONTAINER, -1), (e: unknown) => e instanceof CgroupError && /non-negative integer/.test(e.message));
});

test('a removed cgroup reads as null', async (t) => {
  const { cgRoot, cg } = fakeTree(t);
  fs.rmSync(path.join(cgRoot, CONTAINER), { recursive: true });
  assert.equal(await cg.readPidsMax(CONTAINER), null);
  assert.equal(await cg.readPidsEvents(CONTAINER), null);
  assert.equal(await cg.readMemoryEvents(CONTAINER), null);
  assert.equal(await cg.readMemoryUsage(CONTAINER), null);
  assert.equal(await cg.readCpuQuota(CONTAINER), null);
  assert.equal(await cg.readCpuset(CONTAINER), null);
  assert.equal(await cg.readTasks(CONTAINER), null);
});

test('malformed content and unexpected errors name the path', async (t) => {
  const { cgRoot, cg } = fakeTree(t, { ...FILES, 'pids.max': 'lots\n', 'memory.events': 'low 0\nhigh 0\n' });
  const file = path.join(cgRoot, CONTAINER, 'pids.max');
  await assert.rejects(cg.readPidsMax(CONTAINER), (e: unknown) => e instanceof CgroupError && e.path === file && e.message === `${file}: expected "max" or a non-negative integer, got "lots\\n"`);
  await assert.rejects(cg.readMemoryEvents(CONTAINER), /memory\.events: expected a "max N" line/);
  // A directory where a file should be: not "gone", an error with its errno.
  fs.rmSync(path.join(cgRoot, CONTAINER, 'cgroup.threads'));
  fs.mkdirSync(path.join(cgRoot, CONTAINER, 'cgroup.threads'));
  await assert.rejects(cg.readTasks(CONTAINER), (e: unknown) => e instanceof CgroupError && e.code === 'EISDIR' && e.path.endsWith('/cgroup.threads'));
});

test('rel paths that escape the v2 mount are rejected', async (t) => {
  const { cg } = fakeTree(t);
  await assert.rejects(cg.readPidsMax('/../proc/self'), (e: unknown) => e instanceof CgroupError && /escapes the hierarchy/.test(e.message));
  await assert.rejects(cg.writePidsMax('kubepods.slice', 5), /must start with "\/"/);
  assert.throws(() => cg.eventFiles('/../../etc'), CgroupError);
});

test('openCgroupFs refuses a layout detected under another root', (t) => {
  const { cg } = fakeTree(t);
  assert.throws(() => openCgroupFs(cg.layout, '/sys/fs/cgroup'), /outside paths.cgroupRoot/);
});

test('detectLayout names mountinfo when the cgroup root holds no mount', (t) => {
  const { root } = fakeTree(t);
  assert.throws(() => detectLayout(path.join(root, 'proc'), '/nowhere'), (e: unknown) => e instanceof CgroupError && e.path === path.join(root, 'proc', 'self', 'mountinfo'));
  assert.throws(() => detectLayout(path.join(root, 'no-proc'), '/nowhere'), /cannot read .*no-proc\/self\/mountinfo \(ENOENT\)/);
});

test('CounterReader re-reads a changed file through its cached fd and reads a missing one as null', (t) => {
  const { cgRoot, cg } = fakeTree(t);
  const file = cg.eventFiles(CONTAINER).pids!;
  const reader = new CounterReader();
  t.after(() => reader.close());
  assert.equal(reader.read(file), 'max 5\n');
  fs.writeFileSync(file, 'max 7\n'); // same inode: the cached fd sees it
  assert.equal(reader.read(file), 'max 7\n');
  assert.equal(reader.read(path.join(cgRoot, 'nope', 'pids.events')), null);
  assert.equal(reader.openCount, 1);
  const big = 'x'.repeat(10_000);
  fs.writeFileSync(path.join(cgRoot, CONTAINER, 'big'), big);
  assert.equal(reader.read(path.join(cgRoot, CONTAINER, 'big')), big, 'files longer than the buffer are read whole');
  reader.forget(path.join(cgRoot, CONTAINER));
  assert.equal(reader.openCount, 0);
});

test('readCountersSync and readPidsCurrentSync read the sweep counters through cached fds', (t) => {
  const { cgRoot, cg } = fakeTree(t);
  const reader = new CounterReader();
  t.after(() => reader.close());
  assert.deepEqual(cg.readCountersSync(CONTAINER, reader), {
    pids: { max: 5, localMax: 2 },
    memory: { low: 0, high: 3, max: 9, oom: 2, oomKill: 1, oomGroupKill: 0 },
  });
  assert.deepEqual(cg.readPidsCurrentSync(CONTAINER, reader), { current: 17, max: 2048 });
  fs.writeFileSync(path.join(cgRoot, CONTAINER, 'pids.events'), 'max 6\n');
  assert.deepEqual(cg.readCountersSync(CONTAINER, reader)?.pids, { max: 6, localMax: 2 });
  assert.equal(reader.openCount, 5);
  for (const f of cg.counterFiles(CONTAINER)) reader.forget(f);
  assert.equal(reader.openCount, 0, 'counterFiles covers every fd the sync reads opened');
  fs.rmSync(path.join(cgRoot, CONTAINER), { recursive: true });
  assert.equal(cg.readCountersSync(CONTAINER, reader), null);
  assert.equal(cg.readPidsCurrentSync(CONTAINER, reader), null);
});

test('readCountersSync: a cgroup without the memory controller has only pids; no pids.events.local before 6.11', (t) => {
  const files: Record<string, string> = { ...FILES };
  delete files['memory.events'];
  delete files['pids.events.local'];
  const { cg } = fakeTree(t, files);
  const reader = new CounterReader();
  t.after(() => reader.close());
  assert.deepEqual(cg.readCountersSync(CONTAINER, reader), { pids: { max: 5 } });
  assert.deepEqual(cg.readCountersSync(CONTAINER, reader), { pids: { max: 5 } });
});

test('readIfChanged: the same bytes read as UNCHANGED, a change as the new text, a removal as null', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-ric-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = path.join(dir, 'pids.events');
  fs.writeFileSync(f, 'max 0\n');
  const r = new CounterReader();
  t.after(() => r.close());
  assert.equal(r.readIfChanged(f), 'max 0\n');
  assert.equal(r.readIfChanged(f), UNCHANGED);
  fs.writeFileSync(f, 'max 7\n');
  assert.equal(r.readIfChanged(f), 'max 7\n');
  assert.equal(r.readIfChanged(f), UNCHANGED);
  fs.writeFileSync(f, 'max 17\n'); // longer
  assert.equal(r.readIfChanged(f), 'max 17\n');
  r.forget(dir);
  fs.rmSync(f);
  assert.equal(r.readIfChanged(f), null);
});
