/**
 * Detection on cgroup v1 in real kernels: user-mode Linux with the pids and memory
 * controllers mounted as v1 hierarchies (test/uml/scripts/detect-v1.ts), on every kernel of
 * the matrix. 6.1 and 6.12 notify v1 pids.events through inotify, the newest does not
 * (measured by the capability probe, not assumed here): the alerts arrive either way, and a
 * rejection after the first (which v1 kmsg never logs) is found by the counters.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { kernelReady, resultsByCheck, runInUml, umlProcesses, UML_KERNELS } from '../helpers/uml';

type Rec = Record<string, any>;

for (const k of UML_KERNELS) test(`cgroup v1 in UML [${k.suite}]: a fork loop, a rejection kmsg does not log, and (where v1 memcg exists) an OOM kill reach the webhook`, async (t) => {
  kernelReady(k);
  const run = await runInUml(path.join(__dirname, 'scripts', 'detect-v1.js'), [], { kernel: k, timeoutMs: 300_000 });
  t.diagnostic(`boot+run ${run.durationMs} ms, kernel ${run.kernel}`);
  const { get, results: r, tail } = resultsByCheck<Rec>(run);
  assert.equal(r.get('error'), undefined, JSON.stringify(r.get('error')));
  assert.equal(run.timedOut, false, tail);
  assert.equal(run.exitCode, 0, tail);
  assert.deepEqual(umlProcesses(run.umid), []);
  assert.equal(get('cleanup').gone, true);

  const start = get('daemon-start');
  assert.equal(start.starting?.cgroup, 'v1', JSON.stringify(start.starting));
  assert.equal(start.pidsMax, '8', 'the daemon set the override on the v1 pids cgroup');
  const caps = start.signals?.capabilities ?? start.signals;
  t.diagnostic(`${run.kernel} v1 signals: ${JSON.stringify(start.signals)}`);

  const p = get('pids');
  const again = get('pids-again');
  const m = r.get('memory') ?? {};
  t.diagnostic(`${run.kernel} v1: first pids-max alert ${p.firstAlertMs?.toFixed(0)} ms (sources ${p.sources}); after resolution one more rejection: alert ${again.againAlertMs?.toFixed(0)} ms (sources ${again.sources}, new kmsg lines ${again.kmsgNewRejections}); oom-kill alert ${m.oomAlertMs?.toFixed(0) ?? '-'} ms (sources ${m.sources ?? '-'})`);
  assert.ok(p.firstAlertMs !== null && p.firstAlertMs < 5000, JSON.stringify(p));
  assert.ok(again.resolved, 'the first alert resolved');
  assert.equal(again.kmsgNewRejections, 0, 'v1 logs only the first rejection of a cgroup');
  // The counters find it: through inotify where this kernel notifies v1 pids.events, else the
  // fast sweep (1 s here; the cgroup joined the fast set at its first kmsg rejection).
  assert.ok(again.againAlertMs !== null && again.againAlertMs < 5000, JSON.stringify(again));
  if (caps?.pidsInotify === 'yes') assert.ok((again.sources as string[]).includes('inotify'), JSON.stringify(again.sources));
  else assert.ok((again.sources as string[]).includes('sweep'), JSON.stringify(again.sources));

  // v1 memcg became optional in 6.11 (CONFIG_MEMCG_V1); bookworm's 6.1 has it for certain.
  const mount = get('mount');
  t.diagnostic(`${run.kernel} v1 hierarchies: ${mount.controllers}${mount.memoryMountError ? ` (memory: ${mount.memoryMountError.split('\n')[0]})` : ''}`);
  if (k.suite === 'bookworm') assert.deepEqual(mount.controllers, ['pids', 'memory']);
  if (mount.controllers.includes('memory')) {
    assert.equal(m.hogSignal, 'SIGKILL');
    // Ours is what follows the kill (the kernel's own time to kill the hog varies in UML).
    assert.ok(m.oomAlertMs !== null && m.oomAlertMs - m.hogExitMs < 4000, JSON.stringify(m));
    assert.equal(m.victim?.comm, 'memhog');
  } else assert.equal(r.get('memory'), undefined);

  const stop = get('daemon-stop');
  assert.equal(stop.code, 0, stop.stderr);
  assert.deepEqual(stop.problems, []);
});
