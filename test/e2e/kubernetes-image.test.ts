/**
 * Issue 12, Kubernetes: the image of deploy/container/Containerfile, built here with podman and
 * no registry (its base made by deploy/container/build-base.sh from this host's own node and the
 * libraries ldd lists), run the way deploy/kubernetes/daemonset.yaml runs it: privileged, in the
 * host's PID namespace and network, the host's /sys/fs/cgroup and /dev/kmsg mounted where the
 * DaemonSet mounts them, a state directory, the ConfigMap's config file, the DaemonSet's args,
 * env and resources. What Kubernetes would do is read from the manifests, not restated here.
 *
 * Differences from a pod, each because of this host: --cgroupns=host (on this cgroup v1 host
 * the container runtime of a Kubernetes node makes no cgroup namespace either; on v2 the daemon
 * translates, see test/uml/cgroupns-v2.test.ts); hostPath volumes of type DirectoryOrCreate
 * other than the state directory become empty temp directories (the test creates nothing on
 * the host); the config is the ConfigMap's with the discovery confined to the test's own
 * containers (other tests share this host), its webhook receiver, a free metrics port, and a
 * kernel.pid_max target just above the host's (restored afterwards).
 *
 * Real podman + runc containers (test/helpers/podman.ts): a busybox fork bomb under
 * --pids-limit 20 and a dd under --memory 32m; the alerts must arrive at a real HTTP receiver
 * in this process, posted from inside the image.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { isRoot, need } from '../helpers/prereq';
import { pidMaxBaseWithHeadroom } from '../helpers/pid-max';
import {
  createContainer,
  ensureBusyboxImage,
  forkBombArgs,
  memoryHogArgs,
  podmanUnavailableReason,
  removeContainer,
  run,
  startContainer,
  testContainerName,
} from '../helpers/podman';
import { freePort, jsonLines, startWebhookReceiver, type LogLine } from '../helpers/daemon';
import { podmanStart, until } from '../helpers/prometheus';
import { BUILD_BASE, CONTAINERFILE, REPO, configMapConfigText, daemonContainer, loadManifests, manifestOfKind, mountsOf } from '../helpers/kubernetes';

function onPath(bin: string): boolean {
  return (process.env.PATH ?? '').split(path.delimiter).some((d) => d !== '' && fs.existsSync(path.join(d, bin)));
}

function ready(): void {
  need(isRoot(), 'root (the image writes cgroup files and kernel.pid_max)');
  const why = podmanUnavailableReason();
  need(why === undefined, `podman with runc and the busybox image: ${why}`);
  for (const bin of ['ldd', 'tar', 'bash']) need(onPath(bin), `${bin} (deploy/container/build-base.sh)`);
  need(fs.existsSync(path.join(REPO, 'dist', 'src', 'cli.js')), 'a build (npm run build)');
}

/** Cleanups run last-in first-out in one t.after, each attempted even when an earlier one throws. */
function cleanupStack(t: TestContext): (fn: () => unknown) => void {
  const fns: (() => unknown)[] = [];
  t.after(async () => {
    const errors: unknown[] = [];
    for (const fn of fns.reverse()) {
      try {
        await fn();
      } catch (e) {
        errors.push(e);
      }
    }
    if (errors.length) throw errors[0];
  });
  return (fn) => fns.push(fn);
}

/**
 * The build context the Containerfile expects (package.json, proto/, dist/src/, production
 * node_modules), copied from this checkout: the checkout's own node_modules has the dev
 * dependencies too, and `npm prune --omit=dev` must not run in a shared tree.
 */
async function buildContext(dir: string): Promise<void> {
  fs.cpSync(path.join(REPO, 'package.json'), path.join(dir, 'package.json'));
  fs.cpSync(path.join(REPO, 'proto'), path.join(dir, 'proto'), { recursive: true });
  fs.cpSync(path.join(REPO, 'dist', 'src'), path.join(dir, 'dist', 'src'), { recursive: true });
  const ls = await run('npm', ['ls', '--omit=dev', '--all', '--parseable', '--prefix', REPO], 60_000);
  const pkgs = ls.stdout.split('\n').map((p) => path.relative(REPO, p.trim())).filter((rel) => /^node_modules\/(@[^/]+\/)?[^/]+$/.test(rel));
  assert.ok(pkgs.length > 0, `npm ls --omit=dev listed no packages: ${ls.stderr}`);
  // Nested node_modules of a production package come with it.
  for (const rel of pkgs) fs.cpSync(path.join(REPO, rel), path.join(dir, rel), { recursive: true, dereference: true });
}

/** Follows `podman logs -f`: the daemon's JSON lines. */
function followLogs(name: string): { logs: LogLine[]; other: string[]; proc: ChildProcess; waitFor(pred: (l: LogLine) => boolean, ms: number): Promise<LogLine> } {
  const proc = spawn('podman', ['logs', '-f', name], { stdio: ['ignore', 'pipe', 'pipe'], cwd: os.tmpdir() });
  const lines = jsonLines();
  // One parser for both: podman logs mixes the container's stdout and stderr.
  proc.stdout.on('data', lines.feed);
  proc.stderr.on('data', lines.feed);
  const { logs, other } = lines;
  return {
    logs,
    other,
    proc,
    waitFor: (pred, ms) =>
      lines.waitFor(pred, ms, () => `no such log line from the image within ${ms} ms; tail:\n${[...logs.slice(-15).map((l) => JSON.stringify(l)), ...other.slice(-10)].join('\n')}`),
  };
}

/** Kubernetes quantities as podman wants them: "250m" CPU -> "0.25", "256Mi" -> "256m". */
function cpus(q: string): string {
  return q.endsWith('m') ? String(Number(q.slice(0, -1)) / 1000) : q;
}
function memory(q: string): string {
  const m = /^(\d+)(Ki|Mi|Gi)$/.exec(q);
  if (!m) throw new Error(`memory quantity ${q}: expected <n>Ki, Mi or Gi`);
  return `${m[1]}${m[2]![0]!.toLowerCase()}`;
}

test('the image, run as the DaemonSet runs it, raises kernel.pid_max and reports a fork bomb and an OOM kill in real podman containers to a webhook', async (t) => {
  ready();
  const defer = cleanupStack(t);
  const t0 = Date.now();
  const tag = `${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const baseImage = `localhost/cgwd-test-node-base:${tag}`;
  const image = `localhost/cgwd-test-cgwatchdog:${tag}`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-test-k8s-'));
  defer(() => fs.rmSync(tmp, { recursive: true, force: true }));
  defer(() => run('podman', ['rmi', '-f', image, baseImage]));
  const pidMaxBase = pidMaxBaseWithHeadroom(4096, defer);
  const pidMaxTarget = pidMaxBase + 4096;

  // ---- the image: base from this host's node, then the Containerfile -----------------------
  const base = await run('bash', [BUILD_BASE, baseImage], 120_000);
  assert.equal(base.code, 0, `build-base.sh: ${base.stderr}`);
  const ctx = path.join(tmp, 'context');
  fs.mkdirSync(ctx);
  await buildContext(ctx);
  const build = await run('podman', ['build', '--pull=never', '-f', CONTAINERFILE, '--build-arg', `BASE=${baseImage}`, '-t', image, ctx], 180_000);
  assert.equal(build.code, 0, `podman build: ${build.stderr.slice(-2000)}`);
  const size = (await run('podman', ['image', 'inspect', '--format', '{{.Size}}', image])).stdout.trim();
  t.diagnostic(`base + image built in ${Date.now() - t0} ms; image ${(Number(size) / 1e6).toFixed(0)} MB`);

  // ---- the workload: made first, so their cgroup paths are known before the daemon starts ----
  const bombName = testContainerName('k8s-bomb');
  const hogName = testContainerName('k8s-hog');
  defer(() => removeContainer(bombName));
  defer(() => removeContainer(hogName));
  const bomb = await createContainer({ name: bombName, image: ensureBusyboxImage(), pidsLimit: 20, ...forkBombArgs() });
  const hog = await createContainer({ name: hogName, image: ensureBusyboxImage(), memory: '32m', ...memoryHogArgs() });
  const cgroupOf = (id: string): string => `/libpod_parent/libpod-${id}`;

  const hook = await startWebhookReceiver({});
  defer(() => hook.close());

  // ---- the config: the ConfigMap's, confined to this test -----------------------------------
  const all = loadManifests();
  const ds = manifestOfKind('DaemonSet', all);
  const c = daemonContainer(ds);
  const pod = ds.spec.template.spec;
  const cfg = YAML.parse(configMapConfigText(all));
  const port = await freePort();
  cfg.logLevel = 'debug';
  cfg.kernel = { ...cfg.kernel, pidMax: pidMaxTarget };
  cfg.discovery = { ...cfg.discovery, roots: ['/libpod_parent'] };
  cfg.policy = {
    ...cfg.policy,
    existing: 'keep-lower',
    overrides: [{ pathPattern: `^/libpod_parent/libpod-(${bomb.id}|${hog.id})$` }, { pathPattern: '^/libpod_parent/', exclude: true }],
  };
  cfg.alerts = { ...cfg.alerts, sinks: [{ type: 'webhook', url: hook.url, retry: { initialDelayMs: 100, maxDelayMs: 500 } }] };
  cfg.metrics = { ...cfg.metrics, listen: `127.0.0.1:${port}` };

  // ---- podman run, from the DaemonSet -------------------------------------------------------
  const extra: string[] = ['--cgroupns', 'host'];
  if (pod.hostPID) extra.push('--pid', 'host');
  if (c.securityContext?.privileged) extra.push('--privileged');
  if (c.securityContext?.runAsUser !== undefined) extra.push('--user', `${c.securityContext.runAsUser}:${c.securityContext.runAsGroup ?? 0}`);
  if (c.securityContext?.readOnlyRootFilesystem) extra.push('--read-only');
  for (const e of c.env ?? []) extra.push('-e', `${e.name}=${e.value}`);
  extra.push('--cpus', cpus(c.resources.limits.cpu), '--memory', memory(c.resources.limits.memory));
  const stateDir = path.join(tmp, 'state');
  fs.mkdirSync(stateDir, { mode: 0o700 });
  const mountsByName = new Map((c.volumeMounts as any[]).map((m) => [m.mountPath, m]));
  for (const m of mountsOf(ds)) {
    const opts = [m.readOnly ? 'ro' : 'rw'];
    if (mountsByName.get(m.mountPath)?.mountPropagation === 'HostToContainer') opts.push('rslave');
    const hp = m.volume.hostPath;
    if (hp?.path === '/var/lib/cgwatchdog') {
      extra.push('-v', `${stateDir}:${m.mountPath}:${opts.join(',')}`);
    } else if (hp && (hp.type === 'Directory' || hp.type === 'CharDevice')) {
      extra.push('-v', `${hp.path}:${m.mountPath}:${opts.join(',')}`);
    } else if (hp && hp.type === 'DirectoryOrCreate') {
      const empty = fs.mkdtempSync(path.join(tmp, 'hostpath-'));
      extra.push('-v', `${empty}:${m.mountPath}:${opts.join(',')}`);
    } else if (m.volume.configMap) {
      const dir = path.join(tmp, 'configmap');
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, 'config.yaml'), YAML.stringify(cfg));
      extra.push('-v', `${dir}:${m.mountPath}:ro`);
    } else if (m.volume.emptyDir) {
      extra.push('--tmpfs', `${m.mountPath}:rw,mode=0700`);
    } else {
      assert.fail(`a volume the test cannot mirror: ${JSON.stringify(m.volume)}`);
    }
  }
  const daemonName = testContainerName('k8s-daemon');
  defer(() => removeContainer(daemonName));
  const tStart = Date.now();
  await startContainer({ name: daemonName, image, network: pod.hostNetwork ? 'host' : 'none', cmd: c.args, extra });
  const logs = followLogs(daemonName);
  defer(() => logs.proc.kill('SIGKILL'));
  await logs.waitFor((l) => l.msg === 'detection running', 60_000);
  t.diagnostic(`podman run -> "detection running": ${Date.now() - tStart} ms`);

  // The probes' endpoint, as the kubelet asks it.
  const probe = c.readinessProbe.httpGet;
  const health = await until(
    async () => {
      const r = await fetch(`http://127.0.0.1:${port}${probe.path}`).catch(() => undefined);
      return r?.status === 200 ? ((await r.json()) as { ok: boolean; status: string }) : undefined;
    },
    10_000,
    `${probe.path} answers 200`,
  );
  assert.equal(health.ok, true);
  t.diagnostic(`${probe.path}: ${JSON.stringify(health)}`);
  // The daemon reads the file back after its write. (The file itself may have changed since:
  // other tests on this host set and restore kernel.pid_max too.)
  const raised = logs.logs.find((l) => l.msg === 'raised kernel.pid_max');
  assert.ok(raised, `no "raised kernel.pid_max" line: ${JSON.stringify(logs.logs.find((l) => /pid_max/.test(l.msg ?? '')))}`);
  assert.equal(raised.after, pidMaxTarget, 'the privileged container raised the host\'s kernel.pid_max');
  t.diagnostic(`kernel.pid_max ${raised.before} -> ${raised.after}, written from inside the container`);

  // ---- the workload runs; the alerts come from inside the image -------------------------------
  const tWork = Date.now();
  await Promise.all([podmanStart(bombName), podmanStart(hogName)]);
  const [pidsAlert, oomAlert] = await Promise.all([
    hook.waitFor((r) => r.alert?.kind === 'pids-max' && r.alert.container?.id === bomb.id, 15_000),
    hook.waitFor((r) => r.alert?.kind === 'oom-kill' && r.alert.container?.id === hog.id, 15_000),
  ]);
  t.diagnostic(`podman start -> webhook: pids-max ${pidsAlert.at - tWork} ms, oom-kill ${oomAlert.at - tWork} ms`);
  t.diagnostic(pidsAlert.alert.summary);
  t.diagnostic(oomAlert.alert.summary);
  assert.equal(pidsAlert.alert.state, 'firing');
  assert.equal(pidsAlert.alert.container.cgroupPath, cgroupOf(bomb.id));
  assert.equal(pidsAlert.alert.container.runtime, 'podman');
  assert.equal(oomAlert.alert.state, 'firing');
  assert.equal(oomAlert.alert.container.cgroupPath, cgroupOf(hog.id));
  assert.equal(oomAlert.alert.victim?.comm, 'dd');
  // /dev/kmsg through the hostPath mount, followed by the image's `cat` (not the polling fallback).
  t.diagnostic(`sources: pids-max ${JSON.stringify(pidsAlert.alert.sources)}, oom-kill ${JSON.stringify(oomAlert.alert.sources)}`);
  assert.deepEqual(logs.logs.filter((l) => /^kmsg reader/.test(l.msg ?? '')).map((l) => `${l.msg}: ${l.err ?? l.why ?? ''}`), [], 'the kmsg reader ran in the image');
  for (const a of [pidsAlert, oomAlert]) assert.ok(JSON.stringify(a.alert.sources).includes('kmsg'), `${a.alert.kind} was not read from /dev/kmsg: ${JSON.stringify(a.alert.sources)}`);
  // Kept, not replaced: the bomb's own 20 is below the policy (keep-lower).
  assert.equal(fs.readFileSync(path.join('/sys/fs/cgroup/pids', cgroupOf(bomb.id), 'pids.max'), 'utf8').trim(), '20');

  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  assert.match(metrics, new RegExp(`cgwatchdog_container_oom_kills_total\\{[^}]*id="${hog.id}"[^}]*\\} 1`));
  // The outbox lives in the hostPath state directory, on the node.
  assert.ok(fs.existsSync(path.join(stateDir, 'outbox')), `the state directory holds the outbox: ${fs.readdirSync(stateDir).join(', ')}`);

  // The kubelet stops a pod with SIGTERM and kills it after terminationGracePeriodSeconds.
  const grace = pod.terminationGracePeriodSeconds as number;
  const tStop = Date.now();
  const stop = await run('podman', ['stop', '-t', String(grace), daemonName], (grace + 10) * 1000);
  const stopMs = Date.now() - tStop;
  const exit = (await run('podman', ['inspect', '--type', 'container', '--format', '{{.State.ExitCode}}', daemonName])).stdout.trim();
  t.diagnostic(`podman stop (SIGTERM, ${grace} s grace): ${stopMs} ms, exit ${exit}`);
  assert.equal(stop.code, 0, `podman stop: ${stop.stderr}`);
  assert.ok(stopMs < grace * 1000, `the daemon took ${stopMs} ms to stop on SIGTERM (grace ${grace} s)`);
  assert.equal(exit, '0', 'the daemon exits 0 on SIGTERM');
  t.diagnostic(`whole test: ${Date.now() - t0} ms`);
});
