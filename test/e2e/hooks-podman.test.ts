/**
 * Issue 11 on this host (cgroup v1, podman 4.3.1 + runc 1.1.5): `cgwatchdog install-hooks`
 * writes the hooks file into a temp directory, podman runs with `--hooks-dir` on it, and each
 * container's FIRST command prints its own pids.max (v1 mounts the container's own pids cgroup
 * at /sys/fs/cgroup/pids inside). Each test runs the same container again with an empty hooks
 * directory, and that run must not show the policy value: the value comes from the hook.
 *
 * install-hooks installs the native client (dist/native/cgwatchdog-hook, built by npm run build):
 * each test runs a daemon serving the hooks' socket and checks that the socket answered; one
 * runs without a daemon, where the client execs the Node hook, with the same result.
 *
 * podman writes its default 2048 into every spec (keep-lower keeps it), so these run with
 * `--pids-limit -1` (podman then writes limit 0: runc leaves the new cgroup at "max") or with
 * `existing: replace`, except the keep-lower test with an explicit --pids-limit.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { isRoot, need } from '../helpers/prereq';
import { ensureBusyboxImage, podmanUnavailableReason, removeContainer, run, testContainerName } from '../helpers/podman';
import { freePort, runCli, startDaemon } from '../helpers/daemon';
import { applyEntry, hookSetup, installHooks, startHookDaemon, type HookSetup } from '../helpers/hooks';
import { until } from '../helpers/prometheus';

const RUN = ['--runtime', 'runc', '--network', 'none', '--ulimit', 'nofile=10000:10000', '--ulimit', 'nproc=16384:16384'];
const PRINT_PIDS_MAX = ['sh', '-c', 'read v < /sys/fs/cgroup/pids/pids.max; echo "pids.max=$v"; exec sleep 1000'];

function ready(): void {
  need(isRoot(), 'root (podman, cgroup writes)');
  const why = podmanUnavailableReason();
  need(why === undefined, `podman with runc and the busybox image: ${why}`);
}

interface Started {
  name: string;
  id: string;
  cgroupPath: string;
  /** What the container's first command printed. */
  pidsMax: string;
}

/** `podman --hooks-dir DIR run -d ...`: the container's first line, once it printed it. Removed in t.after. */
async function startPrinting(t: TestContext, tag: string, hooksDir: string, args: string[], cmd = PRINT_PIDS_MAX): Promise<Started> {
  const name = testContainerName(`hooks-${tag}`);
  t.after(() => removeContainer(name));
  const a = ['--hooks-dir', hooksDir, 'run', '-d', ...RUN, '--name', name, ...args, ensureBusyboxImage(), ...cmd];
  const r = await run('podman', a, 60_000);
  assert.equal(r.code, 0, `podman ${a.join(' ')}: ${r.stderr}`);
  const id = r.stdout.trim().split('\n').pop()!;
  const line = await until(async () => {
    const l = await run('podman', ['logs', name]);
    return /pids\.max=(\S+)/.exec(l.stdout)?.[1];
  }, 20_000, `${name} printed its pids.max`, 50);
  return { name, id, cgroupPath: `/libpod_parent/libpod-${id}`, pidsMax: line };
}

/** With the hook and without: the hook's value, the report agreeing, and the run without it differing. */
async function hookedVersusNot(t: TestContext, s: HookSetup, tag: string, args: string[], want: number, stage = 'precreate'): Promise<void> {
  const withHook = await startPrinting(t, `${tag}-hook`, s.hooksDir, args);
  const without = await startPrinting(t, `${tag}-nohook`, s.noHooksDir, args);
  t.diagnostic(`${args.join(' ')}: first process saw pids.max ${withHook.pidsMax} with the hook, ${without.pidsMax} without`);
  assert.equal(withHook.pidsMax, String(want), 'the first process sees the policy value');
  assert.notEqual(without.pidsMax, String(want), 'without the hook the first process must not see the policy value (else this proves nothing)');
  const rec = s.record(withHook.cgroupPath);
  assert.equal(rec?.stage, stage);
  assert.equal(rec?.value, want);
  const entry = await applyEntry(s.configFile, withHook.cgroupPath);
  assert.equal(entry.policyValue, want, 'apply --json computes the same value');
  assert.equal(entry.oldPidsMax, want);
  assert.equal(entry.action, 'unchanged');
  assert.equal(entry.limitOrigin, 'creation');
  const other = await applyEntry(s.configFile, without.cgroupPath);
  assert.equal(other.limitOrigin, undefined, `no hook, nothing written yet: ${JSON.stringify(other)}`);
}

test('podman precreate hook: --cpus 2 gives 6144 and an 8-CPU quota 8192 to the first process; apply --json agrees; without the hook they do not', async (t) => {
  ready();
  const s = hookSetup(t, 'podman', { policy: { existing: 'keep-lower' } });
  const out = await installHooks(['--runtime', 'podman', '--hooks-dir', s.hooksDir, '--config', s.configFile]);
  assert.match(out, /installed .*cgwatchdog-precreate\.json \(the native client /);
  const daemon = await startHookDaemon(t, s);
  await hookedVersusNot(t, s, 'cpus2', ['--cpus', '2', '--pids-limit', '-1'], 6144);
  await hookedVersusNot(t, s, 'quota8', ['--cpu-period', '100000', '--cpu-quota', '800000', '--pids-limit', '-1'], 8192);
  assert.equal(await daemon.served('precreate'), 2, 'the daemon\'s hook socket answered both hooked starts');
});

test('podman precreate hook with no daemon running: the native client runs the Node hook, and the first process still sees 6144', async (t) => {
  ready();
  const s = hookSetup(t, 'nodaemon', { policy: { existing: 'keep-lower' } });
  await installHooks(['--runtime', 'podman', '--hooks-dir', s.hooksDir, '--config', s.configFile]);
  assert.match(fs.readFileSync(path.join(s.hooksDir, 'cgwatchdog-precreate.json'), 'utf8'), /dist\/native\/cgwatchdog-hook/);
  assert.equal(fs.existsSync(s.hookSocket), false, 'nobody serves the socket');
  await hookedVersusNot(t, s, 'nodaemon', ['--cpus', '2', '--pids-limit', '-1'], 6144);
});

test('podman precreate hook, existing: replace and an override (pidsMax 3000): podman\'s own 2048 is replaced before the first process', async (t) => {
  ready();
  const s = hookSetup(t, 'override', { policy: { existing: 'replace', overrides: [{ runtime: 'podman', pidsMax: 3000 }] } });
  await installHooks(['--runtime', 'podman', '--hooks-dir', s.hooksDir, '--config', s.configFile]);
  const daemon = await startHookDaemon(t, s);
  await hookedVersusNot(t, s, 'override', ['--cpus', '2'], 3000);
  assert.equal(await daemon.served('precreate'), 1);
});

test('podman precreate hook, keep-lower: an explicit --pids-limit 1000 is kept (the hook says kept-lower), podman\'s default 2048 likewise', async (t) => {
  ready();
  const s = hookSetup(t, 'keep', { policy: { existing: 'keep-lower' } });
  await installHooks(['--runtime', 'podman', '--hooks-dir', s.hooksDir, '--config', s.configFile]);
  const daemon = await startHookDaemon(t, s);
  const explicit = await startPrinting(t, 'keep-1000', s.hooksDir, ['--cpus', '2', '--pids-limit', '1000']);
  const dflt = await startPrinting(t, 'keep-2048', s.hooksDir, ['--cpus', '2']);
  assert.equal(explicit.pidsMax, '1000');
  assert.equal(dflt.pidsMax, '2048');
  for (const [c, v] of [[explicit, 1000], [dflt, 2048]] as const) {
    const rec = s.record(c.cgroupPath);
    assert.equal(rec?.action, 'kept-lower', JSON.stringify(rec));
    assert.equal(rec?.value, v);
    assert.equal(rec?.policyValue, 6144);
    const e = await applyEntry(s.configFile, c.cgroupPath);
    assert.equal(e.action, 'kept-lower');
    assert.equal(e.limitOrigin, 'creation');
  }
  // The hook-less run of a kept limit shows the same number by definition; the proof is the hook's record above.
  assert.equal(await daemon.served('precreate'), 2);
});

test('CRI-O path (a prestart-only hooks file, on podman): pids.max written in the cgroup runc made, before the first process: 6144', async (t) => {
  ready();
  const s = hookSetup(t, 'crio', { policy: { existing: 'keep-lower' } });
  const out = await installHooks(['--runtime', 'crio', '--hooks-dir', s.hooksDir, '--config', s.configFile]);
  assert.match(out, /cgwatchdog-prestart\.json/);
  const daemon = await startHookDaemon(t, s);
  await hookedVersusNot(t, s, 'crio', ['--cpus', '2', '--pids-limit', '-1'], 6144, 'prestart');
  assert.equal(await daemon.served('prestart'), 1);
});

test('a fork bomb as the first command never gets past the policy value (override pidsMax 100); without the hook it makes all 300', async (t) => {
  ready();
  const s = hookSetup(t, 'bomb', { policy: { existing: 'replace', overrides: [{ runtime: 'podman', pidsMax: 100 }] } });
  await installHooks(['--runtime', 'podman', '--hooks-dir', s.hooksDir, '--config', s.configFile]);
  const daemon = await startHookDaemon(t, s);
  // Bounded (300) so that the run without the hook cannot hurt the host; the inner shell dies at
  // its first failed fork (busybox ash), then only builtins run (no fork is left to make).
  const bomb = ['sh', '-c', 'sh -c \'i=0; while [ $i -lt 300 ]; do sleep 1000 & i=$((i+1)); done\'; read c < /sys/fs/cgroup/pids/pids.current; read m < /sys/fs/cgroup/pids/pids.max; echo "current=$c max=$m"; exec sleep 1000'];
  const results: Record<string, string> = {};
  for (const [tag, dir] of [['hook', s.hooksDir], ['nohook', s.noHooksDir]] as const) {
    const name = testContainerName(`hooks-bomb-${tag}`);
    t.after(() => removeContainer(name));
    const r = await run('podman', ['--hooks-dir', dir, 'run', '-d', ...RUN, '--pids-limit', '-1', '--name', name, ensureBusyboxImage(), ...bomb], 60_000);
    assert.equal(r.code, 0, r.stderr);
    results[tag] = await until(async () => /current=\d+ max=\S+/.exec((await run('podman', ['logs', name])).stdout)?.[0], 30_000, `${name} reported`, 100);
  }
  t.diagnostic(`with the hook: ${results.hook}; without: ${results.nohook}`);
  const [, cur, max] = /current=(\d+) max=(\S+)/.exec(results.hook!)!;
  assert.equal(max, '100');
  assert.ok(Number(cur) <= 100, `the bomb got past the limit: ${results.hook}`);
  const [, curNo] = /current=(\d+)/.exec(results.nohook!)!;
  assert.ok(Number(curNo) > 300, `without the hook the bounded bomb makes all its forks: ${results.nohook}`);
  assert.equal(await daemon.served('precreate'), 1);
});

test('fail open and fail closed with a broken config; the daemon counts the failure, applies the limit afterwards, and reports which container got it at creation', async (t) => {
  ready();
  const broken = (failClosed: boolean, stateDir: string) => `kernel: {manage: false}\npaths: {stateDir: ${stateDir}}\nhooks: {failClosed: ${failClosed}}\npolicy: {minCores: six}\n`;
  const open = hookSetup(t, 'open', '');
  const closed = hookSetup(t, 'closed', '');
  fs.writeFileSync(open.configFile, broken(false, open.stateDir));
  fs.writeFileSync(closed.configFile, broken(true, closed.stateDir));
  // The good config shares the fail-open one's state dir: the daemon below reads both records.
  const good = hookSetup(t, 'good', { policy: { existing: 'replace' }, paths: { stateDir: open.stateDir } });
  const refused = await runCli(['install-hooks', '--runtime', 'podman', '--hooks-dir', open.hooksDir, '--config', open.configFile]);
  assert.equal(refused.code, 2, 'install-hooks refuses a broken config at once');
  assert.match(refused.stderr, /policy\.minCores is "six"/);
  // So the config breaks after the install: the hooks files then name the broken files.
  for (const s of [good, open, closed]) await installHooks(['--runtime', 'podman', '--hooks-dir', s.hooksDir, '--config', good.configFile]);
  for (const s of [open, closed]) {
    const f = path.join(s.hooksDir, 'cgwatchdog-precreate.json');
    fs.writeFileSync(f, fs.readFileSync(f, 'utf8').replace(good.configFile, s.configFile));
  }

  // The broken configs' hooks ask good's socket too (installed with it): the daemon reads each
  // hook's own file as the Node hook would, and fails as it would.
  const hookDaemon = await startHookDaemon(t, good);
  const hooked = await startPrinting(t, 'good', good.hooksDir, ['--cpus', '2', '--pids-limit', '-1']);
  assert.equal(hooked.pidsMax, '6144');
  const opened = await startPrinting(t, 'open', open.hooksDir, ['--cpus', '2', '--pids-limit', '-1']);
  assert.equal(opened.pidsMax, 'max', 'fail open: the container starts, without the limit');
  const openRec = open.record(opened.cgroupPath);
  assert.equal(openRec?.failed, true);
  assert.equal(openRec?.refused, false);
  assert.match(openRec?.reason ?? '', /policy\.minCores/);

  const name = testContainerName('hooks-closed');
  t.after(() => removeContainer(name));
  const r = await run('podman', ['--hooks-dir', closed.hooksDir, 'run', '--rm', ...RUN, '--name', name, ensureBusyboxImage(), 'echo', 'ran'], 60_000);
  t.diagnostic(`fail closed: podman exit ${r.code}: ${r.stderr.trim().split('\n').pop()}`);
  assert.notEqual(r.code, 0, 'fail closed: the container must not start');
  assert.doesNotMatch(r.stdout, /ran/);
  const closedRec = closed.records().find((x) => x.failed);
  assert.equal(closedRec?.refused, true);
  assert.equal(await hookDaemon.served('precreate'), 3, 'all three answered by the hook socket');

  // The daemon on the fail-open container's state: counts the failure, writes the limit after the start.
  const listen = `127.0.0.1:${await freePort()}`;
  const ids = [hooked.id, opened.id];
  const d = startDaemon({
    mode: 'enforce',
    logLevel: 'debug',
    paths: { stateDir: open.stateDir },
    kernel: { manage: false },
    discovery: { roots: ['/libpod_parent'] },
    policy: { existing: 'replace', overrides: [{ pathPattern: `^/libpod_parent/libpod-(${ids.join('|')})$` }, { pathPattern: '^/libpod_parent/', exclude: true }] },
    metrics: { listen },
  }, { t });
  try {
    await daemonChecks();
  } finally {
    // Before the state dir goes (t.after): the daemon writes its state on the way out.
    await d.stop();
  }
  async function daemonChecks(): Promise<void> {
  await d.waitForLog((l) => l.msg === 'detection running', 15_000);
  const failed = await d.waitForLog((l) => typeof l.msg === 'string' && l.msg.startsWith('OCI hook failed'), 5000);
  assert.equal(failed.stage, 'precreate');
  const metrics = await until(async () => {
    const text = await (await fetch(`http://${listen}/metrics`)).text();
    return /cgwatchdog_hook_failures_total\{stage="precreate"\} 1/.test(text) && text.includes(opened.id) ? text : undefined;
  }, 5000, 'the failure counted in /metrics');
  assert.match(metrics, new RegExp(`cgwatchdog_container_limit_origin\\{id="${opened.id}",origin="daemon"\\} 1`));
  assert.match(metrics, new RegExp(`cgwatchdog_container_limit_origin\\{id="${hooked.id}",origin="creation"\\} 1`));
  assert.equal(fs.readFileSync(`/sys/fs/cgroup/pids${opened.cgroupPath}/pids.max`, 'utf8').trim(), '6144', 'the daemon applied the limit afterwards');
  const found = d.logs.find((l) => l.msg === 'limit origin' && l.id === hooked.id);
  assert.equal(found?.limitOrigin, 'creation');
  assert.equal(found?.hookStage, 'precreate');
  }
});
