/**
 * Churn on the host's real v1 cgroups (issue 10): a C generator (bench/tools/churn-gen.c)
 * makes 100 Docker-shaped container cgroups a second for 30 s, each with a process that forks
 * once, and removes each a second later, while the real daemon runs with the shipped
 * defaults. Every one must get its limit (the generator reads pids.max back itself), and
 * afterwards the daemon's fds, inotify watches and every per-container map must be back where
 * they were. Timing is the benchmark's business (npm run bench), not asserted here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { churn } from '../../bench/churn';
import { cleanupNative } from '../../bench/lib/native';
import { ready } from '../helpers/v1-daemon';

test('churn: 100 container cgroups a second for 30 s, none missed, nothing leaked', { timeout: 180_000 }, async (t) => {
  ready();
  t.after(() => cleanupNative());
  const r = await churn({ seconds: 30, log: (l) => t.diagnostic(l) });
  assert.ok(!('skipped' in r), 'skipped' in r ? r.skipped : '');
  if ('skipped' in r) return;
  t.diagnostic(`made ${r.made}, limited ${r.limited}, missed ${r.missed}; mkdir -> limit p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms; daemon CPU ${r.daemonCpuPercent} %`);
  t.diagnostic(`before ${JSON.stringify(r.before)}`);
  t.diagnostic(`after  ${JSON.stringify(r.after)}`);
  assert.equal(r.made, 3000);
  assert.equal(r.missed, 0, 'cgroups never limited');
  assert.equal(r.limited, r.made);
  assert.equal(r.removed, r.made);
  assert.deepEqual(r.leaks, [], 'state not back to where it started');
});
