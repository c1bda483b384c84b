/**
 * Kubernetes names from containerd's real CRI plugin: a private containerd per test
 * (test/helpers/cri.ts) driven over CRI as a kubelet would, a pod under a cgroup parent of the
 * test's own, and the real daemon asking that containerd's socket. In the first test the
 * daemon's /var/log/pods stand-in is empty, so every name in the alert came over CRI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CRI_IMAGE, startContainerd, suffix, type Pod, type PrivateContainerd } from '../helpers/cri';
import { isRoot, need } from '../helpers/prereq';
import { hasV1, v1Dir } from '../helpers/v1-cgroups';
import { config, daemon, defer, isMsg, pidsEventsMax, r1, readPidsMax, receiver, sleep, stateDir, webhookSink, type Obj } from '../helpers/v1-daemon';

const CORES = 8;
const PERIOD = 100_000;
const WANT = String(CORES * 1024);
const MEMORY = 3 * 1024 ** 3; // 8192 busybox sleeps take ~1.1 GB here (measured), kernel memory included

/**
 * Waits until the daemon has written its limit (the container reads its own pids.max: runc
 * bind-mounts the container's v1 cgroups at /sys/fs/cgroup/<controller>), then forks sleeps
 * from four shells until the kernel refuses (busybox sh exits at its first failed fork);
 * `exec` keeps the container running without a fork.
 */
const BOMB_SCRIPT = `until grep -qx ${WANT} /sys/fs/cgroup/pids/pids.max; do sleep 0.02; done
for j in 1 2 3 4; do (while :; do sleep 1000 & done) 2>/dev/null & done
exec sleep 2147483647`;

function ready(): void {
  need(isRoot() && hasV1(), 'root and the v1 pids, cpu, cpuset and memory hierarchies under /sys/fs/cgroup (containerd and the daemon write cgroups)');
}

async function privateContainerd(t: Parameters<typeof defer>[0]): Promise<PrivateContainerd> {
  const ctd = await startContainerd();
  // Registered first, so it runs last: after the daemon has stopped.
  defer(t, () => ctd.stop());
  t.diagnostic(`${ctd.version.runtimeName} ${ctd.version.runtimeVersion} (CRI ${ctd.version.runtimeApiVersion}) answered CRI Version ${r1(ctd.startMs)} ms after its start`);
  return ctd;
}

function tempDir(t: Parameters<typeof defer>[0], prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  defer(t, () => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

async function bomber(ctd: PrivateContainerd, pod: Pod): Promise<string> {
  return ctd.createContainer(pod, { name: 'bomber', command: ['/bin/sh', '-c', BOMB_SCRIPT], cpuPeriod: PERIOD, cpuQuota: CORES * PERIOD, memoryLimitBytes: MEMORY });
}

/** When pids.events first counts a rejected fork (polled): Date.now() and performance.now(). */
async function firstRejection(rel: string, timeoutMs: number): Promise<{ at: number; perf: number }> {
  const end = Date.now() + timeoutMs;
  while (!(pidsEventsMax(rel) > 0)) {
    if (Date.now() > end) throw new Error(`no fork was rejected in ${rel} within ${timeoutMs} ms (pids.current ${fs.readFileSync(path.join(v1Dir('pids', rel), 'pids.current'), 'utf8').trim()})`);
    await sleep(2);
  }
  return { at: Date.now(), perf: performance.now() };
}

const RESOLVER_CHILD = `
const [namesJs, sock, list] = process.argv.slice(1);
const { NameResolver } = require(namesJs);
const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const r = new NameResolver({ dockerSocket: '/nonexistent', podmanSocket: '/nonexistent', podmanBinary: '', kubernetesPodLogs: '/nonexistent', criSockets: [sock], timeoutMs: 2000, log: quiet });
const t0 = Date.now();
Promise.all(JSON.parse(list).map((c) => r.lookup(c))).then((results) => {
  const lookupMs = Date.now() - t0;
  r.close();
  const closedAt = Date.now();
  process.on('exit', () => process.stdout.write(JSON.stringify({ results, lookupMs, exitMs: Date.now() - closedAt })));
});`;

/** NameResolver.lookup in a fresh node process, which has to exit on its own after close() (within 3 s). */
async function resolverInChild(sock: string, list: object[]): Promise<{ results: unknown[]; lookupMs: number; exitMs: number }> {
  const child = spawn(process.execPath, ['-e', RESOLVER_CHILD, path.resolve(__dirname, '..', '..', 'src', 'alerts', 'names.js'), sock, JSON.stringify(list)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr.on('data', (b: Buffer) => (err += b.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (c, s) => r({ code: c, signal: s })));
  clearTimeout(timer);
  assert.equal(signal, null, `the resolver's process did not exit by itself within 3 s (a handle kept it alive): ${err}`);
  assert.equal(code, 0, err);
  return JSON.parse(out) as { results: unknown[]; lookupMs: number; exitMs: number };
}

const metricLine = (text: string, name: string, id: string): string | undefined => text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`id="${id}"`));

test('containerd CRI: a pod\'s container gets 8 cores x 1024 = 8192, and its fork bomb is alerted with the pod, namespace, container name and image from CRI', async (t) => {
  ready();
  const t0 = performance.now();
  const ctd = await privateContainerd(t);
  const { hook, env } = await receiver(t);
  const cfg = await config(ctd.root, stateDir(t), {
    names: { criSockets: [ctd.sock], kubernetesPodLogs: tempDir(t, 'cgwd-test-podlogs-'), podmanBinary: '' },
    alerts: { sinks: [webhookSink(hook.url)], resolveAfterSeconds: 2 },
  });
  const d = await daemon(t, cfg, { env });

  const name = `web-${suffix()}`;
  const namespace = `shop-${suffix()}`;
  const tPod = performance.now();
  const pod = await ctd.runPod(name, namespace);
  const id = await bomber(ctd, pod);
  const tStart = performance.now();
  const startWall = Date.now();
  await ctd.startContainer(id);
  const tStarted = performance.now();
  t.diagnostic(`RunPodSandbox + CreateContainer ${r1(tStart - tPod)} ms, StartContainer ${r1(tStarted - tStart)} ms`);

  const rel = `${pod.cgroupParent}/${id}`;
  let limitAt: number | undefined;
  for (const end = performance.now() + 5000; performance.now() < end; await sleep(1)) {
    if (fs.existsSync(v1Dir('pids', rel)) && readPidsMax(rel) === WANT) {
      limitAt = performance.now();
      break;
    }
  }
  assert.ok(limitAt !== undefined, `pids.max of the container is ${fs.existsSync(v1Dir('pids', rel)) ? readPidsMax(rel) : '(no cgroup)'}, not ${WANT}`);
  const first = await d.waitForLog(isMsg('creation to pids.max written', (l) => l.id === id), 2000).catch(() => undefined);
  // runc writes the CPU quota after the pids cgroup appears (as Docker does): the first write
  // may be the 6-core floor, and 8192 comes when the daemon re-reads while the container settles.
  const writes = d.logs.filter(isMsg('pids.max set', (l) => l.id === id)).map((l) => `${l.new} (${l.why}) at +${Date.parse(l.time) - startWall} ms`);
  t.diagnostic(`pids.max ${WANT} in the kernel ${r1(limitAt - tStart)} ms after StartContainer was called (${r1(limitAt - tStarted)} ms after it returned); the daemon's writes: ${writes.join(', ')}; cgroup seen to first write ${first ? `${first.latencyMs} ms` : '(not logged)'}`);
  assert.equal(fs.readFileSync(path.join(v1Dir('cpu', rel), 'cpu.cfs_quota_us'), 'utf8').trim(), String(CORES * PERIOD));
  assert.equal(fs.readFileSync(path.join(v1Dir('memory', rel), 'memory.limit_in_bytes'), 'utf8').trim(), String(MEMORY));
  // The sandbox (pause) container has no quota: the 6-core floor on this 2-core host.
  assert.equal(readPidsMax(`${pod.cgroupParent}/${pod.id}`), String(Math.max(6, os.availableParallelism()) * 1024));

  const rejected = await firstRejection(rel, 30_000);
  const got = await hook.waitFor((x) => x.alert?.kind === 'pids-max' && x.alert.container?.id === id, 15_000);
  const a = got.alert;
  t.diagnostic(a.summary);
  t.diagnostic(`first fork rejected ${r1(rejected.perf - limitAt)} ms after the limit was seen (the bomb forking ${WANT} sleeps); alert at the webhook ${got.at - rejected.at} ms after the first rejection (polled every 2 ms)`);
  assert.equal(a.state, 'firing');
  assert.equal(a.container.runtime, 'containerd');
  assert.equal(a.container.name, 'bomber');
  assert.equal(a.container.image, CRI_IMAGE);
  assert.equal(a.container.pod, name);
  assert.equal(a.container.namespace, namespace);
  assert.equal(a.container.podUid, pod.uid);
  assert.equal(a.counters.limit, CORES * 1024);
  assert.deepEqual(a.identity, { name: 'bomber', pod: name, namespace });

  // The same names in /metrics; the sandbox as the kubelet names it, from PodSandboxStatus.
  const metrics = await (await fetch(`http://${(cfg as Obj).metrics.listen}/metrics`)).text();
  const info = metricLine(metrics, 'cgwatchdog_container_info', id);
  assert.ok(info, 'no cgwatchdog_container_info series for the container');
  for (const [k, v] of Object.entries({ name: 'bomber', image: CRI_IMAGE, runtime: 'containerd', pod: name, namespace })) assert.ok(info.includes(`${k}="${v}"`), `${info} lacks ${k}="${v}"`);
  assert.match(metricLine(metrics, 'cgwatchdog_container_pids_max', id) ?? '', new RegExp(` ${WANT}$`));
  const sandboxInfo = metricLine(metrics, 'cgwatchdog_container_info', pod.id);
  assert.ok(sandboxInfo?.includes('name="POD"') && sandboxInfo.includes(`pod="${name}"`) && sandboxInfo.includes(`namespace="${namespace}"`), `sandbox: ${sandboxInfo}`);
  // The resolver itself, in a process of its own: the container and the sandbox over CRI, and
  // once closed nothing of gRPC keeps the process alive.
  const direct = await resolverInChild(ctd.sock, [
    { id, runtime: 'containerd', podUid: pod.uid },
    { id: pod.id, runtime: 'containerd', podUid: pod.uid },
  ]);
  assert.deepEqual(direct.results, [
    { name: 'bomber', image: CRI_IMAGE, podName: name, podNamespace: namespace },
    { name: 'POD', podName: name, podNamespace: namespace },
  ]);
  t.diagnostic(`NameResolver in a child: both lookups ${direct.lookupMs} ms; the process exited by itself ${direct.exitMs} ms after close()`);

  // The sandbox's cgroup appears when its task starts, before RunPodSandbox has put the sandbox
  // in containerd's store (1.6.20): a lookup then is NOT_FOUND, and the pipeline's retry finds it.
  const failed = d.logs.filter(isMsg('name lookup failed; the id stays the name', (l) => l.source === 'cri'));
  t.diagnostic(`CRI lookups that failed on the way (then retried): ${failed.length ? failed.map((l) => `${l.id === pod.id ? 'sandbox' : l.id === id ? 'container' : l.id}: ${l.err}`).join(' | ') : 'none'}`);
  t.diagnostic(`test body ${r1((performance.now() - t0) / 1000)} s (before clean-up)`);
});

test('containerd CRI unreachable: a silent socket and a stopped containerd leave the id as the name, the pod comes from the /var/log/pods fallback, alerts still arrive, the daemon lives', async (t) => {
  ready();
  const ctd = await privateContainerd(t);
  const name = `api-${suffix()}`;
  const namespace = `ops-${suffix()}`;
  const pod = await ctd.runPod(name, namespace);
  const id = await bomber(ctd, pod);
  await ctd.startContainer(id);
  // As in a containerd crash: the shim and the container keep running, the socket file stays.
  await ctd.stopContainerd('SIGKILL');
  assert.ok(fs.existsSync(ctd.sock), 'containerd killed with SIGKILL left its socket file');

  // A socket that accepts and never says a word: the gRPC deadline has to end the call.
  const socks = tempDir(t, 'cgwd-test-silent-');
  const silent = path.join(socks, 'silent.sock');
  const held = new Set<net.Socket>();
  const server = net.createServer((s) => held.add(s.on('close', () => held.delete(s)).on('error', () => undefined)));
  await new Promise<void>((r) => server.listen(silent, r));
  defer(t, () => new Promise<void>((r) => {
    for (const s of held) s.destroy();
    server.close(() => r());
  }));
  // The kubelet's log directory for the pod: the fallback when CRI does not answer.
  const podLogs = tempDir(t, 'cgwd-test-podlogs-');
  fs.mkdirSync(path.join(podLogs, `${namespace}_${name}_${pod.uid}`));

  const { hook, env } = await receiver(t);
  const cfg = await config(ctd.root, stateDir(t), {
    names: { criSockets: [silent, ctd.sock], kubernetesPodLogs: podLogs, podmanBinary: '', timeoutMs: 300 },
    alerts: { sinks: [webhookSink(hook.url)], resolveAfterSeconds: 2 },
  });
  const d = await daemon(t, cfg, { env });
  const rel = `${pod.cgroupParent}/${id}`;
  await firstRejection(rel, 30_000);
  const got = await hook.waitFor((x) => x.alert?.kind === 'pids-max' && x.alert.container?.id === id, 15_000);
  const a = got.alert;
  t.diagnostic(a.summary);
  assert.equal(a.container.name, undefined, 'no name without CRI');
  assert.equal(a.container.image, undefined);
  assert.equal(a.container.pod, name, 'the pod from /var/log/pods');
  assert.equal(a.container.namespace, namespace);
  assert.ok(a.summary.includes(id.slice(0, 12)), `the summary names the id: ${a.summary}`);
  const failed = await d.waitForLog(isMsg('name lookup failed; the id stays the name', (l) => l.id === id && l.source === 'cri'), 5000);
  t.diagnostic(`debug log: ${failed.err}`);
  assert.match(failed.err, new RegExp(`${silent.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: DEADLINE_EXCEEDED`));
  assert.ok(failed.err.includes(`CRI ContainerStatus on ${ctd.sock}: UNAVAILABLE`), 'the dead containerd\'s socket was asked next, and refused');
  assert.equal(d.proc.exitCode, null, 'the daemon is still running');
  const health = (await (await fetch(`http://${(cfg as Obj).metrics.listen}/healthz`)).json()) as { ok: boolean };
  assert.equal(health.ok, true);
});
