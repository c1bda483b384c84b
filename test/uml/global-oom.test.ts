/**
 * A real global OOM (the node out of memory, constraint=CONSTRAINT_NONE) inside user-mode
 * Linux booted with 256 MiB, never on the host: the alert is the node's, naming the container
 * whose process was killed, not a container-limit alert. test/uml/scripts/global-oom.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { kernelReady, resultsByCheck, runInUml, umlProcesses, UML_KERNELS } from '../helpers/uml';

type Rec = Record<string, any>;

for (const k of UML_KERNELS) test(`a global OOM kill of a container's process is the node's alert, not the container's limit [${k.suite}]`, async (t) => {
  kernelReady(k);
  const run = await runInUml(path.join(__dirname, 'scripts', 'global-oom.js'), [], { kernel: k, memMb: 256, timeoutMs: 300_000 });
  const { get, results: r, tail } = resultsByCheck<Rec>(run);
  assert.equal(r.get('error'), undefined, JSON.stringify(r.get('error')));
  assert.equal(run.exitCode, 0, tail);
  assert.deepEqual(umlProcesses(run.umid), []);
  const g = get('global-oom');
  t.diagnostic(`${run.kernel}: ${g.alert?.summary}; kmsg: ${JSON.stringify(g.kmsg)}`);
  assert.equal(g.killed, 'SIGKILL');
  assert.ok(g.kmsg.some((m: string) => /constraint=CONSTRAINT_NONE/.test(m) && /global_oom/.test(m)), 'not a global OOM');
  assert.equal(g.daemonAlive, true);
  assert.ok(g.alert, 'no alert for the global OOM kill');
  assert.equal(g.alert.limitScope, 'node');
  assert.equal(g.alert.container.cgroupPath, '/');
  assert.equal(g.alert.container.id, g.id, 'the alert does not name the container');
  assert.equal(g.alert.victim?.comm, 'memhog');
  assert.match(g.alert.summary, /no container limit was hit/);
  assert.ok(g.resolved, 'no resolution');
  assert.equal(get('cleanup').gone, true);
});
