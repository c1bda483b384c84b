/**
 * Never silent on a real cgroup v2 kernel (user-mode Linux): a hit inside a container's own
 * sub-cgroup, an OOM kill whose cgroup is removed at once. test/uml/scripts/never-silent-v2.ts
 * does the work inside; the alerts are read from the daemon's log.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { need } from '../helpers/prereq';
import { resultsByCheck, runInUml, umlAvailable, umlProcesses } from '../helpers/uml';

type Rec = Record<string, any>;

test('cgroup v2 (UML): sub-cgroup hits are the container\'s, and an OOM-killed container removed at once is still alerted', async (t) => {
  need(umlAvailable(), 'user-mode-linux (linux.uml): apt-get install -y user-mode-linux');
  const run = await runInUml(path.join(__dirname, 'scripts', 'never-silent-v2.js'), [], { timeoutMs: 120_000 });
  t.diagnostic(`boot+run ${run.durationMs} ms, kernel ${run.kernel}`);
  const { get, results: r, tail } = resultsByCheck<Rec>(run);
  assert.equal(r.get('error'), undefined, JSON.stringify(r.get('error')));
  assert.equal(run.exitCode, 0, tail);
  assert.deepEqual(umlProcesses(run.umid), []);

  const s = get('sub-cgroup');
  t.diagnostic(`sub-cgroup: first alert ${s.firstMs} ms after the forks; ${s.first?.container?.cgroupPath}; pids.events sub: ${JSON.stringify(s.subEvents)}, container: ${JSON.stringify(s.containerEvents)}`);
  assert.ok(s.first, `no pids-max alert for a hit in the sub-cgroup; kmsg: ${JSON.stringify(s.kmsg)}; daemon: ${JSON.stringify(s.log)}`);
  assert.equal(s.first.container.id, s.id);
  assert.equal(s.first.container.cgroupPath, s.sub);
  assert.equal(s.first.limitScope, 'sub-cgroup');
  assert.equal(s.first.severity, 'warning');
  assert.ok(s.firstMs < 1000, `first alert after ${s.firstMs} ms`);
  assert.ok(s.update, 'later rejections in the sub-cgroup were not counted');
  assert.ok(s.update.counters.eventsTotal > s.first.counters.eventsTotal);

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
