/**
 * Issue 11 on a real cgroup v2 kernel (user-mode Linux, the newest of the matrix: hooks meet
 * the runtime, not the kernel's notification semantics the matrix is for, and the three boots
 * cost 6 of the suite's 40 minutes in CI): the podman
 * precreate hook and the prestart-only (CRI-O) hook give the first process the policy value
 * (a 2-CPU quota 6144, an 8-CPU quota 8192), equal to what `apply --json` computes; with an
 * empty hooks directory the same containers do not see it. The native client asks a daemon's hook
 * socket (every hooked start answered there), and without a daemon execs the Node hook with the
 * same result. test/uml/scripts/hooks-v2.ts runs inside.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { kernelReady, resultsByCheck, runInUml, umlProcesses, UML_KERNELS } from '../helpers/uml';

type Rec = Record<string, any>;

for (const k of UML_KERNELS.slice(-1)) test(`OCI hooks on cgroup v2 [${k.suite}]: the first process sees the policy value (precreate and prestart), not without the hook`, async (t) => {
  kernelReady(k);
  const run = await runInUml(path.join(__dirname, 'scripts', 'hooks-v2.js'), [], { kernel: k, timeoutMs: 300_000 });
  const { get, results: r, tail } = resultsByCheck<Rec>(run);
  assert.equal(r.get('error'), undefined, JSON.stringify(r.get('error')));
  assert.equal(run.exitCode, 0, tail);
  assert.deepEqual(umlProcesses(run.umid), []);
  t.diagnostic(`${run.kernel}, boot+run ${run.durationMs} ms`);
  for (const i of get('setup').installs) assert.equal(i.status, 0, i.err);
  for (const x of get('runs').runs as Rec[]) {
    t.diagnostic(`${x.cores}-CPU quota, ${x.dir}: pids.max ${x.pidsMax} (${x.ms} ms)`);
    assert.equal(x.status, 0, x.err);
    const want = String(Math.max(6, x.cores) * 1024);
    if (x.dir === 'empty.d') assert.notEqual(x.pidsMax, want, 'without the hook the first process must not see the policy value');
    else assert.equal(x.pidsMax, want, `${x.dir}: ${x.err}`);
  }
  const a = get('apply');
  assert.equal(a.status, 0, a.stderr);
  assert.equal(a.pidsMax, '8192');
  assert.equal(a.entry?.policyValue, 8192);
  assert.equal(a.entry?.oldPidsMax, 8192);
  assert.equal(a.entry?.limitOrigin, 'creation');
  assert.equal(a.entry?.hook?.stage, 'precreate');
  const d = get('daemon');
  assert.equal(d.listening, true, JSON.stringify(d.problems));
  const stages = (d.served as Rec[]).map((x) => x.stage).sort();
  t.diagnostic(`hook socket answered: ${(d.served as Rec[]).map((x) => `${x.stage} ${Math.round(x.ms * 10) / 10} ms`).join(', ')}`);
  assert.deepEqual(stages, ['precreate', 'precreate', 'precreate', 'prestart', 'prestart'], 'the native client asked the daemon at every hooked start');
  const nd = get('nodaemon');
  assert.equal(nd.status, 0, nd.err);
  assert.equal(nd.socketGone, true);
  assert.equal(nd.pidsMax, '8192', 'no daemon: the Node hook fallback still sets the policy value');
});
