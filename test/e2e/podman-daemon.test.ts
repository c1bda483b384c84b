/**
 * Issue 2 end to end: the real daemon (`node dist/src/cli.js run`, its own process) and real
 * podman + runc containers on this host's cgroup v1 hierarchies.
 *
 * Each container is made with `podman create` first, so its id (and so its cgroup path
 * /libpod_parent/libpod-<id>) is known before the cgroup exists; the daemon is started, then
 * `podman start` makes the cgroup while the daemon runs. The daemon's config confines it to
 * the test's own containers: an override with no numbers (= the plain policy) matches their
 * cgroup paths, and a catch-all `exclude` after it keeps the daemon's hands off every other
 * container under /libpod_parent (other people's tests share this host). Podman's runc writes
 * its own default pids.max 2048 ~10 ms after the cgroup appears: keep-lower keeps it,
 * replace ends at the policy value.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { isRoot, need } from '../helpers/prereq';
import { createContainer, ensureBusyboxImage, memoryHogArgs, podmanUnavailableReason, removeContainer, run, runContainer, testContainerName } from '../helpers/podman';
import { freePort, runCli, startDaemon, startWebhookReceiver, type DaemonHandle, type LogLine } from '../helpers/daemon';
import { podmanStart, until } from '../helpers/prometheus';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** The daemon re-checks a new container for 3 s (SETTLE_MS in src/daemon.ts) after finding it. */
const SETTLE_WAIT_MS = 3500;

function ready(): void {
  need(isRoot(), 'root (the daemon writes cgroup files)');
  const why = podmanUnavailableReason();
  need(why === undefined, `podman with runc and the busybox image: ${why}`);
}

const pidsMaxFile = (cgroupPath: string): string => path.join('/sys/fs/cgroup/pids', cgroupPath, 'pids.max');
const readPidsMax = (cgroupPath: string): string => fs.readFileSync(pidsMaxFile(cgroupPath), 'utf8').trim();

function tempDir(t: TestContext, tag: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `cgwd-e2e-${tag}-`));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** A container made (not started) for this test; removed in t.after, also on failure. */
async function created(t: TestContext, tag: string, cpus: number): Promise<{ id: string; name: string; cgroupPath: string }> {
  const name = testContainerName(`e2e-${tag}`);
  t.after(() => removeContainer(name));
  const { id } = await createContainer({ name, image: ensureBusyboxImage(), cpus, cmd: ['sleep', '100000'] });
  return { id, name, cgroupPath: `/libpod_parent/libpod-${id}` };
}

/** The daemon confined to `ids` (policy as configured) and excluded from every other container. */
function config(ids: string[], mode: 'enforce' | 'observe', existing: 'replace' | 'keep-lower'): Record<string, unknown> {
  return {
    mode,
    logLevel: 'debug',
    paths: { stateDir: fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-e2e-state-')) },
    kernel: { manage: false },
    discovery: { roots: ['/libpod_parent'] },
    policy: {
      existing,
      overrides: [{ pathPattern: `^/libpod_parent/libpod-(${ids.join('|')})$` }, { pathPattern: '^/libpod_parent/', exclude: true }],
    },
    metrics: { listen: '127.0.0.1:0' },
  };
}

async function daemon(t: TestContext, cfg: Record<string, any>): Promise<DaemonHandle> {
  const d = startDaemon(cfg, { t });
  // The daemon writes its state on the way out: remove the directory only once it has stopped.
  t.after(async () => {
    await d.stop();
    fs.rmSync(cfg.paths.stateDir, { recursive: true, force: true });
  });
  await d.waitForLog((l) => l.msg === 'detection running', 15_000);
  return d;
}

const forId = (id: string, also: (l: LogLine) => boolean) => (l: LogLine): boolean => l.id === id && also(l);

test('enforce + replace: containers started with --cpus 2 and --cpus 16 end at 6144 and 16384', async (t) => {
  ready();
  const c2 = await created(t, 'cpus2', 2);
  const c16 = await created(t, 'cpus16', 16);
  const d = await daemon(t, config([c2.id, c16.id], 'enforce', 'replace'));

  const t0 = Date.now();
  await Promise.all([podmanStart(c2.name), podmanStart(c16.name)]);
  for (const [c, want] of [
    [c2, '6144'],
    [c16, '16384'],
  ] as const) {
    const found = await d.waitForLog(forId(c.id, (l) => l.msg === 'container found'), 5000);
    assert.equal(found.runtime, 'podman');
    assert.equal(found.cgroup, c.cgroupPath);
    await until(() => (readPidsMax(c.cgroupPath) === want ? true : undefined), 5000, () => `${c.name} pids.max ${want} (is ${readPidsMax(c.cgroupPath)})`, 5);
  }
  t.diagnostic(`podman start -> both pids.max at the policy value: ${Date.now() - t0} ms`);
  // runc writes podman's 2048 after the cgroup appears; the value must hold past the settle window.
  await sleep(Math.max(0, SETTLE_WAIT_MS - (Date.now() - t0)));
  assert.equal(readPidsMax(c2.cgroupPath), '6144');
  assert.equal(readPidsMax(c16.cgroupPath), '16384');

  const set2 = d.logs.filter(forId(c2.id, (l) => l.msg === 'pids.max set'));
  assert.ok(set2.length >= 1, 'no "pids.max set" line for the --cpus 2 container');
  const last2 = set2.at(-1)!;
  assert.equal(last2.new, 6144);
  assert.equal(last2.cores, 2);
  assert.equal(last2.coresSource, 'quota');
  const last16 = d.logs.filter(forId(c16.id, (l) => l.msg === 'pids.max set')).at(-1);
  assert.equal(last16?.new, 16384);
  assert.equal(last16?.cores, 16);
  const lat = d.logs.filter((l) => l.msg === 'creation to pids.max written' && (l.id === c2.id || l.id === c16.id)).map((l) => l.latencyMs);
  t.diagnostic(`cgroup seen -> pids.max written (daemon's own measure): ${lat.join(', ')} ms`);
  t.diagnostic(
    `--cpus 2 writes: ${set2.map((l) => `${l.old}->${l.new} (${l.why})`).join('; ')}`,
  );
});

test('enforce + keep-lower: podman\'s own 2048 is kept for a --cpus 2 container, and the daemon says so', async (t) => {
  ready();
  const c = await created(t, 'keep', 2);
  const d = await daemon(t, config([c.id], 'enforce', 'keep-lower'));
  const t0 = Date.now();
  await podmanStart(c.name);
  await d.waitForLog(forId(c.id, (l) => l.msg === 'container found'), 5000);
  await sleep(Math.max(0, SETTLE_WAIT_MS - (Date.now() - t0)));
  const applied = d.logs.filter(forId(c.id, (l) => l.action !== undefined));
  const story = applied.map((l) => `${l.old}->${l.new} ${l.action} (${l.why}, cores from ${l.coresSource})`).join('; ');
  t.diagnostic(`the daemon's applies: ${story}`);
  const lat = d.logs.find(forId(c.id, (l) => l.msg === 'creation to pids.max written'))?.latencyMs;
  if (lat !== undefined) t.diagnostic(`cgroup seen -> first write: ${lat} ms`);
  // runc writes podman's 2048 ~10 ms after the cgroup appears. keep-lower must end there.
  assert.equal(readPidsMax(c.cgroupPath), '2048', `pids.max is not podman's 2048 after the settle window; the daemon's applies: ${story}`);
  // The last one: an early look may read runc's 2048 before its CPU quota (parallel reads).
  const kept = applied.filter((l) => l.action === 'kept-lower').at(-1);
  assert.ok(kept, `no kept-lower line; the daemon's applies: ${story}`);
  assert.equal(kept.old, 2048);
  assert.equal(kept.policy, 6144);
  assert.equal(kept.coresSource, 'quota');
  assert.match(kept.msg ?? '', /existing 2048 is lower than policy 6144; kept/);
});

test('observe mode: nothing is written (2048 stays) but the daemon logs the would-be value', async (t) => {
  ready();
  const c = await created(t, 'observe', 2);
  const d = await daemon(t, config([c.id], 'observe', 'replace'));
  const t0 = Date.now();
  await podmanStart(c.name);
  const wouldSet = (l: LogLine): boolean => typeof l.msg === 'string' && l.msg.startsWith('observe mode, would set');
  // The first look may come before runc wrote the CPU quota (cores then from the cpuset); the
  // re-check when runc writes pids.max sees the quota.
  const would = await d.waitForLog(forId(c.id, (l) => wouldSet(l) && l.coresSource === 'quota'), 5000);
  assert.equal(would.policy, 6144);
  assert.equal(would.cores, 2);
  assert.equal(would.coresSource, 'quota');
  await sleep(Math.max(0, SETTLE_WAIT_MS - (Date.now() - t0)));
  assert.equal(readPidsMax(c.cgroupPath), '2048');
  assert.deepEqual(
    d.logs.filter(forId(c.id, (l) => l.msg === 'pids.max set')),
    [],
    'observe mode wrote pids.max',
  );
  t.diagnostic(`would-be lines: ${d.logs.filter(forId(c.id, wouldSet)).map((l) => `${l.msg} [${l.why}]`).join(' | ')}`);
});

test('cgwatchdog apply --dry-run --json lists the podman container: runtime podman, cores from quota; writes nothing', async (t) => {
  ready();
  const name = testContainerName('e2e-apply');
  t.after(() => removeContainer(name));
  const c = await runContainer({ name, cpus: 2, cmd: ['sleep', '100000'] });
  const dir = tempDir(t, 'apply');
  const cfgFile = path.join(dir, 'config.yaml');
  fs.writeFileSync(
    cfgFile,
    YAML.stringify({ mode: 'enforce', logLevel: 'debug', paths: { stateDir: dir }, kernel: { manage: false }, discovery: { roots: ['/libpod_parent'] }, policy: { existing: 'replace' } }),
  );
  const r = await runCli(['apply', '--config', cfgFile, '--dry-run', '--json']);
  assert.equal(r.code, 0, `apply exited ${r.code}: ${r.stderr}`);
  const report = JSON.parse(r.stdout);
  assert.equal(report.dryRun, true);
  const mine = report.containers.find((x: any) => x.id === c.id);
  assert.ok(mine, `container ${c.id} not in the report: ${report.containers.map((x: any) => x.cgroupPath).join(', ')}`);
  assert.equal(mine.runtime, 'podman');
  assert.equal(mine.cgroupPath, c.cgroupPath);
  assert.equal(mine.coresSource, 'quota');
  assert.equal(mine.cores, 2);
  assert.equal(mine.policyValue, 6144);
  assert.equal(mine.oldPidsMax, 2048);
  assert.equal(mine.written, false);
  assert.equal(readPidsMax(c.cgroupPath), '2048', 'a dry run wrote pids.max');
});

test('a podman --rm container OOM-killed within 200 ms of its start: the alert names it (name and image), and Prometheus can still scrape its OOM count', async (t) => {
  ready();
  const name = testContainerName('e2e-oom-rm');
  t.after(() => removeContainer(name));
  const hog = memoryHogArgs({ keepAlive: false });
  const { id } = await createContainer({ name, image: ensureBusyboxImage(), memory: '32m', cmd: hog.cmd, extra: ['--rm', ...hog.extra] });
  const cgroupPath = `/libpod_parent/libpod-${id}`;
  const hook = await startWebhookReceiver({});
  t.after(() => hook.close());
  const cfg = config([id], 'observe', 'replace');
  cfg.names = { podmanBinary: 'podman' };
  cfg.alerts = { sinks: [{ type: 'webhook', url: hook.url, retry: { initialDelayMs: 100, maxDelayMs: 500 } }] };
  const listen = `127.0.0.1:${await freePort()}`;
  cfg.metrics = { listen };
  await daemon(t, cfg);
  const t0 = Date.now();
  const started = await run('podman', ['start', '-a', name], 30_000);
  const ranMs = Date.now() - t0;
  t.diagnostic(`podman start -a (OOM-killed at once, then removed by --rm): ${ranMs} ms, exit ${started.code}`);
  assert.equal(started.code, 137, `the hog was not OOM-killed: ${started.stderr}`);
  assert.equal(fs.existsSync(path.join('/sys/fs/cgroup/memory', cgroupPath)), false, 'podman removed the cgroup');
  const got = await hook.waitFor((x) => x.alert?.kind === 'oom-kill', 10_000);
  const a = got.alert;
  t.diagnostic(a.summary);
  assert.equal(a.container.id, id);
  assert.equal(a.container.name, name, 'the name learned while it lived');
  assert.match(a.container.image ?? '', /cgwd-busybox/);
  assert.equal(a.victim?.comm, 'dd');
  const metrics = await (await fetch(`http://${listen}/metrics`)).text();
  assert.match(metrics, new RegExp(`cgwatchdog_container_oom_kills_total\\{[^}]*id="${id}"[^}]*\\} 1`), 'the removed container\'s OOM count is still scraped');
  await hook.waitFor((x) => x.alert?.kind === 'oom-kill' && x.alert.state === 'resolved', 10_000);
});

test('first, do no harm, with a real container: a podman container running 100 tasks is not capped at a policy of 40; apply, the alert and the metric say so', async (t) => {
  ready();
  const name = testContainerName('e2e-too-low');
  t.after(() => removeContainer(name));
  // A live container with 100 tasks (its sh and 99 sleeps), running before the daemon starts.
  const c = await runContainer({ name, cmd: ['sh', '-c', 'i=0; while [ $i -lt 99 ]; do sleep 100000 & i=$((i+1)); done; wait'] });
  const current = (): number => Number(fs.readFileSync(path.join('/sys/fs/cgroup/pids', c.cgroupPath, 'pids.current'), 'utf8'));
  await until(() => (current() >= 100 ? true : undefined), 10_000, () => `100 tasks in ${name} (has ${current()})`, 20);
  const before = readPidsMax(c.cgroupPath);

  const hook = await startWebhookReceiver({});
  t.after(() => hook.close());
  const cfg = config([c.id], 'enforce', 'replace');
  (cfg.policy as { overrides: Array<Record<string, unknown>> }).overrides[0].pidsMax = 40;
  cfg.names = { podmanBinary: 'podman' };
  cfg.alerts = { sinks: [{ type: 'webhook', url: hook.url, retry: { initialDelayMs: 100, maxDelayMs: 500 } }] };
  const listen = `127.0.0.1:${await freePort()}`;
  cfg.metrics = { listen };
  const dir = tempDir(t, 'too-low');
  const cfgFile = path.join(dir, 'config.yaml');
  fs.writeFileSync(cfgFile, YAML.stringify(cfg));
  const r = await runCli(['apply', '--config', cfgFile, '--dry-run', '--json']);
  assert.equal(r.code, 0, `apply exited ${r.code}: ${r.stderr}`);
  const rep = JSON.parse(r.stdout).containers.find((x: { id: string }) => x.id === c.id);
  assert.equal(rep?.action, 'too-low', JSON.stringify(rep));
  assert.match(rep.reason, /below the 100 tasks it runs/);

  await daemon(t, cfg);
  const got = await hook.waitFor((x) => x.alert?.kind === 'pids-policy-too-low', 10_000);
  t.diagnostic(got.alert.summary);
  assert.equal(got.alert.container.id, c.id);
  assert.equal(got.alert.container.name, name);
  assert.equal(got.alert.counters.current, 100);
  assert.equal(got.alert.counters.limit, 40);
  const metrics = await (await fetch(`http://${listen}/metrics`)).text();
  assert.match(metrics, new RegExp(`cgwatchdog_container_policy_too_low\\{id="${c.id}"[^}]*\\} 1`));
  assert.equal(readPidsMax(c.cgroupPath), before, `pids.max was changed from podman's ${before} below the 100 running tasks`);
  // The container still forks: one more task beyond the 100.
  const ex = await run('podman', ['exec', name, 'sh', '-c', 'sleep 0 && echo forked'], 20_000);
  assert.equal(ex.stdout.trim(), 'forked', `the container cannot fork: ${ex.stderr}`);
});
