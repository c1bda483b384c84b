/**
 * The most common production Kubernetes layout, for real: containerd's CRI plugin with runc's
 * systemd cgroup driver on cgroup v2, systemd as PID 1, in user-mode Linux (the newest kernel
 * of the matrix). containerd runs as a systemd unit, a pod slice
 * kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice holds the
 * containers' cri-containerd-<id>.scope, and the real daemon gives an 8-CPU container 8192,
 * alerts its fork bomb and an OOM kill with the names from CRI, and is measured against what
 * systemd does to the scope's pids.max (DefaultTasksMax, daemon-reload).
 * test/uml/scripts/cri-systemd-v2.ts does the work inside; everything lives in UML.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CRI_IMAGE, containerdUnavailableReason } from '../helpers/cri';
import { isRoot, need } from '../helpers/prereq';
import { kernelReady, resultsByCheck, runInUml, umlProcesses, UML_KERNELS } from '../helpers/uml';

type Rec = Record<string, any>;

const sid = UML_KERNELS[UML_KERNELS.length - 1]!;

test(`containerd CRI with the systemd cgroup driver on cgroup v2, systemd as PID 1 [${sid.suite}]: 8192 on the 8-CPU scope, a fork bomb and an OOM kill alerted with the pod's names; what systemd's TasksMax and daemon-reload do`, async (t) => {
  kernelReady(sid);
  need(isRoot(), 'root (user-mode Linux runs the host\'s systemd, containerd and runc inside)');
  const why = containerdUnavailableReason();
  need(why === undefined, why ?? '');
  need(fs.existsSync('/lib/systemd/systemd') && fs.existsSync('/usr/bin/systemd-run'), 'systemd (apt-get install systemd): PID 1 inside user-mode Linux');
  need(fs.existsSync('/usr/bin/dbus-daemon'), 'dbus (apt-get install dbus): runc\'s systemd cgroup driver talks to systemd over the system bus');
  // The bomb is a static C program built inside UML (see the script: why threads).
  need(fs.existsSync('/usr/bin/gcc') && fs.existsSync('/usr/lib/x86_64-linux-gnu/libc.a'), 'gcc and libc6-dev (apt-get install gcc libc6-dev): the bomb is built with gcc -static');

  const run = await runInUml(path.join(__dirname, 'scripts', 'cri-systemd-v2.js'), [], { kernel: sid, systemd: true, memMb: 1536, timeoutMs: 400_000 });
  const { get, results: r, tail } = resultsByCheck<Rec>(run);
  assert.equal(r.get('error'), undefined, `${JSON.stringify(r.get('error'))}\n${tail}`);
  assert.equal(run.timedOut, false, tail);
  assert.equal(run.exitCode, 0, tail);
  // Everything was UML's: nothing of it lives on, its temp directory is gone.
  assert.deepEqual(run.leftovers, []);
  assert.deepEqual(umlProcesses(run.umid), []);
  assert.equal(fs.existsSync(run.dir), false, 'the UML temp dir was removed');

  const s = get('setup');
  t.diagnostic(`${run.kernel}, ${s.systemd}, PID 1 ${s.before.pid1}; ${s.containerd.runtimeName} ${s.containerd.runtimeVersion} as ${s.containerdCgroup} (CRI answered ${s.containerdMs} ms after systemd-run); boot+run ${run.durationMs} ms`);
  t.diagnostic(`systemd's DefaultTasksMax ${s.before.defaultTasksMax} with threads-max ${s.before.threadsMax} (UML's RAM), ${s.defaultTasksMax} with threads-max ${s.threadsMax} (a 64 GiB node's); pid_max ${s.before.pidMax}`);
  assert.equal(s.before.pid1, 'systemd');
  assert.match(s.containerdCgroup, /^0::\/system\.slice\/cgwd-containerd\.service$/);

  const dm = get('daemon');
  t.diagnostic(`daemon ready in ${dm.readyMs} ms; kernel signals ${JSON.stringify(dm.capabilities?.signals ?? dm.capabilities)}`);

  const p = get('policy');
  assert.equal(p.rel, `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${p.uid.replace(/-/g, '_')}.slice/cri-containerd-${p.id}.scope`);
  assert.equal(p.scope.ControlGroup, p.rel, 'systemd\'s scope unit is the cgroup the daemon watched');
  assert.equal(p.cpuMax, '800000 100000');
  assert.equal(p.pidsMax, '8192', `pids.max went ${JSON.stringify(p.pidsMaxSeen)}; writes ${JSON.stringify(p.writes)}`);
  assert.equal(p.found?.runtime, 'containerd');
  assert.equal(p.found?.pod, p.uid, 'the pod UID from the slice name, underscores back to dashes');
  t.diagnostic(`StartContainer -> pids.max 8192 in the kernel ${p.reachedMs} ms (StartContainer returned at ${p.startMs} ms; cgroup seen -> first write ${p.firstWrite?.latencyMs} ms); pids.max went ${p.pidsMaxSeen.map((x: Rec) => `${x.v}@${x.ms}`).join(' -> ')}; the daemon's writes: ${p.writes.map((w: Rec) => `${w.old}->${w.new} (${w.why}) @${w.ms}`).join(', ')}`);
  t.diagnostic(`systemd on the scope: TasksMax=${p.scope.TasksMax} TasksAccounting=${p.scope.TasksAccounting} CPUQuotaPerSecUSec=${p.scope.CPUQuotaPerSecUSec}; sandbox scope TasksMax=${p.sandboxScope.TasksMax} (pids.max ${p.sandboxPidsMax}); pod slice TasksMax=${p.podSliceUnit.TasksMax} (pids.max ${p.podSlicePidsMax})`);
  // runc sets no TasksMax (CRI has no pids limit): the scope has systemd's DefaultTasksMax.
  assert.equal(p.scope.TasksMax, s.defaultTasksMax, 'the scope\'s TasksMax is systemd\'s DefaultTasksMax');
  // The sandbox (no quota): the 6-core floor.
  assert.equal(p.sandboxPidsMax, '6144');

  const rl = get('reload');
  assert.equal(rl.status, 0, rl.stderr);
  t.diagnostic(`systemctl daemon-reload (${rl.reloadMs} ms): pids.max ${rl.seen.map((x: Rec) => `${x.v}@${x.ms}`).join(' -> ')} (ms from the reload's start, to 2.5 s after it returned); the daemon's writes then: ${rl.writes.length ? rl.writes.map((w: Rec) => `${w.old}->${w.new} (${w.why}) @${w.ms}`).join(', ') : 'none'}`);
  // systemd re-applies the scope's TasksMax to pids.max on a daemon-reload, over the policy.
  assert.equal(rl.scopeTasksMax, s.defaultTasksMax);
  // (Seen in the kernel by a 1 ms poll, or, should the daemon one day undo it faster than that, in its write's old value.)
  const reset = rl.seen.some((x: Rec) => x.v === rl.scopeTasksMax) || rl.writes.some((w: Rec) => String(w.old) === rl.scopeTasksMax);
  assert.ok(reset, `daemon-reload did not put systemd's TasksMax ${rl.scopeTasksMax} back: ${JSON.stringify(rl.seen)}`);
  const ro = get('restore');
  const fast = rl.writes.filter((w: Rec) => w.why !== 'reconcile' && w.new === 8192);
  // systemd's write as the 1 ms poll saw it, and the policy value back after it.
  const resetAt = rl.seen.find((x: Rec) => x.v === rl.scopeTasksMax)?.ms as number | undefined;
  const backAt = resetAt === undefined ? undefined : (rl.seen.find((x: Rec) => x.ms > resetAt && x.v === '8192')?.ms as number | undefined);
  t.diagnostic(`8192 back ${backAt !== undefined && resetAt !== undefined ? `${(backAt - resetAt).toFixed(1)} ms after systemd wrote ${rl.scopeTasksMax}` : 'before the 1 ms poll saw systemd\'s value'}; the daemon's writes: ${rl.writes.map((w: Rec) => `${w.old}->${w.new} (${w.why}) @${w.ms}`).join(', ')}`);
  // The scope's pids.max stays watched: the daemon answers systemd's write itself, not at its next reconcile.
  assert.ok(fast.length > 0, `no write of 8192 in reaction to systemd's within 2.5 s: ${JSON.stringify(rl.writes)}`);
  assert.ok(fast[0].why.includes('systemd'), JSON.stringify(fast[0]));
  if (resetAt !== undefined) {
    assert.ok(backAt !== undefined, JSON.stringify(rl.seen));
    assert.ok(backAt! - resetAt <= 1000, `${backAt! - resetAt} ms from systemd's write to the policy value`);
  }
  assert.equal(ro.writes.at(-1)?.new ?? fast.at(-1)?.new, 8192);

  const b = get('bomb');
  assert.notEqual(b.forkMs, null, `the bomb met no rejection within 60 s: pids.current ${b.pidsCurrent}, pids.max ${b.pidsMaxAtBomb}; ${b.log}`);
  assert.ok(b.alert, `no pids-max alert for the bomb; alerts: ${JSON.stringify(b.alerts)}`);
  const a = b.alert;
  t.diagnostic(a.summary);
  t.diagnostic(`bomb (threads): first refused clone ${b.forkMs} ms after it began (pids.current ${b.pidsCurrent}; ${b.log?.split('\n').filter((l: string) => l.includes('threads')).join(' ')}); alert at the webhook ${b.alertMs} ms after the first rejection was counted (pids.events polled every 2 ms)`);
  assert.equal(b.pidsMaxAtBomb, '8192');
  assert.ok(b.events.max >= 1, JSON.stringify(b.events));
  assert.equal(a.state, 'firing');
  assert.equal(a.container.runtime, 'containerd');
  assert.equal(a.container.name, 'bomber');
  assert.equal(a.container.image, CRI_IMAGE);
  assert.equal(a.container.pod, 'web-0');
  assert.equal(a.container.namespace, 'shop');
  assert.equal(a.container.podUid, p.uid);
  assert.equal(a.counters.limit, 8192);

  const o = get('oom');
  assert.ok(o.alert, `no oom-kill alert for the hog; memory.events ${JSON.stringify(o.events)}; alerts: ${JSON.stringify(o.alerts)}`);
  t.diagnostic(o.alert.summary);
  t.diagnostic(`OOM kill ${o.oomAfterGoMs} ms after the hog began (memory.max ${o.memoryMax}); alert at the webhook ${o.alertMs} ms after memory.events counted it`);
  assert.equal(o.memoryMax, String(24 * 1024 * 1024));
  assert.equal(o.alert.container.name, 'hog');
  assert.equal(o.alert.container.pod, 'web-0');
  assert.equal(o.alert.container.namespace, 'shop');
  assert.equal(o.alert.victim?.comm, 'dd');

  const c = get('cleanup');
  t.diagnostic(`in UML ${c.bootToEndMs} ms from the script's start to the end of its clean-up`);
  assert.deepEqual(c.problems, []);
  assert.equal(c.stop.killed, false, 'the daemon stopped on SIGTERM');
  assert.deepEqual(c.shims, [], 'no shim outlived containerd\'s pods');
  assert.equal(c.scopesLeft, '', 'no cri-containerd scope left');
  assert.equal(c.kubepodsLeft, false, 'kubepods.slice removed');
  assert.deepEqual(c.mounts, []);
});
