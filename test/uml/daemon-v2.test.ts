/**
 * The real cgwatchdog CLI (`apply` and the `run` daemon) in a real cgroup v2 kernel
 * (user-mode Linux 6.1): one boot; test/uml/scripts/daemon-v2.ts does the work inside and
 * emits one result per phase, asserted here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { need } from '../helpers/prereq';
import { resultsByCheck, runInUml, kernelReady, umlProcesses, type UmlRun, UML_KERNELS } from '../helpers/uml';

type Rec = Record<string, any>;

const UML = 'user-mode-linux (linux.uml): apt-get install -y user-mode-linux';

/** Over the numbers only: a container set by the reconcile has no logged latency (null). */
function stats(xs: unknown[]): string {
  const s = xs.filter((x): x is number => typeof x === 'number').sort((a, b) => a - b);
  if (s.length === 0) return 'n=0';
  const q = (p: number): number => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return `n=${s.length} min ${s[0]!.toFixed(1)} median ${q(0.5).toFixed(1)} max ${s[s.length - 1]!.toFixed(1)} ms`;
}

for (const k of UML_KERNELS) test(`cgwatchdog apply and run against a real cgroup v2 kernel (UML) [${k.suite}]`, async (t) => {
  kernelReady(k);
  const run: UmlRun = await runInUml(path.join(__dirname, 'scripts', 'daemon-v2.js'), [], { kernel: k, timeoutMs: 300_000 });
  t.diagnostic(`boot+run ${run.durationMs} ms, kernel ${run.kernel}`);
  const { get, results: r, tail } = resultsByCheck<Rec>(run);

  await t.test('the script ran to its end and UML left nothing behind', (t) => {
    assert.equal(r.get('error'), undefined, JSON.stringify(r.get('error')));
    assert.equal(run.timedOut, false, tail);
    assert.equal(run.exitCode, 0, tail);
    assert.deepEqual(run.leftovers, []);
    assert.deepEqual(umlProcesses(run.umid), []);
    assert.equal(fs.existsSync(run.dir), false);
    assert.equal(get('cleanup').gone, true, 'the test cgroup tree was removed');
  });

  const setup = get('setup');
  const c = setup.containers as Record<'docker2' | 'k8s16' | 'unlimitedCpu' | 'lower' | 'podLimit8', string>;
  const hostCores = setup.nprocs as number;
  const hostPolicy = Math.max(hostCores, 6) * 1024;

  await t.test('set-up: the test subtree hands pids, memory and cpu down', (t) => {
    assert.deepEqual(String(setup.subtreeControl).split(' ').sort(), ['cpu', 'memory', 'pids']);
    assert.deepEqual(setup.pidsMax, { docker2: 'max', k8s16: 'max', unlimitedCpu: 'max', lower: '1000', podLimit8: 'max' });
    assert.equal(setup.cpuMax.docker2, '200000 100000');
    assert.equal(setup.cpuMax.unlimitedCpu, 'max 100000');
  });

  await t.test('apply --dry-run reports policy values and cores sources, writes nothing', (t) => {
    const a = get('apply-dry-run');
    t.diagnostic(`apply --dry-run took ${a.ms} ms in UML`);
    assert.equal(a.status, 0, a.stderr);
    const rep = a.report;
    assert.equal(rep.ok, true);
    assert.equal(rep.dryRun, true);
    assert.equal(rep.mode, 'enforce');
    assert.equal(rep.cgroupVersion, 'v2');
    assert.equal(rep.hostCores, hostCores);
    assert.deepEqual(rep.problems, []);
    const by = new Map<string, Rec>((rep.containers as Rec[]).map((x) => [x.cgroupPath, x]));
    // docker/not-a-container is not a container.
    assert.deepEqual([...by.keys()].sort(), Object.values(c).sort());
    const expect: [string, Rec][] = [
      [c.docker2, { runtime: 'docker', cores: 2, coresSource: 'quota', policyValue: 6144, oldPidsMax: 'max', newPidsMax: 6144, action: 'set' }],
      [c.k8s16, { runtime: 'containerd', cores: 16, coresSource: 'quota', policyValue: 16384, oldPidsMax: 'max', newPidsMax: 16384, action: 'set' }],
      [c.unlimitedCpu, { runtime: 'docker', cores: hostCores, coresSource: 'host', policyValue: hostPolicy, oldPidsMax: 'max', newPidsMax: hostPolicy, action: 'set' }],
      [c.lower, { runtime: 'docker', cores: 2, coresSource: 'quota', policyValue: 6144, oldPidsMax: 1000, newPidsMax: 1000, action: 'kept-lower' }],
      [c.podLimit8, { runtime: 'containerd', cores: 8, coresSource: 'parent-quota', coresDetail: `quota 800000/100000 of ${path.dirname(c.podLimit8)}`, policyValue: 8192, action: 'set' }],
    ];
    for (const [p, want] of expect) {
      const got = by.get(p)!;
      for (const [k, v] of Object.entries(want)) assert.deepEqual(got[k], v, `${p} ${k}: ${JSON.stringify(got)}`);
      assert.equal(got.written, false, JSON.stringify(got));
      assert.equal(got.id, p.split('/').pop());
    }
    assert.deepEqual(a.pidsMaxAfter, setup.pidsMax, 'a dry run writes no pids.max');
    assert.equal(a.pidMaxAfter, a.pidMaxBefore, 'a dry run leaves kernel.pid_max');
    assert.equal(rep.pidMax.changed, false);
    assert.equal(rep.pidMax.before, Number(a.pidMaxBefore));
  });

  await t.test('the daemon sets every existing container at start and raises kernel.pid_max', (t) => {
    const d = get('daemon-start');
    t.diagnostic(`daemon start to "initial reconcile done": ${d.readyMs} ms in UML (its own startMs ${d.ready?.startMs})`);
    assert.ok(d.ready, `no "initial reconcile done"; stderr: ${d.stderr}`);
    assert.equal(d.ready.containers, 5);
    assert.equal(d.starting.cgroup, 'v2');
    assert.equal(d.starting.mode, 'enforce');
    assert.equal(d.starting.hostCores, hostCores);
    assert.deepEqual(d.pidsMax, { docker2: '6144', k8s16: '16384', unlimitedCpu: String(hostPolicy), lower: '1000', podLimit8: '8192' });
    assert.equal(d.pidMaxLine?.msg, 'raised kernel.pid_max', JSON.stringify(d.pidMaxLine));
    assert.equal(d.pidMaxLine.after, 4194304);
    assert.equal(d.pidMax, '4194304');
    const set = new Map<string, Rec>((d.set as Rec[]).map((l) => [l.cgroup, l]));
    assert.deepEqual([...set.keys()].sort(), [c.docker2, c.k8s16, c.unlimitedCpu, c.podLimit8].sort(), 'the kept-lower one is not written');
    assert.deepEqual(
      { cores: set.get(c.k8s16)!.cores, coresSource: set.get(c.k8s16)!.coresSource, policy: set.get(c.k8s16)!.policy, old: set.get(c.k8s16)!.old, new: set.get(c.k8s16)!.new, why: set.get(c.k8s16)!.why },
      { cores: 16, coresSource: 'quota', policy: 16384, old: 'max', new: 16384, why: 'reconcile' },
    );
    assert.equal(set.get(c.unlimitedCpu)!.coresSource, 'host');
    assert.equal(set.get(c.docker2)!.id, c.docker2.split('/').pop());
  });

  await t.test('containers created while it runs get pids.max within milliseconds', (t) => {
    const created = get('new-containers').created as Rec[];
    assert.deepEqual(created.map((x) => x.name), ['scope', 'pod', 'docker-0', 'docker-1', 'docker-2', 'docker-3', 'docker-4']);
    for (const x of created) {
      t.diagnostic(`${x.name}: mkdir -> pids.max seen (1 ms polling) ${x.measuredMs?.toFixed(1)} ms; daemon logged inotify -> written ${x.loggedLatencyMs} ms`);
      assert.equal(x.pidsMax, String(hostPolicy), JSON.stringify(x));
      assert.equal(typeof x.measuredMs, 'number', `${x.name}: pids.max never changed`);
      // The test's reconcile runs every 2 s: now and then its walk meets the new cgroup before
      // inotify's handler does (seen once in CI, the pod's container, 82 ms): set either way.
      assert.ok(['appeared', 'reconcile'].includes(x.set?.why), JSON.stringify(x.set));
      if (x.set.why === 'appeared') assert.equal(typeof x.loggedLatencyMs, 'number', `${x.name}: no "creation to pids.max written" line`);
      assert.equal(x.set.old, 'max');
      // UML makes every system call a ptrace round trip: a loose bound, the numbers are printed.
      assert.ok(x.measuredMs < 2500, `${x.name}: ${x.measuredMs} ms from mkdir to pids.max`);
    }
    t.diagnostic(`creation -> pids.max, measured by the script: ${stats(created.map((x) => x.measuredMs))}`);
    t.diagnostic(`creation -> pids.max, logged by the daemon:   ${stats(created.map((x) => x.loggedLatencyMs))}`);
    const scope = created[0]!;
    assert.match(scope.rel, /\/system\.slice\/docker-[0-9a-f]{64}\.scope$/);
    assert.equal(scope.set.id, /docker-([0-9a-f]{64})\.scope$/.exec(scope.rel)![1]);
  });

  await t.test('a CPU quota written just after mkdir (docker run --cpus 8) ends at its policy value', (t) => {
    const s = get('settle');
    t.diagnostic(`first write ${s.firstValue} after ${s.firstMs?.toFixed(1)} ms; cpu.max written at ${s.quotaWrittenMs?.toFixed(1)} ms; final ${s.finalValue}`);
    for (const l of s.lines as Rec[]) t.diagnostic(`  ${JSON.stringify(l)}`);
    // The settle re-checks exist for this: the runtime sets the quota after the daemon's first
    // write. The daemon must not take its own earlier write for an operator's lower limit.
    assert.equal(s.finalValue, '8192', `pids.max stayed ${s.finalValue}: the daemon kept its own first write as an "existing lower" limit`);
  });

  await t.test('drifted limits are repaired by the 2-second reconcile; a lowered one is kept', (t) => {
    const d = get('drift');
    t.diagnostic(`drift repair: "max" after ${d.unlimitedRepairedMs?.toFixed(0)} ms, a higher value after ${d.higherRepairedMs?.toFixed(0)} ms`);
    assert.equal(typeof d.unlimitedRepairedMs, 'number', JSON.stringify(d));
    assert.ok(d.unlimitedRepairedMs < 6000, String(d.unlimitedRepairedMs));
    assert.equal(typeof d.higherRepairedMs, 'number', JSON.stringify(d));
    assert.ok(d.higherRepairedMs < 6000, String(d.higherRepairedMs));
    assert.deepEqual(d.pidsMax, { docker2: '6144', k8s16: '16384', unlimitedCpu: '500', lower: '1000', podLimit8: '8192' });
    assert.ok(d.reconciles >= 1);
    const set = new Map<string, Rec>((d.set as Rec[]).map((l) => [l.cgroup, l]));
    assert.deepEqual([set.get(c.docker2)?.old, set.get(c.docker2)?.new, set.get(c.docker2)?.why], ['max', 6144, 'reconcile']);
    assert.deepEqual([set.get(c.k8s16)?.old, set.get(c.k8s16)?.new], [99999, 16384]);
    assert.equal(set.has(c.unlimitedCpu), false, 'a limit lowered by hand is kept (existing: keep-lower)');
  });

  await t.test('containers created during reconciles are all set and never dropped', (t) => {
    const ch = get('churn');
    t.diagnostic(`${ch.created} containers, one per 50 ms, across ${ch.reconciles} reconciles`);
    for (const l of ch.context as Rec[]) t.diagnostic(`  ${JSON.stringify(l)}`);
    assert.ok(ch.created >= 20, String(ch.created));
    assert.ok(ch.reconciles >= 1, 'a reconcile ran while they were created');
    assert.deepEqual(ch.notSet, [], 'every one got its pids.max');
    // A reconcile whose walk started before a mkdir must not take the new container for gone.
    assert.deepEqual(ch.goneLines, [], 'a live container was logged "container gone"');
    assert.deepEqual(ch.foundTwice, [], 'a container was found twice (dropped and found again)');
  });

  await t.test('a removed container is dropped at once; SIGTERM stops the daemon cleanly', (t) => {
    const rm = get('removal');
    assert.ok(rm.gone, JSON.stringify(rm));
    t.diagnostic(`rmdir -> "container gone" ${rm.ms?.toFixed(1)} ms`);
    const s = get('daemon-stop');
    t.diagnostic(`SIGTERM -> exit ${s.stopMs} ms`);
    // Each message carries what went wrong: CI shows only the first lines of a failure.
    assert.equal(s.code, 0, `exit ${s.code}: ${s.stderr}`);
    assert.equal(s.killed, false, `still running ${s.stopMs} ms after SIGTERM`);
    assert.equal(s.stopping?.signal, 'SIGTERM');
    assert.deepEqual(s.problems, [], `warnings or errors logged: ${JSON.stringify(s.problems).slice(0, 600)}`);
    for (const g of s.spuriousGone as Rec[]) for (const l of [...g.before, g.line]) t.diagnostic(`  ${JSON.stringify(l)}`);
    assert.deepEqual((s.spuriousGone as Rec[]).map((g) => g.line.cgroup), [], 'a live container was logged "container gone"');
    assert.deepEqual(s.nonJson, [], 'every stdout line is JSON');
    assert.equal(s.stderr, '');
  });

  await t.test('observe mode: apply and the daemon write nothing', (t) => {
    const a = get('observe-apply');
    assert.equal(a.status, 0, a.stderr);
    assert.equal(a.report.mode, 'observe');
    assert.equal(a.report.dryRun, false);
    for (const x of a.report.containers as Rec[]) assert.equal(x.written, false, JSON.stringify(x));
    const d2 = (a.report.containers as Rec[]).find((x) => x.cgroupPath === c.docker2)!;
    assert.deepEqual([d2.action, d2.oldPidsMax, d2.newPidsMax, d2.policyValue], ['set', 'max', 6144, 6144]);
    assert.match(d2.reason, /^observe mode, would set/);
    assert.deepEqual(a.after, a.before);
    assert.equal(a.pidMax, '32768', 'kernel.pid_max not raised in observe mode');
    assert.equal(a.report.pidMax.changed, false);

    const o = get('observe-daemon');
    assert.equal(o.ready, true);
    assert.equal(o.reconciledAfter, true);
    assert.deepEqual(o.written, []);
    assert.deepEqual(o.after, o.before);
    assert.equal(o.newContainer, 'max', 'a new container is left alone');
    assert.equal(o.pidMax, '32768');
    assert.ok((o.wouldSet as string[]).includes(c.docker2));
    assert.ok(typeof o.foundMs === 'number');
    // The only complaint: these containers' limits add up past the (lowered) pid_max.
    for (const p of o.problems as Rec[]) assert.equal(p.msg, 'containers together may use more PIDs than kernel.pid_max allows', JSON.stringify(p));
    assert.deepEqual([o.stop.code, o.stop.killed], [0, false]);
  });
});
