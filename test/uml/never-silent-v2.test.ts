/**
 * Never silent on a real cgroup v2 kernel (user-mode Linux): a hit inside a container's own
 * sub-cgroup, an OOM kill whose cgroup is removed at once. test/uml/scripts/never-silent-v2.ts
 * does the work inside; the alerts are read from the daemon's log.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { need } from '../helpers/prereq';
import { resultsByCheck, runInUml, kernelReady, umlProcesses, UML_KERNELS } from '../helpers/uml';

type Rec = Record<string, any>;

for (const k of UML_KERNELS) test(`cgroup v2 (UML): a discovery root made later is found at once, sub-cgroup hits are the container's, an alert firing through a SIGHUP and a kill -9 resolves, and an OOM-killed container removed at once is still alerted [${k.suite}]`, async (t) => {
  kernelReady(k);
  const run = await runInUml(path.join(__dirname, 'scripts', 'never-silent-v2.js'), [], { kernel: k, timeoutMs: 240_000 });
  t.diagnostic(`boot+run ${run.durationMs} ms, kernel ${run.kernel}`);
  const { get, results: r, tail } = resultsByCheck<Rec>(run);
  assert.equal(r.get('error'), undefined, JSON.stringify(r.get('error')));
  assert.equal(run.exitCode, 0, tail);
  assert.deepEqual(umlProcesses(run.umid), []);

  const lr = get('late-root');
  t.diagnostic(`discovery root made after the start: its container limited ${lr.limitedMs} ms after the mkdirs (pids.max ${lr.pidsMax})`);
  assert.equal(lr.warned, true, 'the missing discovery root was not logged');
  assert.notEqual(lr.limitedMs, null, 'a container under a discovery root made after the start was not limited within 5 s');
  assert.match(lr.pidsMax, /^\d+$/);

  const s = get('sub-cgroup');
  t.diagnostic(`sub-cgroup: first alert ${s.firstMs} ms after the forks; ${s.first?.container?.cgroupPath}; pids.events sub: ${JSON.stringify(s.subEvents)}, container: ${JSON.stringify(s.containerEvents)}`);
  assert.ok(s.first, `no pids-max alert for a hit in the sub-cgroup; kmsg: ${JSON.stringify(s.kmsg)}; daemon: ${JSON.stringify(s.log)}`);
  assert.equal(s.first.container.id, s.id);
  assert.equal(s.first.container.cgroupPath, s.sub);
  assert.equal(s.first.limitScope, 'sub-cgroup');
  assert.equal(s.first.severity, 'warning');
  assert.ok(s.firstMs < 3000, `first alert after ${s.firstMs} ms`);
  assert.ok(s.update, 'later rejections in the sub-cgroup were not counted');
  assert.ok(s.update.counters.eventsTotal > s.first.counters.eventsTotal);

  const rl = get('reload');
  t.diagnostic(`reload while firing: last firing #${rl.lastFiring}, resolution #${rl.resolved?.sequence}`);
  assert.equal(rl.reloaded, true, 'the SIGHUP was not applied');
  assert.ok(rl.resolved, 'the alert firing through the reload never resolved');
  assert.equal(rl.resolved.sequence, rl.lastFiring + 1, 'the resolution does not follow the last firing message');
  assert.ok(rl.lastFiring >= rl.firingBefore);

  const k9 = get('kill9');
  t.diagnostic(`kill -9 while firing: firing #${k9.firingSeq}, ${k9.restored} restored, resolution #${k9.resolved?.sequence}`);
  assert.ok(k9.refired, 'no new alert after the next rejections');
  assert.ok(k9.restored >= 1, 'the restarted daemon restored no alert state');
  assert.ok(k9.resolved, 'the alert firing at kill -9 never resolved after the restart (orphaned)');
  assert.equal(k9.resolved.sequence, k9.firingSeq + 1);

  const o = get('oom-removed');
  t.diagnostic(`OOM then removed: alert ${o.alertAfterRemovalMs} ms after the removal: ${JSON.stringify(o.alert?.victim)}`);
  assert.equal(o.killed, 'SIGKILL');
  assert.equal(o.cgroupGone, true);
  assert.ok(o.alert, 'no oom-kill alert for a container removed right after its OOM kill');
  assert.equal(o.alert.container.id, o.memId);
  assert.equal(o.alert.victim?.comm, 'memhog');
  assert.ok(o.resolved, 'its resolution did not follow');

  assert.equal(get('cleanup').gone, true);
});
