/**
 * The real daemon (`node dist/src/cli.js run`) on this host's real cgroup v1 hierarchies, as
 * root: container cgroups shaped like the runtimes' layouts under /cgwd-test-<random>, real
 * pids.max writes, real forks past real limits, a real OOM kill, alerts at a real webhook
 * receiver. Each test makes its own tree, and removes it (killing its tasks) afterwards, also
 * on failure; each daemon is stopped first in the test's clean-up (see defer).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pidMaxBaseWithHeadroom } from '../helpers/pid-max';
import { exited, makeV1Cgroup, spawnInCgroup, v1Dir, waitForTask } from '../helpers/v1-cgroups';
import { runCli, startDaemon } from '../helpers/daemon';
import {
  BOMB, alertLog, config, daemon, defer, hex64, isMsg, makeContainer, merge, percentile, pidsEventsMax, r1, readPidsMax, receiver,
  ready, setQuota, sleep, stateDir, testRoot, waitPidsMax, webhookSink, writePidsMax, type Obj,
} from '../helpers/v1-daemon';

/** The runtime layouts the tests use: docker (cgroupfs), Kubernetes (cgroupfs driver), podman. */
function layouts(root: string): { docker: string; kube: string; podman: string; ids: { docker: string; kube: string; podman: string } } {
  const ids = { docker: hex64(), kube: hex64(), podman: hex64() };
  return {
    docker: `${root}/docker/${ids.docker}`,
    kube: `${root}/kubepods/burstable/pod${randomUUID()}/${ids.kube}`,
    podman: `${root}/libpod_parent/libpod-${ids.podman}`,
    ids,
  };
}

// ---- Issue 2: daemon core -------------------------------------------------------------

test('apply --dry-run --json reports docker, kubernetes and podman containers and writes nothing; apply writes them', async (t) => {
  ready();
  const root = testRoot(t);
  const L = layouts(root);
  makeContainer(L.docker, 2);
  makeContainer(L.kube, 16);
  makeContainer(L.podman);
  const state = stateDir(t);
  const cfgFile = path.join(state, 'config.yaml');
  fs.writeFileSync(cfgFile, JSON.stringify(await config(root, state)));

  const dry = await runCli(['apply', '--config', cfgFile, '--dry-run', '--json']);
  assert.equal(dry.code, 0, `apply --dry-run failed: ${dry.stderr}`);
  const report = JSON.parse(dry.stdout) as { containers: Obj[] };
  const byPath = new Map(report.containers.map((c) => [c.cgroupPath, c]));
  assert.equal(report.containers.length, 3, `expected exactly the 3 test containers, got ${[...byPath.keys()].join(', ')}`);
  const docker = byPath.get(L.docker);
  const kube = byPath.get(L.kube);
  const podman = byPath.get(L.podman);
  assert.ok(docker && kube && podman, `missing containers: ${[...byPath.keys()].join(', ')}`);
  assert.deepEqual(
    { id: docker.id, runtime: docker.runtime, cores: docker.cores, coresSource: docker.coresSource, policyValue: docker.policyValue, oldPidsMax: docker.oldPidsMax },
    { id: L.ids.docker, runtime: 'docker', cores: 2, coresSource: 'quota', policyValue: 6144, oldPidsMax: 'max' },
  );
  assert.deepEqual(
    { id: kube.id, cores: kube.cores, coresSource: kube.coresSource, policyValue: kube.policyValue, oldPidsMax: kube.oldPidsMax },
    { id: L.ids.kube, cores: 16, coresSource: 'quota', policyValue: 16384, oldPidsMax: 'max' },
  );
  assert.match(kube.runtime, /containerd|kubernetes|cri/);
  assert.equal(podman.id, L.ids.podman);
  assert.equal(podman.runtime, 'podman');
  assert.notEqual(podman.coresSource, 'quota');
  assert.equal(podman.policyValue, 6144);
  // A dry run writes nothing; what it reports as "new" is what it would write.
  for (const c of [docker, kube, podman]) assert.equal(c.written, false, `${c.cgroupPath} reported as written in a dry run`);
  for (const rel of [L.docker, L.kube, L.podman]) assert.equal(readPidsMax(rel), 'max', `${rel} was written by a dry run`);
  assert.deepEqual([docker.newPidsMax, kube.newPidsMax, podman.newPidsMax], [6144, 16384, 6144], 'dry run: newPidsMax should say what would be written');
  // Its directory in each controller hierarchy.
  for (const c of ['pids', 'memory', 'cpu', 'cpuset']) assert.equal((docker as unknown as { cgroupDirs: Record<string, string> }).cgroupDirs[c], `/sys/fs/cgroup/${c}${L.docker}`);

  const real = await runCli(['apply', '--config', cfgFile, '--json']);
  assert.equal(real.code, 0, `apply failed: ${real.stderr}`);
  assert.deepEqual([readPidsMax(L.docker), readPidsMax(L.kube), readPidsMax(L.podman)], ['6144', '16384', '6144']);
});

test('the daemon finds docker, kubernetes and podman containers and writes pids.max by their cores', async (t) => {
  ready();
  const root = testRoot(t);
  const L = layouts(root);
  makeContainer(L.docker, 2);
  makeContainer(L.kube, 16);
  makeContainer(L.podman);
  // A cgroup that is no container: never touched.
  makeV1Cgroup(`${root}/docker/not-a-container`);
  const d = await daemon(t, await config(root, stateDir(t)));
  await d.waitForLog(isMsg('initial reconcile done'), 10_000);

  assert.equal(readPidsMax(L.docker), '6144');
  assert.equal(readPidsMax(L.kube), '16384');
  assert.equal(readPidsMax(L.podman), '6144');
  assert.equal(readPidsMax(`${root}/docker/not-a-container`), 'max');

  const found = d.logs.filter(isMsg('container found')).map((l) => l.cgroup).sort();
  assert.deepEqual(found, [L.docker, L.kube, L.podman].sort());
  const set = new Map(d.logs.filter(isMsg('pids.max set')).map((l) => [l.cgroup, l]));
  assert.deepEqual(
    { id: set.get(L.docker)?.id, cores: set.get(L.docker)?.cores, coresSource: set.get(L.docker)?.coresSource, policy: set.get(L.docker)?.policy, old: set.get(L.docker)?.old, new: set.get(L.docker)?.new },
    { id: L.ids.docker, cores: 2, coresSource: 'quota', policy: 6144, old: 'max', new: 6144 },
  );
  assert.equal(set.get(L.kube)?.new, 16384);
  assert.equal(set.get(L.podman)?.new, 6144);
});

test('cores from an ancestor: a Kubernetes pod-level quota and a --cgroup-parent quota decide; a cpuset counts only when narrower than the host', async (t) => {
  ready();
  const root = testRoot(t);
  // A pod with an 8-CPU pod-level limit and a container with none of its own (the kubelet sets
  // the pod's quota when every container has a limit; the container's own cfs_quota can be -1).
  const pod = `${root}/kubepods/burstable/pod${randomUUID()}`;
  makeV1Cgroup(pod);
  setQuota(pod, 8);
  const inPod = `${pod}/${hex64()}`;
  makeContainer(inPod);
  // Its sibling with a tighter quota of its own: its own wins.
  const inPodOwn = `${pod}/${hex64()}`;
  makeContainer(inPodOwn, 7);
  // docker run --cgroup-parent /<root>/tenant-a, a slice with a 12-CPU quota.
  const tenant = `${root}/tenant-a`;
  makeV1Cgroup(tenant);
  setQuota(tenant, 12);
  const underTenant = `${tenant}/docker/${hex64()}`;
  makeContainer(underTenant);
  // A cpuset of one CPU on this host, and one with every CPU the host has.
  const narrow = `${root}/docker/${hex64()}`;
  makeContainer(narrow);
  const all = fs.readFileSync('/sys/fs/cgroup/cpuset/cpuset.cpus', 'utf8').trim();
  fs.writeFileSync(path.join(v1Dir('cpuset', narrow), 'cpuset.cpus'), all.split(/[-,]/)[0]!);
  const wide = `${root}/docker/${hex64()}`;
  makeContainer(wide);
  fs.writeFileSync(path.join(v1Dir('cpuset', wide), 'cpuset.cpus'), all);

  const d = await daemon(t, await config(root, stateDir(t), { discovery: { roots: [root] } }));
  await d.waitForLog(isMsg('initial reconcile done'), 10_000);
  const set = new Map(d.logs.filter(isMsg('pids.max set')).map((l) => [l.cgroup as string, l]));
  const got = (rel: string) => ({ pidsMax: readPidsMax(rel), cores: set.get(rel)?.cores, coresSource: set.get(rel)?.coresSource });
  assert.deepEqual(got(inPod), { pidsMax: '8192', cores: 8, coresSource: 'parent-quota' });
  assert.equal(set.get(inPod)?.coresDetail, `quota 800000/100000 of ${pod}`);
  assert.deepEqual(got(inPodOwn), { pidsMax: '7168', cores: 7, coresSource: 'quota' });
  assert.deepEqual(got(underTenant), { pidsMax: '12288', cores: 12, coresSource: 'parent-quota' });
  const hostCpus = fs.readFileSync('/sys/devices/system/cpu/online', 'utf8').trim();
  if (hostCpus !== '0') assert.equal(got(narrow).coresSource, 'cpuset', `a one-CPU cpuset on a host with CPUs ${hostCpus}`);
  assert.equal(got(narrow).pidsMax, '6144');
  assert.deepEqual(got(wide).coresSource, 'host');
  // The pod's quota raised (a resize): the next reconcile follows it.
  setQuota(pod, 10);
  d.proc.kill('SIGHUP');
  assert.notEqual(await waitPidsMax(inPod, '10240', 5000), null, `after the pod's quota went to 10 CPUs pids.max is ${readPidsMax(inPod)}`);
});

test('a process in a container cgroup cannot fork past the limit the daemon set; pids.events counts it', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  await daemon(t, await config(root, stateDir(t), { policy: { overrides: [{ pathPattern: '^/cgwd-test-[0-9a-f]+/docker/', pidsMax: 10 }] } }));
  assert.notEqual(await waitPidsMax(rel, '10', 5000), null, `pids.max is ${readPidsMax(rel)}, not the override's 10`);

  // dash: a failed fork ends the script with "Cannot fork".
  const child = spawnInCgroup(rel, ['pids'], '/bin/dash', ['-c', 'i=0; while [ $i -lt 30 ]; do sleep 60 & i=$((i+1)); done; echo all-forked']);
  defer(t, () => child.kill('SIGKILL'));
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (b: Buffer) => (stdout += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const r = await exited(child);
  assert.notEqual(r.code, 0);
  assert.doesNotMatch(stdout, /all-forked/);
  assert.match(stderr, /Cannot fork|Resource temporarily unavailable/);
  assert.ok(pidsEventsMax(rel) >= 1, `pids.events max is ${pidsEventsMax(rel)}`);
  const current = Number(fs.readFileSync(path.join(v1Dir('pids', rel), 'pids.current'), 'utf8'));
  assert.ok(current <= 10, `pids.current ${current} above the limit`);
});

test('container cgroups created while the daemon runs get their limit at once (20 creations)', async (t) => {
  ready();
  const root = testRoot(t);
  makeV1Cgroup(`${root}/docker`);
  makeV1Cgroup(`${root}/libpod_parent`);
  const d = await daemon(t, await config(root, stateDir(t)));
  const polled: number[] = [];
  const rels: string[] = [];
  for (let i = 0; i < 20; i++) {
    const rel = i % 2 ? `${root}/docker/${hex64()}` : `${root}/libpod_parent/libpod-${hex64()}`;
    rels.push(rel);
    makeContainer(rel);
    const ms = await waitPidsMax(rel, '6144', 2000, 0);
    assert.notEqual(ms, null, `${rel}: pids.max not 6144 within 2 s (is ${readPidsMax(rel)})`);
    polled.push(ms!);
  }
  // A container made under a parent that appears while the daemon runs (a new pod).
  const pod = `${root}/kubepods/besteffort/pod${randomUUID()}`;
  makeV1Cgroup(pod);
  const podCtr = `${pod}/${hex64()}`;
  makeContainer(podCtr);
  assert.notEqual(await waitPidsMax(podCtr, '6144', 3000), null, 'container in a new pod did not get its limit within 3 s');

  const logged: number[] = [];
  for (const rel of rels) {
    const l = await d.waitForLog(isMsg('creation to pids.max written', (x) => x.cgroup === rel), 3000);
    assert.equal(typeof l.latencyMs, 'number');
    logged.push(l.latencyMs as number);
  }
  const ps = polled.slice().sort((a, b) => a - b);
  const ls = logged.slice().sort((a, b) => a - b);
  t.diagnostic(`mkdir -> pids.max seen by the test (ms, n=${ps.length}): p50 ${r1(percentile(ps, 50))}, p99 ${r1(percentile(ps, 99))}, max ${r1(ps.at(-1)!)}`);
  t.diagnostic(`daemon latencyMs (n=${ls.length}): p50 ${r1(percentile(ls, 50))}, p99 ${r1(percentile(ls, 99))}, max ${r1(ls.at(-1)!)}`);
  assert.ok(ps.at(-1)! < 1000, `slowest creation took ${ps.at(-1)} ms`);
});

test('a CPU quota the runtime writes just after mkdir decides the limit (16 cores -> 16384)', async (t) => {
  ready();
  const root = testRoot(t);
  makeV1Cgroup(`${root}/docker`);
  const d = await daemon(t, await config(root, stateDir(t)));
  // As runc does: the cgroup directories first, the resources a moment later.
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  await d.waitForLog(isMsg('creation to pids.max written', (l) => l.cgroup === rel), 2000);
  setQuota(rel, 16);
  const ms = await waitPidsMax(rel, '16384', 5000, 20);
  const reasons = d.logs.filter((l) => l.cgroup === rel && l.msg !== 'container found').map((l) => `${l.msg} (${l.why ?? ''}, old ${l.old}, new ${l.new})`);
  assert.notEqual(ms, null, `pids.max is ${readPidsMax(rel)}, not 16384, 5 s after the 16-core quota was set; daemon said: ${reasons.join(' | ')}`);
});

test('a slow runtime: while runc\'s init still runs in the cgroup, a CPU quota written after the 3 s window still decides at once (8 cores -> 8192)', async (t) => {
  ready();
  const root = testRoot(t);
  makeV1Cgroup(`${root}/docker`);
  const d = await daemon(t, await config(root, stateDir(t)));
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  // What runc leaves in the cgroup between joining it and exec'ing the container's command.
  // Blocked opening a FIFO nobody writes: no child left behind to keep the cgroup busy.
  const fifo = path.join(stateDir(t), 'never');
  execFileSync('mkfifo', [fifo]);
  const init = spawnInCgroup(rel, ['pids', 'cpu'], '/bin/sh', ['-c', 'printf "runc:[2:INIT]" > /proc/self/comm; read x < "$0"', fifo]);
  defer(t, async () => {
    init.kill('SIGKILL');
    await exited(init);
  });
  await waitForTask(rel, 'pids', init.pid!);
  await d.waitForLog(isMsg('creation to pids.max written', (l) => l.cgroup === rel), 2000);
  await sleep(4500);
  const t0 = Date.now();
  setQuota(rel, 8);
  const ms = await waitPidsMax(rel, '8192', 1500, 5);
  assert.notEqual(ms, null, `pids.max is ${readPidsMax(rel)}, not 8192, 1.5 s after a quota written 4.5 s after the mkdir while runc:[2:INIT] ran`);
  t.diagnostic(`quota written 4.5 s after mkdir -> 8192 in ${Date.now() - t0} ms`);
  // The command exec'd (here: gone): the window ends at its next check, and a later quota waits for the reconcile.
  init.kill('SIGKILL');
  await exited(init);
  await sleep(3500);
  setQuota(rel, 16);
  await sleep(1500);
  assert.equal(readPidsMax(rel), '8192', 'the settle window stayed open after the runtime\'s init had gone');
});

test('existing: keep-lower keeps a lower pids.max, replace overwrites it, observe writes nothing', async (t) => {
  ready();
  const root = testRoot(t);
  const lower = `${root}/docker/${hex64()}`;
  const unlimited = `${root}/docker/${hex64()}`;
  makeContainer(lower);
  makeContainer(unlimited);
  writePidsMax(lower, 2048);

  // observe: nothing written, the intent logged.
  {
    const d = await daemon(t, await config(root, stateDir(t), { mode: 'observe' }));
    await d.waitForLog(isMsg('initial reconcile done'), 10_000);
    assert.equal(readPidsMax(unlimited), 'max');
    assert.equal(readPidsMax(lower), '2048');
    const would = d.logs.find((l) => l.cgroup === unlimited && /would set/.test(l.msg ?? ''));
    assert.ok(would, `no "would set" line for ${unlimited}`);
    assert.equal(would.policy, 6144);
    assert.equal(d.logs.filter(isMsg('pids.max set')).length, 0);
    await d.stop();
  }
  // keep-lower (the default).
  {
    const d = await daemon(t, await config(root, stateDir(t)));
    await d.waitForLog(isMsg('initial reconcile done'), 10_000);
    assert.equal(readPidsMax(lower), '2048');
    assert.equal(readPidsMax(unlimited), '6144');
    const kept = d.logs.find((l) => l.cgroup === lower && l.action === 'kept-lower');
    assert.ok(kept, 'no kept-lower line for the lower container');
    await d.stop();
  }
  // replace.
  {
    const d = await daemon(t, await config(root, stateDir(t), { policy: { existing: 'replace' } }));
    await d.waitForLog(isMsg('initial reconcile done'), 10_000);
    assert.equal(readPidsMax(lower), '6144');
    const set = d.logs.find(isMsg('pids.max set', (l) => l.cgroup === lower));
    assert.equal(set?.old, 2048);
    assert.equal(set?.new, 6144);
    await d.stop();
  }
});

test('drift: a pids.max rewritten by hand to "max" is repaired by the scheduled reconcile', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/libpod_parent/libpod-${hex64()}`;
  makeContainer(rel);
  const d = await daemon(t, await config(root, stateDir(t), { discovery: { reconcileSchedule: '*/2 * * * * *' } }));
  await d.waitForLog(isMsg('initial reconcile done'), 10_000);
  assert.equal(readPidsMax(rel), '6144');
  writePidsMax(rel, 'max');
  const ms = await waitPidsMax(rel, '6144', 6000, 20);
  assert.notEqual(ms, null, 'drift not repaired within 6 s');
  t.diagnostic(`drift repaired after ${Math.round(ms!)} ms (schedule every 2 s)`);
  const repaired = d.logs.find(isMsg('pids.max set', (l) => l.cgroup === rel && l.old === 'max' && l.why === 'reconcile'));
  assert.ok(repaired, 'no "pids.max set" line from the reconcile');
});

test('SIGHUP: an invalid config is refused and the daemon keeps running; a valid change is applied', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  const cfg = await config(root, stateDir(t));
  const d = await daemon(t, cfg);
  await d.waitForLog(isMsg('initial reconcile done'), 10_000);
  assert.equal(readPidsMax(rel), '6144');

  d.writeConfig({ ...cfg, policy: { minCores: 'six' } });
  d.proc.kill('SIGHUP');
  const refused = await d.waitForLog((l) => /reload/.test(l.msg ?? '') && /fail|refus|invalid/i.test(l.msg ?? ''), 5000);
  assert.match(JSON.stringify(refused), /minCores/);
  await sleep(300);
  assert.equal(d.proc.exitCode, null, 'daemon exited after an invalid reload');
  assert.equal(readPidsMax(rel), '6144');

  // Lowering: pidsPerCore 512 -> max(2, 6) x 512 = 3072.
  const before = d.logs.length;
  d.writeConfig(merge(cfg, { policy: { pidsPerCore: 512 } }));
  d.proc.kill('SIGHUP');
  assert.notEqual(await waitPidsMax(rel, '3072', 5000, 20), null, `after reload with pidsPerCore 512, pids.max is ${readPidsMax(rel)}`);
  await d.waitForLog((l) => d.logs.indexOf(l) >= before && l.msg === 'reloaded', 5000);

  // Raising: pidsPerCore 2048 -> 12288. The 3072 is the daemon's own earlier value, not an
  // operator's deliberate lower limit.
  d.writeConfig(merge(cfg, { policy: { pidsPerCore: 2048 } }));
  d.proc.kill('SIGHUP');
  const ms = await waitPidsMax(rel, '12288', 5000, 20);
  const said = d.logs.filter((l) => l.cgroup === rel).slice(-3).map((l) => `${l.msg} (action ${l.action}, old ${l.old}, new ${l.new})`);
  assert.notEqual(ms, null, `after reload with pidsPerCore 2048, pids.max is ${readPidsMax(rel)}, not 12288; daemon said: ${said.join(' | ')}`);
  assert.equal(d.proc.exitCode, null);
});

test('a restart with a raised pidsPerCore raises the limits the daemon itself set before (same stateDir)', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  const state = stateDir(t);
  const cfg = await config(root, state);
  {
    const d = await daemon(t, cfg);
    await d.waitForLog(isMsg('initial reconcile done'), 10_000);
    assert.equal(readPidsMax(rel), '6144');
    await d.stop();
  }
  // As an operator does: edit the config, restart the service.
  const d = await daemon(t, merge(cfg, { policy: { pidsPerCore: 2048 } }));
  await d.waitForLog(isMsg('initial reconcile done'), 10_000);
  const said = d.logs.filter((l) => l.cgroup === rel && l.msg !== 'container found').map((l) => `${l.msg} (action ${l.action}, old ${l.old}, new ${l.new})`);
  assert.equal(readPidsMax(rel), '12288', `after restart with pidsPerCore 2048 the daemon said: ${said.join(' | ')}`);
});

test('SIGTERM during start: the daemon stops cleanly (exit 0) and keeps every limit it wrote for the next start', async (t) => {
  ready();
  const root = testRoot(t);
  const rels = Array.from({ length: 150 }, () => `${root}/docker/${hex64()}`);
  for (const rel of rels) makeContainer(rel);
  const state = stateDir(t);
  const d = startDaemon(await config(root, state));
  defer(t, () => d.stop());
  // The first write is well before the start ends (150 containers): stop it there, as
  // `systemctl stop` may during a long start.
  await d.waitForLog(isMsg('pids.max set'), 10_000);
  const r = await d.stop();
  assert.deepEqual(r, { code: 0, signal: null }, `SIGTERM during start: ${JSON.stringify(r)}, stderr: ${d.stderr()}`);
  const set = d.logs.filter(isMsg('pids.max set')).map((l) => l.cgroup as string);
  const saved = JSON.parse(fs.readFileSync(path.join(state, 'written-pids-max.json'), 'utf8')) as { written: Record<string, number> };
  t.diagnostic(`${set.length} of ${rels.length} written before the stop; ${Object.keys(saved.written).length} saved`);
  for (const rel of set) assert.equal(saved.written[rel], 6144, `${rel} was written but not saved`);
  assert.equal(Object.keys(saved.written).length, set.length);
});

test('an invalid config stops the daemon before it writes anything, with one sentence naming key, value and expectation', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  const cfg = merge(await config(root, stateDir(t)), { policy: { minCores: 'six' } });
  const d = startDaemon(cfg);
  defer(t, () => d.stop());
  const r = await Promise.race([d.exited, sleep(10_000).then(() => null)]);
  assert.ok(r, 'daemon with an invalid config still running after 10 s');
  assert.notEqual(r.code, 0);
  const err = d.stderr().trim();
  t.diagnostic(`exit ${r.code}, stderr: ${err}`);
  assert.equal(err.split('\n').length, 1, `stderr is not one line: ${err}`);
  assert.match(err, /policy\.minCores/);
  assert.match(err, /six/);
  assert.match(err, /expected number/);
  assert.equal(readPidsMax(rel), 'max', 'pids.max was written despite the invalid config');
  assert.equal(d.logs.filter(isMsg('pids.max set')).length, 0);
});

test('not root: enforce mode refuses to start with a clear error; observe mode warns and runs', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  const nobody = { uid: 65534, gid: 65534 };
  {
    const d = startDaemon(await config(root, stateDir(t, 0o777)), nobody);
    defer(t, () => d.stop());
    const r = await Promise.race([d.exited, sleep(10_000).then(() => null)]);
    assert.ok(r, 'enforce mode as uid 65534 still running after 10 s');
    assert.notEqual(r.code, 0);
    const err = d.stderr().trim();
    t.diagnostic(`uid 65534, enforce: exit ${r.code}, stderr: ${err}`);
    assert.match(err, /root|permission|writable|EACCES/i, `unclear error: ${err}`);
    assert.match(err, /observe/, `the error should name the way out (mode: observe): ${err}`);
    assert.equal(readPidsMax(rel), 'max');
  }
  {
    const d = startDaemon(await config(root, stateDir(t, 0o777), { mode: 'observe' }), nobody);
    defer(t, () => d.stop());
    await d.waitForLog(isMsg('detection running'), 15_000);
    const warnings = d.logs.filter((l) => l.level === 40);
    t.diagnostic(`uid 65534, observe: warnings ${JSON.stringify(warnings.map((l) => l.msg))}`);
    assert.ok(warnings.length > 0, 'no warning logged in observe mode as uid 65534');
    await sleep(500);
    assert.equal(d.proc.exitCode, null, `observe mode as uid 65534 exited: ${d.stderr()}`);
    assert.equal(readPidsMax(rel), 'max');
    assert.ok(d.logs.some((l) => l.cgroup === rel && /would set/.test(l.msg ?? '')), 'observe mode did not report the container');
  }
});

test('kernel.pid_max: raised to the target, never lowered; restored afterwards', async (t) => {
  ready();
  const file = '/proc/sys/kernel/pid_max';
  const original = pidMaxBaseWithHeadroom(4096, (restore) => defer(t, restore));
  const root = testRoot(t);
  const target = Number(original) + 4096;
  {
    const d = await daemon(t, await config(root, stateDir(t), { kernel: { manage: true, pidMax: target } }));
    const l = await d.waitForLog((x) => /kernel\.pid_max/.test(x.msg ?? ''), 5000);
    assert.equal(l.msg, 'raised kernel.pid_max');
    assert.equal(fs.readFileSync(file, 'utf8').trim(), String(target));
    await d.stop();
  }
  {
    const d = await daemon(t, await config(root, stateDir(t), { kernel: { manage: true, pidMax: original } }));
    const l = await d.waitForLog((x) => /kernel\.pid_max/.test(x.msg ?? ''), 5000);
    assert.equal(l.msg, 'kernel.pid_max already at or above target');
    assert.equal(fs.readFileSync(file, 'utf8').trim(), String(target), 'pid_max was lowered');
    await d.stop();
  }
});

// ---- Issue 3: detection on v1 ---------------------------------------------------------

test('a fork bomb gives ONE pids-max alert at the webhook within a second, then a counted update; HMAC verifies', async (t) => {
  ready();
  const root = testRoot(t);
  const id = hex64();
  const rel = `${root}/docker/${id}`;
  makeContainer(rel);
  const { hook, env } = await receiver(t);
  const d = await daemon(
    t,
    await config(root, stateDir(t), {
      policy: { overrides: [{ pathPattern: `^${root}/docker/`, pidsMax: 20 }] },
      alerts: { repeatIntervalSeconds: 2, sinks: [webhookSink(hook.url)] },
    }),
    { env },
  );
  assert.notEqual(await waitPidsMax(rel, '20', 5000), null);

  const t0 = Date.now();
  const bomb = spawnInCgroup(rel, ['pids'], '/usr/bin/perl', BOMB);
  defer(t, () => bomb.kill('SIGKILL'));
  const first = await hook.waitFor((r) => r.alert?.kind === 'pids-max', 5000);
  const latency = first.at - t0;
  t.diagnostic(`fork bomb start -> pids-max alert at the webhook: ${latency} ms; sources ${JSON.stringify(first.alert.sources)}`);
  const kmsgLatency = d.logs.find(isMsg('limit event', (l) => l.event?.kind === 'pids-max'))?.event?.latencyMs;
  if (kmsgLatency !== undefined) t.diagnostic(`kernel -> daemon (limit event latencyMs): ${kmsgLatency} ms`);
  assert.ok(latency < 1000, `alert arrived ${latency} ms after the bomb started`);
  const a = first.alert;
  assert.equal(first.hmacOk, true, 'HMAC signature did not verify');
  assert.equal(first.headers['idempotency-key'], a.idempotencyKey);
  assert.equal(a.state, 'firing');
  assert.equal(a.sequence, 1);
  assert.equal(a.severity, 'critical');
  assert.equal(a.container.cgroupPath, rel);
  assert.equal(a.container.id, id);
  assert.equal(a.counters.limit, 20);
  assert.ok(a.counters.eventsTotal >= 1 && a.counters.eventsSinceLast >= 1, `counters ${JSON.stringify(a.counters)}`);
  // The webhook can be faster than the daemon's stdout pipe to this process.
  const logged = await d.waitForLog(alertLog('pids-max'), 2000);
  assert.equal(logged?.msg, a.summary, 'the alert is logged with its summary');
  t.diagnostic(`summary: ${a.summary}`);
  const comms = (a.topCommands ?? []).map((c: Obj) => c.comm);
  assert.ok(comms.includes('sleep'), `topCommands ${JSON.stringify(a.topCommands)}`);

  // The kernel logs only the first rejection; the sweep counts the rest. An update follows
  // after repeatIntervalSeconds (2) with a higher count.
  const update = await hook.waitFor((r) => r.alert?.kind === 'pids-max' && r.alert.sequence >= 2, 8000);
  t.diagnostic(`update after ${update.at - first.at} ms: counters ${JSON.stringify(update.alert.counters)}`);
  assert.equal(update.alert.fingerprint, a.fingerprint);
  assert.equal(update.alert.state, 'firing');
  assert.ok(update.alert.counters.eventsTotal > a.counters.eventsTotal, `eventsTotal did not grow: ${a.counters.eventsTotal} -> ${update.alert.counters.eventsTotal}`);
  assert.ok(update.alert.counters.eventsSinceLast >= 1);
  assert.ok(update.at - first.at >= 1500, `update came ${update.at - first.at} ms after the first alert, before the repeat interval`);
  assert.ok(pidsEventsMax(rel) >= update.alert.counters.eventsTotal, `pids.events ${pidsEventsMax(rel)} < eventsTotal ${update.alert.counters.eventsTotal}`);

  const firstMessages = hook.received.filter((r) => r.alert?.kind === 'pids-max' && r.alert.sequence === 1);
  assert.equal(firstMessages.length, 1, 'more than one new pids-max alert for one bomb');
  for (const r of hook.received) assert.equal(r.hmacOk, true, `HMAC failed on ${r.alert?.kind} #${r.alert?.sequence}`);
  const keys = hook.received.map((r) => r.alert.idempotencyKey);
  assert.equal(new Set(keys).size, keys.length, 'idempotency keys repeat');
});

test('an OOM kill in a memory-limited container gives an oom-kill alert naming the victim', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/libpod_parent/libpod-${hex64()}`;
  makeContainer(rel);
  fs.writeFileSync(path.join(v1Dir('memory', rel), 'memory.limit_in_bytes'), String(32 << 20));
  const { hook, env } = await receiver(t);
  await daemon(t, await config(root, stateDir(t), { alerts: { repeatIntervalSeconds: 2, sinks: [webhookSink(hook.url)] } }), { env });

  // tail on /dev/zero never sees a newline and keeps everything: it grows until the OOM killer.
  const t0 = Date.now();
  const hog = spawnInCgroup(rel, ['pids', 'memory'], '/bin/sh', ['-c', 'exec tail < /dev/zero']);
  defer(t, () => hog.kill('SIGKILL'));
  const r = await exited(hog);
  assert.equal(r.signal, 'SIGKILL', `the hog was not killed: ${JSON.stringify(r)}`);
  const killedAt = Date.now();
  const got = await hook.waitFor((x) => x.alert?.kind === 'oom-kill', 5000);
  t.diagnostic(`hog start -> oom-kill alert: ${got.at - t0} ms (hog death seen by the test -> alert: ${got.at - killedAt} ms)`);
  const a = got.alert;
  assert.equal(got.hmacOk, true);
  assert.equal(a.container.cgroupPath, rel);
  assert.equal(a.victim?.comm, 'tail');
  assert.equal(a.victim?.pid, hog.pid);
  assert.ok(a.counters.eventsTotal >= 1);
  assert.ok(got.at - killedAt < 1000, `oom-kill alert ${got.at - killedAt} ms after the kill`);
});

test('durability: alerts made while the receiver is down survive SIGKILL of the daemon and arrive after restart', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  const { hook, env } = await receiver(t);
  await hook.setDown(true);
  const state = stateDir(t);
  const cfg = await config(root, state, {
    policy: { overrides: [{ pathPattern: `^${root}/docker/`, pidsMax: 20 }] },
    alerts: { repeatIntervalSeconds: 2, sinks: [webhookSink(hook.url)] },
  });
  const d1 = await daemon(t, cfg, { env });
  assert.notEqual(await waitPidsMax(rel, '20', 5000), null);
  const bomb = spawnInCgroup(rel, ['pids'], '/usr/bin/perl', BOMB);
  defer(t, () => bomb.kill('SIGKILL'));
  await waitForTask(rel, 'pids', bomb.pid!);
  await d1.waitForLog(alertLog('pids-max'), 5000);
  // Let the first update be made too, then give the outbox a moment to reach the disk.
  await d1.waitForLog((l) => l.alert?.kind === 'pids-max' && l.alert.counters?.eventsSinceLast >= 1 && d1.logs.filter(alertLog('pids-max')).length >= 2, 6000);
  await sleep(300);
  await d1.kill9();

  const outbox = path.join(state, 'outbox');
  const pending: Obj[] = [];
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory() && e.name !== 'corrupt') walk(path.join(dir, e.name));
      else if (/^\d+\.json$/.test(e.name)) pending.push(JSON.parse(fs.readFileSync(path.join(dir, e.name), 'utf8')).alert);
    }
  };
  walk(outbox);
  const loggedByD1 = d1.logs.filter((l) => l.alert).length;
  assert.ok(pending.length >= 2, `outbox holds ${pending.length} entries after SIGKILL`);
  assert.equal(pending.length, loggedByD1, `daemon logged ${loggedByD1} alerts, outbox holds ${pending.length}`);
  t.diagnostic(`on disk after SIGKILL: ${pending.map((a) => `${a.kind}#${a.sequence}`).join(', ')}`);

  await hook.setDown(false);
  const d2 = startDaemon(cfg, { env });
  defer(t, () => d2.stop());
  await d2.waitForLog(isMsg('detection running'), 15_000);
  for (const a of pending) {
    await hook.waitFor((r) => r.alert?.idempotencyKey === a.idempotencyKey, 10_000);
  }
  for (const r of hook.received) assert.equal(r.hmacOk, true);
  const got = hook.received.filter((r) => pending.some((a) => a.idempotencyKey === r.alert?.idempotencyKey));
  t.diagnostic(`delivered after restart: ${got.length} of ${pending.length} (receiver got ${hook.received.length} in all)`);
});

// ---- Issue 10: sweep only what the kernel does not report --------------------------------

test('v1: a second PID-limit hit after the alert resolved (kmsg stays silent) alerts within the fast sweep interval', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  const { hook, env } = await receiver(t);
  const d = await daemon(
    t,
    await config(root, stateDir(t), {
      policy: { overrides: [{ pathPattern: `^${root}/docker/`, pidsMax: 1 }] },
      alerts: { resolveAfterSeconds: 2, sinks: [webhookSink(hook.url)] },
    }),
    { env },
  );
  assert.notEqual(await waitPidsMax(rel, '1', 5000), null);
  const caps = d.logs.find((l) => l.msg?.startsWith('kernel signals measured'))?.capabilities;
  t.diagnostic(`capabilities: ${JSON.stringify(caps)}`);
  // One fork past pids.max 1: the process is the cgroup's one task.
  const forkOnce = async (): Promise<number> => {
    const at = Date.now();
    const p = spawnInCgroup(rel, ['pids'], '/usr/bin/perl', ['-e', 'my $p = fork(); exit(defined $p ? 1 : 0)']);
    defer(t, () => p.kill('SIGKILL'));
    await exited(p);
    return at;
  };
  const t1 = await forkOnce();
  const first = await hook.waitFor((r) => r.alert?.kind === 'pids-max' && r.alert.state === 'firing', 5000);
  t.diagnostic(`first hit -> alert ${first.at - t1} ms, sources ${JSON.stringify(first.alert.sources)}`);
  assert.equal(pidsEventsMax(rel), 1);
  await hook.waitFor((r) => r.alert?.kind === 'pids-max' && r.alert.state === 'resolved' && r.alert.fingerprint === first.alert.fingerprint, 10_000);

  // The kernel printed "fork rejected" for this cgroup's first rejection only: this one is
  // in no log and (6.18) notifies nothing; only the fast sweep can see it.
  const t2 = await forkOnce();
  assert.equal(pidsEventsMax(rel), 2);
  const second = await hook.waitFor((r) => r.alert?.kind === 'pids-max' && r.alert.state === 'firing' && r.at > first.at && r.alert.sequence === 1, 5000);
  // The webhook can be faster than the daemon's stdout pipe to this process: wait for the line.
  const event = await d.waitForLog(isMsg('limit event', (l) => l.event?.kind === 'pids-max' && l.event?.cgroupPath === rel && l.event?.counter >= 2), 2000).catch(() => undefined);
  t.diagnostic(`second hit -> alert ${second.at - t2} ms, event source ${event?.event?.source}`);
  if (caps?.pidsInotify !== 'yes') assert.equal(event?.event?.source, 'sweep', 'the second hit came from the fast sweep');
  // The fast interval is the sweep's (1 s by default), plus the fork's own start-up.
  assert.ok(second.at - t2 < 1000 + 300, `second alert ${second.at - t2} ms after the fork`);
});
