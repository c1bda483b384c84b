import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { detectLayout, openCgroupFs, CgroupError, CounterReader, type CgroupFs } from '../../src/cgroup/index';
import { isRoot, need } from '../helpers/prereq';
import { exited, hasV1, makeV1Cgroup, removeV1Cgroup, spawnInCgroup, uniqueTestRoot, v1Dir, waitForTask } from '../helpers/v1-cgroups';

const ROOT = '/sys/fs/cgroup';

function ready(): void {
  need(isRoot() && hasV1(), 'root and v1 pids, cpu, cpuset and memory hierarchies under /sys/fs/cgroup');
}

/** A fresh test cgroup in every default hierarchy, removed (tasks killed) after the test. */
function testCgroup(t: TestContext): { rel: string; cg: CgroupFs } {
  const rel = uniqueTestRoot();
  t.after(() => removeV1Cgroup(rel));
  makeV1Cgroup(rel);
  return { rel, cg: openCgroupFs(detectLayout('/proc', ROOT), ROOT) };
}

/** Start a shell in the pids cgroup that tries to put 8 sleeps in the background. */
async function forkPastLimit(t: TestContext, rel: string): Promise<string> {
  const child = spawnInCgroup(rel, ['pids'], '/bin/sh', ['-c', 'for i in 1 2 3 4 5 6 7 8; do sleep 30 & done; wait']);
  t.after(() => child.kill('SIGKILL'));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  await exited(child);
  return stderr;
}

test('detectLayout on this host: hybrid, v1 pids and memory, cgroup2 at /sys/fs/cgroup/unified', (t) => {
  ready();
  const layout = detectLayout('/proc', ROOT);
  assert.equal(layout.mode, 'hybrid');
  assert.equal(layout.version, 'v1');
  assert.equal(layout.v1Mounts.pids, '/sys/fs/cgroup/pids');
  assert.equal(layout.v1Mounts.memory, '/sys/fs/cgroup/memory');
  assert.equal(layout.v1Mounts.cpu, '/sys/fs/cgroup/cpu');
  assert.equal(layout.v1Mounts.cpuset, '/sys/fs/cgroup/cpuset');
  assert.equal(layout.v2Mount, '/sys/fs/cgroup/unified');
  assert.ok(!layout.v2Controllers.includes('pids'));
  const cg = openCgroupFs(layout, ROOT);
  assert.equal(cg.version, 'v1');
  assert.equal(cg.discoveryRoot, '/sys/fs/cgroup/pids');
  assert.deepEqual(cg.eventFiles('/x'), { pids: '/sys/fs/cgroup/pids/x/pids.events' });
});

test('detectLayout names the file when no cgroup is mounted under the root', (t) => {
  ready();
  assert.throws(
    () => detectLayout('/proc', '/tmp/no-cgroups-here'),
    (err: unknown) => err instanceof CgroupError && err.path === '/proc/self/mountinfo' && /no cgroup or cgroup2 mount at or under \/tmp\/no-cgroups-here/.test(err.message),
  );
});

test('cpu quota, cpuset and memory limit set on a real cgroup read back through CgroupFs', async (t) => {
  ready();
  const { rel, cg } = testCgroup(t);
  assert.deepEqual(await cg.readCpuQuota(rel), { quotaUs: 'max', periodUs: 0 });
  fs.writeFileSync(path.join(v1Dir('cpu', rel), 'cpu.cfs_period_us'), '100000');
  fs.writeFileSync(path.join(v1Dir('cpu', rel), 'cpu.cfs_quota_us'), '200000');
  assert.deepEqual(await cg.readCpuQuota(rel), { quotaUs: 200000, periodUs: 100000 });

  const hostCpus = fs.readFileSync('/sys/fs/cgroup/cpuset/cpuset.effective_cpus', 'utf8').trim();
  assert.equal(await cg.readCpuset(rel), hostCpus);

  assert.deepEqual(await cg.readMemoryUsage(rel), { usageBytes: 0, limitBytes: 'max' });
  fs.writeFileSync(path.join(v1Dir('memory', rel), 'memory.limit_in_bytes'), String(64 << 20));
  assert.deepEqual(await cg.readMemoryUsage(rel), { usageBytes: 0, limitBytes: 64 << 20 });
  assert.deepEqual(await cg.readMemoryEvents(rel), { max: 0, oomKill: 0 });
});

test('writePidsMax sets pids.max; the kernel file shows the value', async (t) => {
  ready();
  const { rel, cg } = testCgroup(t);
  assert.equal(await cg.readPidsMax(rel), 'max');
  assert.equal(await cg.writePidsMax(rel, 1234), 'ok');
  assert.equal(fs.readFileSync(path.join(v1Dir('pids', rel), 'pids.max'), 'utf8'), '1234\n');
  assert.equal(await cg.readPidsMax(rel), 1234);
  assert.equal(await cg.writePidsMax(rel, 99), 'ok');
  assert.equal(await cg.readPidsMax(rel), 99);
});

test('forks past pids.max fail and pids.events max counts them; tasks lists the survivors', async (t) => {
  ready();
  const { rel, cg } = testCgroup(t);
  assert.equal(await cg.writePidsMax(rel, 4), 'ok');
  assert.deepEqual(await cg.readPidsEvents(rel), { max: 0 });

  const stderr = await forkPastLimit(t, rel);
  assert.match(stderr, /fork/i, 'the shell reports that it could not fork');
  const events = await cg.readPidsEvents(rel);
  assert.ok(events !== null && events.max >= 1, `pids.events max should count the rejected fork, got ${JSON.stringify(events)}`);

  // The shell exited after the rejection; the sleeps it did start are still there.
  const tasks = await cg.readTasks(rel);
  const current = await cg.readPidsCurrent(rel);
  assert.ok(tasks !== null && tasks.length >= 1 && tasks.length <= 4, `tasks ${JSON.stringify(tasks)}`);
  assert.equal(current, tasks.length);
  // A child forked just before the rejection may not have exec'd sleep yet: give it a moment.
  const comms = () => tasks.map((pid) => { try { return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim(); } catch { return 'gone'; } });
  for (let i = 0; i < 100 && comms().some((c) => c !== 'sleep'); i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(comms(), tasks.map(() => 'sleep'));
});

test('readTasks lists the pid of a process started in the cgroup', async (t) => {
  ready();
  const { rel, cg } = testCgroup(t);
  const child = spawnInCgroup(rel, ['pids', 'memory'], '/bin/sleep', ['30']);
  t.after(() => child.kill('SIGKILL'));
  await waitForTask(rel, 'pids', child.pid!);
  assert.deepEqual(await cg.readTasks(rel), [child.pid]);
  assert.equal(await cg.readPidsCurrent(rel), 1);
  const usage = await cg.readMemoryUsage(rel);
  assert.ok(usage !== null && usage.usageBytes > 0, 'memory usage is charged to the cgroup');
});

test('an OOM kill under memory.limit_in_bytes shows in failcnt and oom_kill', async (t) => {
  ready();
  const { rel, cg } = testCgroup(t);
  fs.writeFileSync(path.join(v1Dir('memory', rel), 'memory.limit_in_bytes'), String(16 << 20));
  // The string doubles until the cgroup's limit stops it.
  const child = spawnInCgroup(rel, ['memory'], '/bin/sh', ['-c', 'x=0123456789abcdef; while :; do x=$x$x; done']);
  t.after(() => child.kill('SIGKILL'));
  const { signal } = await exited(child);
  assert.equal(signal, 'SIGKILL', 'the OOM killer ends the shell');
  const ev = await cg.readMemoryEvents(rel);
  assert.ok(ev !== null && ev.max > 0, `failcnt counts hits of the limit: ${JSON.stringify(ev)}`);
  assert.equal(ev.oomKill, 1);
});

test('a removed cgroup reads as null and writes as gone', async (t) => {
  ready();
  const { rel, cg } = testCgroup(t);
  const child = `${rel}/gone`;
  makeV1Cgroup(child);
  assert.equal(await cg.readPidsMax(child), 'max');
  await removeV1Cgroup(child);
  assert.equal(await cg.readPidsMax(child), null);
  assert.equal(await cg.readPidsCurrent(child), null);
  assert.equal(await cg.readPidsEvents(child), null);
  assert.equal(await cg.readCpuQuota(child), null);
  assert.equal(await cg.readCpuset(child), null);
  assert.equal(await cg.readMemoryEvents(child), null);
  assert.equal(await cg.readMemoryUsage(child), null);
  assert.equal(await cg.readTasks(child), null);
  assert.equal(await cg.writePidsMax(child, 100), 'gone');
  assert.equal(fs.existsSync(v1Dir('pids', child)), false, 'the write did not create anything');
});

test('paths that leave the hierarchy or lack a leading "/" are rejected', async (t) => {
  ready();
  const { rel, cg } = testCgroup(t);
  const rejected = (err: unknown) => err instanceof CgroupError && err.code === 'EINVALPATH';
  await assert.rejects(cg.readPidsMax('/../memory'), rejected);
  await assert.rejects(cg.writePidsMax(`${rel}/../../../memory${rel}`, 5), rejected);
  await assert.rejects(cg.writePidsMax(rel.slice(1), 5), rejected);
  assert.throws(() => cg.dir('memory', '/../../..'), rejected);
  // "/a/../b" stays inside and is allowed.
  assert.equal(cg.dir('pids', `/x/..${rel}`), v1Dir('pids', rel));
  assert.equal(fs.readFileSync(path.join(v1Dir('memory', rel), 'memory.limit_in_bytes'), 'utf8').trim(), '9223372036854771712');
});

test('CounterReader: pread at offset 0 on an open pids.events fd sees new values; removal reads as null', async (t) => {
  ready();
  const { rel } = testCgroup(t);
  const reader = new CounterReader();
  t.after(() => reader.close());
  const file = path.join(v1Dir('pids', rel), 'pids.events');
  fs.writeFileSync(path.join(v1Dir('pids', rel), 'pids.max'), '3');
  assert.equal(reader.read(file), 'max 0\n');
  assert.equal(reader.openCount, 1);

  await forkPastLimit(t, rel);
  const after = reader.read(file);
  assert.equal(reader.openCount, 1, 'the same fd was read again');
  assert.match(after ?? '', /^max [1-9]\d*\n$/);

  await removeV1Cgroup(rel);
  assert.equal(reader.read(file), null);
  assert.equal(reader.openCount, 0, 'the fd of a removed cgroup is closed');
});

test('readCountersSync sees a pids.max hit through cached fds; counterFiles lets them be closed', async (t) => {
  ready();
  const { rel, cg } = testCgroup(t);
  const reader = new CounterReader();
  t.after(() => reader.close());
  assert.deepEqual(cg.readCountersSync(rel, reader), { pids: { max: 0 }, memory: { max: 0, oomKill: 0 } });
  assert.equal(await cg.writePidsMax(rel, 3), 'ok');
  assert.deepEqual(cg.readPidsCurrentSync(rel, reader), { current: 0, max: 3 });
  await forkPastLimit(t, rel);
  const after = cg.readCountersSync(rel, reader);
  assert.ok(after?.pids && after.pids.max >= 1, `pids.events max went up: ${JSON.stringify(after)}`);
  const cur = cg.readPidsCurrentSync(rel, reader);
  assert.ok(cur && cur.current >= 1 && cur.current <= 3 && cur.max === 3, JSON.stringify(cur));
  assert.equal(reader.openCount, 5);
  for (const f of cg.counterFiles(rel)) reader.forget(f);
  assert.equal(reader.openCount, 0);
  await removeV1Cgroup(rel);
  assert.equal(cg.readCountersSync(rel, reader), null);
});

test('CounterReader: fd cap, forget and cost per read against readFileSync', async (t) => {
  ready();
  const { rel } = testCgroup(t);
  const files = ['pids.events', 'pids.current', 'pids.max'].map((f) => path.join(v1Dir('pids', rel), f));
  const capped = new CounterReader({ maxOpenFds: 2 });
  t.after(() => capped.close());
  assert.deepEqual(files.map((f) => capped.read(f)), ['max 0\n', '0\n', 'max\n']);
  assert.equal(capped.openCount, 2);
  assert.equal(capped.read(files[2]!), 'max\n', 'beyond the cap reads still work');
  capped.forget(v1Dir('pids', rel));
  assert.equal(capped.openCount, 0);

  const N = 1000;
  const reader = new CounterReader();
  t.after(() => reader.close());
  const file = files[0]!;
  reader.read(file);
  let t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) reader.read(file);
  const cachedUs = Number(process.hrtime.bigint() - t0) / 1000 / N;
  t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) fs.readFileSync(file, 'latin1');
  const readFileUs = Number(process.hrtime.bigint() - t0) / 1000 / N;
  t.diagnostic(`pids.events: cached fd ${cachedUs.toFixed(2)} us/read, readFileSync ${readFileUs.toFixed(2)} us/read`);
  // 1,000 containers x 3 counters a second within 1% of one CPU is 3.3 us a read.
  assert.ok(cachedUs < readFileUs, `cached ${cachedUs} us should beat readFileSync ${readFileUs} us`);
});
