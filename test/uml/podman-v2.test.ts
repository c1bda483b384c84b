/**
 * Real podman + runc containers on real cgroup v2 kernels (user-mode Linux, each kernel of
 * the matrix): the policy from the container's CPU quota, a fork bomb and an OOM kill alerted
 * with the container's name. test/uml/scripts/podman-v2.ts does the work inside.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { kernelReady, resultsByCheck, runInUml, umlProcesses, UML_KERNELS } from '../helpers/uml';

type Rec = Record<string, any>;

for (const k of UML_KERNELS) test(`podman on cgroup v2 [${k.suite}]: the policy follows the CPU quota; a fork bomb and an OOM kill are alerted with the container's name`, async (t) => {
  kernelReady(k);
  const run = await runInUml(path.join(__dirname, 'scripts', 'podman-v2.js'), [], { kernel: k, timeoutMs: 300_000 });
  const { get, results: r, tail } = resultsByCheck<Rec>(run);
  assert.equal(r.get('error'), undefined, JSON.stringify(r.get('error')));
  assert.equal(run.exitCode, 0, tail);
  assert.deepEqual(umlProcesses(run.umid), []);
  t.diagnostic(`${run.kernel}, podman ${get('setup').podman}, boot+run ${run.durationMs} ms`);

  const p = get('policy');
  t.diagnostic(`8-CPU quota (cpu.max ${p.cpuMax}): pids.max ${p.pidsMax} ${p.reachedMs} ms after podman run began (podman run took ${Math.round(p.runMs)} ms, podman inspect ${p.inspectMs} ms)`);
  assert.equal(p.pidsMax, '8192');

  const b = get('bomb');
  assert.ok(b.alert, 'no pids-max alert for the fork bomb');
  t.diagnostic(b.alert.summary);
  assert.equal(b.alert.container.name, 'cgwd-bomb');
  assert.equal(b.alert.container.runtime, 'podman');
  assert.equal(b.alert.counters.limit, 20);

  const o = get('oom');
  assert.equal(o.exit, 137, 'dd was not OOM-killed');
  assert.ok(o.alert, `no oom-kill alert naming cgwd-oom; last alerts: ${JSON.stringify(o.lastAlerts)}`);
  t.diagnostic(o.alert.summary);
  assert.equal(o.alert.victim?.comm, 'dd');
  // -m 32m: the limit it names is that one, or unknown when the cgroup was gone before it was
  // read again after runc wrote memory.max; never the "max" of its first moment.
  const limit = o.alert.memory?.limitBytes ?? o.alert.counters?.limit;
  assert.ok(limit === undefined || limit === 32 << 20, `the alert says the limit was ${JSON.stringify(limit)}: ${o.alert.summary}`);

  const c = get('cleanup');
  assert.equal(c.stop.killed, false);
  assert.equal(c.containers, '');
});
