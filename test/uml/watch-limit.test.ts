/**
 * fs.inotify.max_user_watches reached while container parents appear, in a real cgroup v2
 * kernel (user-mode Linux: the knob is the guest's own, the host's is never touched).
 * test/uml/scripts/watch-limit.ts does the work inside.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { need } from '../helpers/prereq';
import { resultsByCheck, runInUml, kernelReady, umlProcesses, UML_KERNELS } from '../helpers/uml';

type Rec = Record<string, any>;

for (const k of UML_KERNELS) test(`the inotify watch limit: the daemon never crashes, says so once, rescans what it cannot watch, and resumes when room comes back [${k.suite}]`, async (t) => {
  kernelReady(k);
  const run = await runInUml(path.join(__dirname, 'scripts', 'watch-limit.js'), [], { kernel: k, timeoutMs: 150_000 });
  const { get, results: r, tail } = resultsByCheck<Rec>(run);
  assert.equal(r.get('error'), undefined, JSON.stringify(r.get('error')));
  assert.equal(run.exitCode, 0, tail);
  assert.deepEqual(umlProcesses(run.umid), []);
  assert.equal(get('setup').started, true, `no "detection running" within 30 s: ${JSON.stringify(get('setup'))}`);

  const limited = get('limited');
  t.diagnostic(`at the limit: container under an unwatched parent limited after ${limited.lateMs} ms; ${limited.warnings} warning line(s)`);
  assert.equal(limited.alive, true, `the daemon died at the watch limit: ${limited.stderr}`);
  assert.deepEqual(limited.warned, { code: 'ENOSPC', hint: 'fs.inotify.max_user_watches is reached' });
  assert.equal(limited.warnings, 1, 'logged once, not once per refused watch');
  assert.ok(limited.lateMs !== null && limited.lateMs < 5000, `a container under an unwatched parent waited ${limited.lateMs} ms`);

  const raised = get('raised');
  t.diagnostic(`limit raised again: a new container limited after ${raised.freshMs} ms`);
  assert.equal(raised.recovered, true, 'watching did not resume');
  assert.equal(raised.alive, true);
  assert.ok(raised.freshMs !== null && raised.freshMs < 1000, `new container after recovery: ${raised.freshMs} ms`);

  const cleanup = get('cleanup');
  assert.equal(cleanup.gone, true);
  assert.equal(cleanup.stop.killed, false, 'the daemon did not stop on SIGTERM');
});
