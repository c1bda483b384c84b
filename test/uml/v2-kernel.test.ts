/**
 * A real cgroup v2 kernel (user-mode Linux 6.1): what a pids and a memory limit hit look like
 * there, and that the UML harness itself is clean (arguments, environment, no leftovers).
 * One boot; the checks run inside in test/uml/scripts/v2-basics.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { need } from '../helpers/prereq';
import { kernelReady, runInUml, umlAvailable, umlProcesses, UML_KERNELS } from '../helpers/uml';

type Rec = Record<string, any>;

for (const k of UML_KERNELS) test(`cgroup v2 kernel in UML: pids and memory limit hits are counted, notified and logged [${k.suite}]`, async (t) => {
  kernelReady(k);
  const script = path.join(__dirname, 'scripts', 'v2-basics.js');
  const run = await runInUml(script, ['alpha', 'with space', ''], {
    kernel: k,
    timeoutMs: 240_000,
    env: { CGWD_TEST_EXTRA: 'x y=z' },
  });
  t.diagnostic(`boot+run ${run.durationMs} ms, kernel ${run.kernel}, controllers [${run.controllers}], enabled [${run.subtreeControl}]`);
  const tail = run.console.slice(-6000);

  // The harness: it ended by itself, left nothing behind.
  assert.equal(run.timedOut, false, tail);
  assert.equal(run.exitCode, 0, tail);
  assert.equal(run.exitOk, true);
  assert.deepEqual(run.leftovers, []);
  assert.deepEqual(umlProcesses(run.umid), []);
  assert.equal(fs.existsSync(run.dir), false, 'temp dir removed');

  const byCheck = new Map<string, Rec>();
  for (const r of run.results as Rec[]) byCheck.set(r.check, r);
  assert.equal(byCheck.get('error'), undefined, JSON.stringify(byCheck.get('error')));
  for (const r of run.results) t.diagnostic(JSON.stringify(r));

  const env = byCheck.get('env');
  assert.ok(env, tail);
  // bookworm's package is 6.1; the others are what their suite serves today (recorded above).
  assert.match(env.release, k.suite === 'bookworm' ? /^6\.1\./ : /^\d+\.\d+/);
  assert.deepEqual(env.argv, ['alpha', 'with space', '']);
  assert.equal(env.cgroupRoot, '/run/cg');
  assert.equal(env.extra, 'x y=z');
  assert.equal(env.cgroup2, true);
  assert.equal(env.tmpIsHost, true, 'the host filesystem is the root');
  assert.match(env.subtreeControl, /\bpids\b/);
  assert.match(env.subtreeControl, /\bmemory\b/);
  assert.ok(run.subtreeControl.includes('pids') && run.subtreeControl.includes('memory'));

  const pids = byCheck.get('pids');
  assert.ok(pids);
  assert.equal(pids.ready, true);
  assert.equal(pids.pidsCurrentAtReady, 5);
  assert.equal(pids.forkFailed, true, pids.shellStderr);
  assert.equal(pids.eventsBefore.max, 0);
  assert.ok(pids.eventsAfter.max >= 1, JSON.stringify(pids.eventsAfter));
  assert.ok(pids.watchEvents.includes('change'), JSON.stringify(pids.watchEvents));
  assert.equal(typeof pids.watchLatencyMs, 'number');
  assert.ok(pids.watchLatencyMs < 2500, `pids.events watch latency ${pids.watchLatencyMs} ms`);
  // pids.events.local came with 6.11: bookworm's 6.1 has none; trixie's 6.12 and sid's have it.
  assert.equal(pids.pidsEventsLocal, k.suite !== 'bookworm', `pids.events.local on ${run.kernel}`);

  const mem = byCheck.get('memory');
  assert.ok(mem);
  assert.equal(mem.ready, true);
  assert.deepEqual(mem.hogExit, { code: null, signal: 'SIGKILL' });
  assert.equal(mem.eventsBefore.oom_kill, 0);
  assert.ok(mem.eventsAfter.oom_kill >= 1, JSON.stringify(mem.eventsAfter));
  assert.ok(mem.eventsAfter.max >= 1);
  assert.ok(mem.watchEvents.includes('change'), JSON.stringify(mem.watchEvents));
  // A callback read oom_kill already up, soon after the hog died.
  assert.equal(typeof mem.watchLatencyMs, 'number', JSON.stringify(mem.watchEventCounters));
  assert.ok(mem.watchAfterExitMs < 2500, `memory.events oom_kill seen ${mem.watchAfterExitMs} ms after the kill`);

  const kmsg = byCheck.get('kmsg');
  assert.ok(kmsg);
  assert.ok(
    kmsg.forkRejected.some((m: string) => m.includes('fork rejected by pids controller in /cgwd-test-a')),
    JSON.stringify(kmsg.forkRejected),
  );
  assert.ok(
    kmsg.oomKill.some((m: string) => /oom_memcg=\/cgwd-test-m\b/.test(m) && m.includes(`pid=${mem.hogPid},`)),
    JSON.stringify(kmsg.oomKill),
  );
  assert.ok(kmsg.killed.some((m: string) => m.includes(`Killed process ${mem.hogPid} `)), JSON.stringify(kmsg.killed));
});

test('UML harness: a failing script reports its exit status', async (t) => {
  need(umlAvailable(), 'user-mode-linux (linux.uml): apt-get install -y user-mode-linux');
  const run = await runInUml(path.join(__dirname, 'scripts', 'v2-basics.js'), ['--exit'], { timeoutMs: 60_000 });
  t.diagnostic(`boot+run ${run.durationMs} ms`);
  assert.equal(run.timedOut, false, run.console.slice(-3000));
  assert.equal(run.exitCode, 3);
  assert.equal(run.exitOk, false);
  assert.deepEqual(run.results, [{ check: 'exit', code: 3 }]);
  assert.deepEqual(run.leftovers, []);
  assert.equal(fs.existsSync(run.dir), false);
});

test('UML harness: a script that never ends is killed at the timeout, with all of UML', async (t) => {
  need(umlAvailable(), 'user-mode-linux (linux.uml): apt-get install -y user-mode-linux');
  const timeoutMs = 15_000;
  const run = await runInUml(path.join(__dirname, 'scripts', 'v2-basics.js'), ['--hang'], { timeoutMs });
  t.diagnostic(`killed after ${run.durationMs} ms`);
  assert.equal(run.timedOut, true);
  assert.equal(run.exitOk, false);
  assert.equal(run.exitCode, null);
  // It had booted and was running the script when it was killed.
  assert.deepEqual(run.results, [{ check: 'hang' }], run.console.slice(-3000));
  assert.ok(run.durationMs >= timeoutMs && run.durationMs < timeoutMs + 5000, String(run.durationMs));
  assert.deepEqual(run.leftovers, []);
  assert.deepEqual(umlProcesses(run.umid), []);
  assert.equal(fs.existsSync(run.dir), false);
});
