/**
 * The real daemon after a downgrade of one version: its state directory holds what the next
 * release wrote (written-pids-max.json format 3, alert-state.json format 2, an outbox entry of
 * format 2). It starts, says once per file what it does, delivers the entry it can read, and
 * keeps the newer files aside instead of overwriting them; started again, it reads its own.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startWebhookReceiver } from '../helpers/daemon';
import { config, daemon, defer, hex64, isMsg, makeContainer, ready, stateDir, testRoot, waitPidsMax } from '../helpers/v1-daemon';

test('downgrade: newer state files are warned about by name, not overwritten (kept aside at the first save), a newer outbox entry delivered; the next start is quiet', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  const hook = await startWebhookReceiver();
  defer(t, () => hook.close());
  const state = stateDir(t);
  const written = path.join(state, 'written-pids-max.json');
  const alertState = path.join(state, 'alert-state.json');
  fs.writeFileSync(written, JSON.stringify({ version: 3, written: { [rel]: 6144 }, origin: { [rel]: 'hook' } }));
  fs.writeFileSync(alertState, JSON.stringify({ version: 2, alerts: [], silences: [{ id: 1 }] }));
  const entryDir = path.join(state, 'outbox', 'hook');
  fs.mkdirSync(entryDir, { recursive: true });
  const alert = {
    fingerprint: 'fpnewer', idempotencyKey: `fpnewer-1-${Date.now()}`, sequence: 1, state: 'firing', kind: 'pids-max', severity: 'critical', host: 'h',
    summary: 'from the next release', container: { cgroupPath: rel }, counters: { eventsSinceLast: 1, eventsTotal: 1 }, startsAt: new Date().toISOString(),
    updatedAt: new Date().toISOString(), limitScope: 'container', identity: {}, sources: ['kmsg'], newField: 1,
  };
  fs.writeFileSync(path.join(entryDir, '0000000000000007.json'), JSON.stringify({ v: 2, sink: 'hook', seq: 7, enqueuedAt: Date.now(), alert }));
  const before = { written: fs.readFileSync(written, 'utf8'), alertState: fs.readFileSync(alertState, 'utf8') };

  const cfg = await config(root, state, { alerts: { sinks: [{ type: 'webhook', name: 'hook', url: hook.url }] } });
  const d = await daemon(t, cfg);
  assert.notEqual(await waitPidsMax(rel, '6144', 5000), null);
  const got = await hook.waitFor((r) => r.alert?.idempotencyKey === alert.idempotencyKey, 5000);
  assert.equal(got.alert.newField, 1);
  const warnings = d.logs.filter((l) => l.level === 40).map((l) => `${l.msg} ${l.err ?? ''}`);
  t.diagnostic(`warnings:\n${warnings.join('\n')}`);
  const about = (name: string) => warnings.filter((w) => w.includes(name));
  assert.equal(about('written-pids-max.json').length, 1);
  assert.match(about('written-pids-max.json')[0]!, /format version 3, newer than this cgwatchdog's 2 .*kept as .*written-pids-max\.json\.v3/);
  assert.equal(about('alert-state.json').length, 1);
  assert.match(about('alert-state.json')[0]!, /alerts start afresh .*alert-state\.json has format version 2, newer than this cgwatchdog's 1/);
  assert.equal(warnings.filter((w) => w.includes('written by a later cgwatchdog')).length, 1);
  assert.equal(d.proc.exitCode, null);
  await d.stop();

  assert.equal(fs.readFileSync(`${written}.v3`, 'utf8'), before.written);
  assert.equal(fs.readFileSync(`${alertState}.v2`, 'utf8'), before.alertState);
  assert.equal(JSON.parse(fs.readFileSync(written, 'utf8')).version, 2);
  assert.equal(JSON.parse(fs.readFileSync(alertState, 'utf8')).version, 1);

  const again = await daemon(t, cfg);
  await again.waitForLog(isMsg('initial reconcile done'), 10_000);
  const later = again.logs.filter((l) => (l.level ?? 0) >= 40 && /newer|later cgwatchdog/.test(`${l.msg} ${l.err ?? ''}`));
  assert.deepEqual(later, []);
  assert.deepEqual(fs.readdirSync(state).filter((n) => /\.v\d+$/.test(n)).sort(), ['alert-state.json.v2', 'written-pids-max.json.v3']);
});
