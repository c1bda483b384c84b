/**
 * The real daemon in a private cgroup namespace on this host's v1 hierarchies (the
 * Kubernetes DaemonSet case): launched from a test cgroup of its own through
 * `unshare --cgroup` (the host's mounts still visible: it must find its namespace root and go
 * on enforcing and attributing), and through `unshare --cgroup --mount` with a cgroupfs mounted
 * inside (only its own subtree visible: it must stop with one sentence).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { translateProcCgroup, type CgroupNamespaceVerdict } from '../../src/cgroup/namespace';
import { CLI } from '../helpers/daemon';
import { need } from '../helpers/prereq';
import { exited, makeV1Cgroup, spawnInCgroup, waitForTask, type V1Controller } from '../helpers/v1-cgroups';
import { BOMB, config, defer, hex64, makeContainer, readPidsMax, ready, stateDir, testRoot, waitPidsMax, type Obj } from '../helpers/v1-daemon';

const UNSHARE = '/usr/bin/unshare';
const PERL = '/usr/bin/perl';
/** The hierarchies the agent reads on v1: it lives in the same test cgroup in each. */
const AGENT: V1Controller[] = ['pids', 'memory', 'cpu', 'cpuset'];

/**
 * What a container runtime does with cgroupns=private: a fresh cgroupfs per hierarchy (and the
 * cgroup2 one) over /sys/fs/cgroup. A fixed script: the command comes as "$@". unshare's own
 * default propagation is private, so none of these mounts reaches the host.
 */
const OWN_CGROUPFS = [
  'mount -t tmpfs cgwd-ns /sys/fs/cgroup || exit 96',
  'for c in pids memory cpu cpuset; do mkdir /sys/fs/cgroup/$c && mount -t cgroup -o "$c" cgwd-ns /sys/fs/cgroup/$c || exit 96; done',
  'mkdir /sys/fs/cgroup/unified && mount -t cgroup2 cgwd-ns /sys/fs/cgroup/unified || exit 96',
  'exec "$@"',
].join('\n');

type Line = Obj & { msg?: string };

/** A process started in `cgroup` (every agent hierarchy) through unshare, with its JSON stdout lines. */
interface Launched {
  child: ChildProcess;
  lines: Line[];
  stdout(): string;
  stderr(): string;
  waitFor(pred: (l: Line) => boolean, timeoutMs: number): Promise<Line>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(): Promise<void>;
}

function launch(t: TestContext, cgroup: string, unshareArgs: string[]): Launched {
  const child = spawnInCgroup(cgroup, AGENT, UNSHARE, unshareArgs);
  const lines: Line[] = [];
  let out = '';
  let err = '';
  let buf = '';
  const waiters = new Set<() => void>();
  child.stdout!.on('data', (b: Buffer) => {
    out += b.toString();
    buf += b.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    for (const raw of parts) {
      try {
        lines.push(JSON.parse(raw) as Line);
      } catch {
        /* not a log line */
      }
    }
    for (const w of [...waiters]) w();
  });
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exit = exited(child);
  const tail = (): string => `${lines.slice(-12).map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${err.slice(-1500)}`;
  const waitFor = (pred: (l: Line) => boolean, timeoutMs: number): Promise<Line> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const l = lines.find(pred);
        if (!l) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(l);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`log line not seen within ${timeoutMs} ms (exit ${child.exitCode ?? child.signalCode ?? 'none yet'}):\n${tail()}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exit;
    clearTimeout(timer);
  };
  const l: Launched = { child, lines, stdout: () => out, stderr: () => err, waitFor, exit, stop };
  defer(t, () => l.stop());
  return l;
}

/** Run a short command in `cgroup` through unshare; its stdout. */
async function runIn(t: TestContext, cgroup: string, unshareArgs: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const l = launch(t, cgroup, unshareArgs);
  const timer = setTimeout(() => l.child.kill('SIGKILL'), 30_000);
  const { code } = await l.exit;
  clearTimeout(timer);
  return { code, stdout: l.stdout(), stderr: l.stderr() };
}

function prerequisites(): void {
  ready();
  need(fs.existsSync(UNSHARE), `${UNSHARE} (util-linux)`);
  need(fs.existsSync(PERL), `${PERL} (the fork bomb)`);
}

async function setUp(t: TestContext): Promise<{ root: string; agent: string; rel: string; id: string; cfgFile: string; cfg: Obj }> {
  const root = testRoot(t);
  const agent = `${root}/agent`;
  makeV1Cgroup(agent, AGENT);
  const id = hex64();
  const rel = `${root}/docker/${id}`;
  makeContainer(rel, 2);
  const state = stateDir(t);
  const cfg = await config(root, state, {
    policy: { overrides: [{ pathPattern: `^${root}/docker/`, pidsMax: 20 }] },
    alerts: { repeatIntervalSeconds: 2 },
  });
  const cfgFile = path.join(state, 'config.yaml');
  fs.writeFileSync(cfgFile, JSON.stringify(cfg));
  return { root, agent, rel, id, cfgFile, cfg };
}

test('private cgroup namespace, host hierarchies still mounted: the daemon finds its namespace root, sets pids.max and attributes a fork bomb', async (t) => {
  prerequisites();
  const { agent, rel, id, cfgFile, cfg } = await setUp(t);

  // The kernel facts first, as a process in the agent's place sees them.
  const facts = await runIn(t, agent, ['--cgroup', '/bin/sh', '-c', 'cat /proc/self/cgroup; grep " /sys/fs/cgroup/pids " /proc/self/mountinfo; readlink /proc/self/ns/cgroup']);
  t.diagnostic(`inside unshare --cgroup:\n${facts.stdout}`);
  assert.match(facts.stdout, /^8:pids:\/$/m);
  assert.match(facts.stdout, / \/\.\.\/\.\. \/sys\/fs\/cgroup\/pids /);

  const t0 = Date.now();
  const d = launch(t, agent, ['--cgroup', process.execPath, CLI, 'run', '--config', cfgFile]);
  const starting = await d.waitFor((l) => l.msg === 'starting', 15_000);
  const ns = starting.cgroupNamespace as CgroupNamespaceVerdict;
  t.diagnostic(`verdict: ${JSON.stringify(ns)}`);
  assert.equal(ns.kind, 'translated');
  assert.equal(ns.namespace, 'private');
  assert.deepEqual(ns.hierarchies.map((h) => [h.hierarchy, h.mountRoot, h.selfPath, h.nsRoot]), AGENT.map((c) => [c, '/../..', '/', agent]));
  await d.waitFor((l) => l.msg === 'detection running', 15_000);
  assert.ok(d.lines.some((l) => /private cgroup namespace/.test(l.msg ?? '') && l.nsRoots?.['/sys/fs/cgroup/pids'] === agent), 'the namespace root is logged');
  t.diagnostic(`start to "detection running": ${Date.now() - t0} ms`);
  assert.notEqual(await waitPidsMax(rel, '20', 5000), null, `pids.max is ${readPidsMax(rel)}, not the override's 20`);

  const metrics = await (await fetch(`http://${cfg.metrics.listen}/metrics`)).text();
  assert.match(metrics, /^cgwatchdog_kernel_capability\{capability="host_cgroup_namespace"\} 0$/m);

  const bomb = spawnInCgroup(rel, ['pids'], PERL, BOMB);
  defer(t, () => bomb.kill('SIGKILL'));
  await waitForTask(rel, 'pids', bomb.pid!);
  const alert = (await d.waitFor((l) => l.alert?.kind === 'pids-max', 5000)).alert as Obj;
  t.diagnostic(`alert: ${JSON.stringify(alert)}`);
  // kmsg names the cgroup from the hierarchy root in every namespace: it matches as it is.
  const event = (await d.waitFor((l) => l.msg === 'limit event' && l.event?.kind === 'pids-max' && l.event?.cgroupPath === rel, 5000)).event as Obj;
  t.diagnostic(`limit event: ${JSON.stringify(event)}`);
  assert.equal(alert.container.cgroupPath, rel);
  assert.equal(alert.container.id, id);
  assert.equal(alert.counters.limit, 20);
  assert.ok((alert.topCommands ?? []).some((c: Obj) => c.comm === 'sleep'), `topCommands ${JSON.stringify(alert.topCommands)}`);

  // The bomb's /proc/<pid>/cgroup read from inside a namespace rooted at the agent's cgroup
  // names it through "..": the verdict translates it back to the container's path.
  const seen = await runIn(t, agent, ['--cgroup', '/bin/cat', `/proc/${bomb.pid}/cgroup`]);
  assert.match(seen.stdout, new RegExp(`^8:pids:/\\.\\./docker/${id}$`, 'm'));
  assert.equal(translateProcCgroup(ns, seen.stdout)['/sys/fs/cgroup/pids'], rel);

  // apply reads the same way.
  const apply = await runIn(t, agent, ['--cgroup', process.execPath, CLI, 'apply', '--dry-run', '--json', '--config', cfgFile]);
  assert.equal(apply.code, 0, apply.stderr);
  const report = JSON.parse(apply.stdout) as Obj;
  assert.equal(report.cgroupNamespace.kind, 'translated');
  assert.ok(report.containers.some((c: Obj) => c.cgroupPath === rel));
});

test('private cgroup namespace with its own cgroupfs mounted: run and apply exit non-zero with one sentence, writing nothing', async (t) => {
  prerequisites();
  const { agent, rel, cfgFile } = await setUp(t);
  const inNs = (cmd: string[]): string[] => ['--cgroup', '--mount', '/bin/sh', '-c', OWN_CGROUPFS, 'sh', ...cmd];

  const facts = await runIn(t, agent, inNs(['/bin/sh', '-c', 'cat /proc/self/cgroup; grep " /sys/fs/cgroup/pids " /proc/self/mountinfo; ls /sys/fs/cgroup/pids']));
  t.diagnostic(`inside unshare --cgroup --mount with a fresh cgroupfs:\n${facts.stdout}`);
  assert.equal(facts.code, 0, facts.stderr);
  assert.match(facts.stdout, / \/ \/sys\/fs\/cgroup\/pids .* - cgroup cgwd-ns /);
  assert.match(facts.stdout, /^pids\.max$/m, 'the mount shows a non-root cgroup');
  assert.doesNotMatch(facts.stdout, /^cgroup\.sane_behavior$/m);

  for (const cmd of [['run'], ['apply', '--dry-run']]) {
    const t0 = Date.now();
    const r = await runIn(t, agent, inNs([process.execPath, CLI, ...cmd, '--config', cfgFile]));
    t.diagnostic(`${cmd[0]}: exit ${r.code} after ${Date.now() - t0} ms; stderr: ${r.stderr.trim()}`);
    assert.equal(r.code, 1);
    const lines = r.stderr.split('\n').filter(Boolean);
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^cgwatchdog: only this container's own cgroups are visible \(the cgroup mount at \/sys\/fs\/cgroup\/pids has mountinfo root "\/" in a private cgroup namespace and is not the hierarchy's root\): run it in the host's cgroup namespace \(docker\/podman run --cgroupns=host --pid=host\)/);
    assert.doesNotMatch(lines[0]!, /\.\s/);
  }
  assert.equal(readPidsMax(rel), 'max', 'nothing was written');
  assert.doesNotMatch(fs.readFileSync('/proc/self/mountinfo', 'utf8'), /cgwd-ns/, 'a mount of the test reached the host');
});
