/**
 * Real Docker: a private dockerd (test/helpers/docker.ts) on this host's cgroup v1, its
 * containers under a cgroup parent of the test's own, and the real daemon process. Names and
 * images come from the Engine API on the private socket.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { DOCKER, startDocker, IMAGE, type PrivateDocker } from '../helpers/docker';
import { isRoot, need } from '../helpers/prereq';
import { config, daemon, receiver, setQuota, sleep, stateDir, waitPidsMax, webhookSink } from '../helpers/v1-daemon';
import { makeV1Cgroup } from '../helpers/v1-cgroups';
import { until } from '../helpers/prometheus';

let dk: PrivateDocker | undefined;
before(async () => {
  if (isRoot()) dk = await startDocker();
});
after(async () => {
  await dk?.stop();
});

function ready(): PrivateDocker {
  need(isRoot(), 'root (dockerd and the daemon write cgroups)');
  need(dk !== undefined, 'the private dockerd');
  return dk!;
}

const name = (tag: string): string => `cgwd-test-${tag}-${process.pid}-${Date.now() % 100000}`;

function run(d: PrivateDocker, args: string[]): string {
  const r = d.docker(['run', ...args]);
  assert.equal(r.status, 0, `docker run ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim().split('\n').pop()!;
}

async function dockerDaemon(t: Parameters<typeof daemon>[0], d: PrivateDocker, extra: Record<string, unknown> = {}) {
  const { hook, env } = await receiver(t);
  const cfg = await config(d.root, stateDir(t), { names: { dockerSocket: d.sock, podmanBinary: '' }, alerts: { sinks: [webhookSink(hook.url)], resolveAfterSeconds: 2 }, ...extra });
  return { hook, d: await daemon(t, cfg, { env }) };
}

test('docker: the policy follows the CPU quota Docker writes after the cgroup appears (8 CPUs -> 8192) and the host cores otherwise (6-core floor -> 6144)', async (t) => {
  const d = ready();
  await dockerDaemon(t, d);
  const quota = run(d, ['-d', '--network', 'none', '--name', name('quota'), '--cpu-period', '100000', '--cpu-quota', '800000', IMAGE, 'sleep', '1000']);
  const plain = run(d, ['-d', '--network', 'none', '--name', name('plain'), IMAGE, 'sleep', '1000']);
  const q = await waitPidsMax(`${d.cgroupParent}/${quota}`, '8192', 3000, 5);
  t.diagnostic(`8-CPU quota container: 8192 ${q === null ? 'never' : `${Math.round(q)} ms after polling began`}`);
  assert.notEqual(q, null, `pids.max of the 8-CPU container is ${fs.readFileSync(path.join('/sys/fs/cgroup/pids', d.cgroupParent, quota, 'pids.max'), 'utf8').trim()}`);
  assert.notEqual(await waitPidsMax(`${d.cgroupParent}/${plain}`, '6144', 3000, 5), null, 'the container without CPU limits did not get 6144');
});

test('docker run --cgroup-parent /<tenant> (cgroupfs): found under a configured parent, sized by the parent\'s 8-CPU quota (8192)', async (t) => {
  const d = ready();
  const tenant = `${d.root}/tenant-a`;
  makeV1Cgroup(tenant);
  setQuota(tenant, 8);
  const { d: agent } = await dockerDaemon(t, d, { discovery: { roots: [d.root], dockerCgroupParents: [tenant] } });
  const id = run(d, ['-d', '--network', 'none', '--name', name('parent'), '--cgroup-parent', tenant, IMAGE, 'sleep', '1000']);
  assert.ok(fs.existsSync(path.join('/sys/fs/cgroup/pids', tenant, id)), `Docker did not put the container at ${tenant}/<id>`);
  const ms = await waitPidsMax(`${tenant}/${id}`, '8192', 3000, 5);
  assert.notEqual(ms, null, `pids.max of ${tenant}/${id} is ${fs.readFileSync(path.join('/sys/fs/cgroup/pids', tenant, id, 'pids.max'), 'utf8').trim()}`);
  const set = await agent.waitForLog((l) => l.msg === 'pids.max set' && l.cgroup === `${tenant}/${id}`, 3000);
  assert.deepEqual([set.runtime ?? 'docker', set.coresSource, set.coresDetail], ['docker', 'parent-quota', `quota 800000/100000 of ${tenant}`]);
  const found = await agent.waitForLog((l) => l.msg === 'container found' && l.cgroup === `${tenant}/${id}`, 3000);
  assert.equal(found.runtime, 'docker');
});

test('docker: a fork bomb in a container with --pids-limit 30 (kept: lower than the policy) is alerted with the container\'s name and image', async (t) => {
  const d = ready();
  const { hook, d: agent } = await dockerDaemon(t, d);
  const n = name('bomb');
  const id = run(d, ['-d', '--network', 'none', '--name', n, '--pids-limit', '30', IMAGE, 'sh', '-c', 'sleep 1; i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done; sleep 1000']);
  const got = await hook.waitFor((x) => x.alert?.kind === 'pids-max' && x.alert.container?.id === id, 10_000).catch((err: Error) => {
    // What the daemon knew of this container (seen once in a loaded run: no alert in 10 s).
    const mine = agent.logs.filter((l) => JSON.stringify(l).includes(id.slice(0, 12)) || (l.level ?? 0) >= 40).slice(-12);
    throw new Error(`${err.message}\ndaemon lines about ${id.slice(0, 12)}: ${mine.map((l) => JSON.stringify(l)).join('\n')}`);
  });
  const a = got.alert;
  t.diagnostic(`${a.summary}`);
  assert.equal(a.container.name, n);
  assert.equal(a.container.image, IMAGE);
  assert.equal(a.container.runtime, 'docker');
  // Docker's own 30 was kept (keep-lower), not raised to the policy's 6144. (busybox sh gives
  // up at its first failed fork: the container may be gone by now.)
  assert.equal(a.counters.limit, 30);
});

test('docker run --rm whose main process is OOM-killed: the alert names the container though its cgroup is gone, then resolves', async (t) => {
  const d = ready();
  const { hook } = await dockerDaemon(t, d);
  const n = name('oom');
  // What operators use today, side by side: `docker events` for the same OOM kill.
  const events = spawn(DOCKER, ['events', '--filter', 'event=oom', '--format', '{{.Actor.Attributes.name}}'], { env: { ...process.env, DOCKER_HOST: `unix://${d.sock}` }, stdio: ['ignore', 'pipe', 'ignore'] });
  t.after(() => events.kill('SIGKILL'));
  let dockerSawAt: number | undefined;
  events.stdout.on('data', (b: Buffer) => {
    if (b.toString().includes(n)) dockerSawAt ??= Date.now();
  });
  await sleep(300);
  const r = d.docker(['run', '--rm', '--network', 'none', '--name', n, '-m', '32m', '--memory-swap', '32m', IMAGE, 'dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1']);
  assert.equal(r.status, 137, `dd was not OOM-killed: exit ${r.status} ${r.stderr}`);
  const exitedAt = Date.now();
  const got = await hook.waitFor((x) => x.alert?.kind === 'oom-kill' && x.alert.container?.name === n, 10_000);
  const a = got.alert;
  t.diagnostic(`${a.summary}`);
  await until(() => (dockerSawAt !== undefined ? true : undefined), 3000, 'docker events', 20).catch(() => undefined);
  t.diagnostic(`our alert at the webhook ${got.at - exitedAt} ms after docker run returned; docker events "oom": ${dockerSawAt === undefined ? 'nothing within 3 s' : `${dockerSawAt - exitedAt} ms`}`);
  assert.equal(a.state, 'firing');
  assert.equal(a.container.image, IMAGE);
  assert.equal(a.victim?.comm, 'dd');
  assert.equal(fs.existsSync(path.join('/sys/fs/cgroup/memory', a.container.cgroupPath)), false, 'docker run --rm removed the cgroup');
  const resolved = await hook.waitFor((x) => x.alert?.kind === 'oom-kill' && x.alert.fingerprint === a.fingerprint && x.alert.state === 'resolved', 15_000);
  assert.equal(resolved.alert.sequence, a.sequence + 1);
});

test('containerd alone (ctr run): its /<namespace>/<id> cgroup is recognised, gets the policy, and a fork bomb in it is alerted with the id as the name and the image from containerd', async (t) => {
  const d = ready();
  const ns = name('ns');
  const imp = d.ctr(ns, ['image', 'import', d.imageTar]);
  assert.equal(imp.status, 0, `ctr image import: ${imp.stderr}`);
  const ref = d.ctr(ns, ['image', 'ls', '-q']).stdout.split('\n').find((l) => l.includes('cgwd-busybox'));
  assert.ok(ref, 'the imported image is not listed');
  const { hook } = await dockerDaemon(t, d, { discovery: { roots: [`/${ns}`], containerdNamespaces: [ns] }, names: { dockerSocket: d.sock, podmanBinary: '', containerdSocket: d.containerdSock } });
  const id = 'bomb-1';
  const r = d.ctr(ns, ['run', '-d', '--snapshotter', 'native', ref, id, 'sh', '-c', 'sleep 2; i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done; sleep 1000']);
  assert.equal(r.status, 0, `ctr run: ${r.stderr}`);
  const rel = `/${ns}/${id}`;
  assert.notEqual(await waitPidsMax(rel, '6144', 3000, 5), null, `pids.max of the ctr container: ${fs.readFileSync(path.join('/sys/fs/cgroup/pids', rel, 'pids.max'), 'utf8').trim()}`);
  // An operator's lower limit is kept (keep-lower), and hit.
  fs.writeFileSync(path.join('/sys/fs/cgroup/pids', rel, 'pids.max'), '20');
  const got = await hook.waitFor((x) => x.alert?.kind === 'pids-max' && x.alert.container?.cgroupPath === rel, 10_000);
  const a = got.alert;
  t.diagnostic(a.summary);
  assert.equal(a.container.runtime, 'containerd');
  assert.equal(a.container.id, id);
  assert.equal(a.container.name, id);
  assert.equal(a.container.image, ref, "the image, from containerd's Containers API");
  assert.equal(a.counters.limit, 20);
});
