/**
 * The state directory across an upgrade and a downgrade of one version, with real files: a
 * file of the NEXT format (what a later release writes) is neither read by guess nor lost, and
 * the next format's reader takes what this one writes instead.
 */
import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Outbox } from '../../src/alerts/outbox';
import { WrittenStore } from '../../src/policy/written-store';
import { NewerFormatError, StateFile } from '../../src/state/state-file';

function tmp(t: { after(fn: () => void): void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-state-compat-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** What the next release's written-pids-max.json reader would be: format 3, reading 2 too. */
const nextRelease = (dir: string) =>
  new StateFile<{ written: Record<string, number>; origin?: Record<string, string> }>(dir, 'written-pids-max.json', 3, (d, v) =>
    v === 2 || v === 3 ? { written: d.written as Record<string, number>, origin: d.origin as Record<string, string> | undefined } : null,
  );

test('downgrade: a written-pids-max.json of the next format is not read, warned about once by name, kept aside at the first save; the next format reads ours back', (t) => {
  const dir = tmp(t);
  const file = path.join(dir, 'written-pids-max.json');
  nextRelease(dir).write({ written: { '/docker/abc': 6144 }, origin: { '/docker/abc': 'hook' } });
  const newer = fs.readFileSync(file, 'utf8');

  const messages: string[] = [];
  const s = new WrittenStore(dir, (m) => messages.push(m));
  assert.equal(s.size, 0, 'read by guess');
  assert.equal(messages.length, 1);
  assert.equal(messages[0], `${file} has format version 3, newer than this cgwatchdog's 2 (written by a later release): not read, starting without it; it is kept as ${file}.v3 at the first save`);
  assert.equal(fs.readFileSync(file, 'utf8'), newer, 'touched before anything had to be saved');

  s.set('/docker/def', 8192);
  s.flush();
  assert.equal(fs.readFileSync(`${file}.v3`, 'utf8'), newer, 'the newer file was not kept whole');
  assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { version: 2, written: { '/docker/def': 8192 } });
  s.set('/docker/ghi', 1024);
  s.flush();
  assert.equal(fs.readFileSync(`${file}.v3`, 'utf8'), newer, 'a later save touched the kept file');
  assert.equal(messages.length, 1, `more warnings: ${messages.join(' | ')}`);

  // Upgrade again: the next release migrates what this one wrote.
  assert.deepEqual(nextRelease(dir).read(), { written: { '/docker/def': 8192, '/docker/ghi': 1024 }, origin: undefined });
});

test('upgrade: every older format is read (written-pids-max.json before versions, 1 -> 2); a newer StateFile error is a NewerFormatError', (t) => {
  const dir = tmp(t);
  const file = path.join(dir, 'written-pids-max.json');
  fs.writeFileSync(file, JSON.stringify({ '/docker/abc': 6144 }));
  const messages: string[] = [];
  assert.deepEqual(Object.fromEntries(new WrittenStore(dir, (m) => messages.push(m))), { '/docker/abc': 6144 });
  assert.deepEqual(messages, []);
  const f = new StateFile(dir, 'alert-state.json', 1, (d, v) => (v === 1 ? { alerts: d.alerts } : null));
  fs.writeFileSync(path.join(dir, 'alert-state.json'), JSON.stringify({ version: 2, alerts: [], silences: [] }));
  assert.throws(() => f.read(), (err: Error) => err instanceof NewerFormatError && /alert-state\.json has format version 2, newer than this cgwatchdog's 1/.test(err.message));
  // A save without a read first (nothing found newer) just writes.
  new StateFile(dir, 'other.json', 1, () => ({})).write({});
  assert.equal(fs.existsSync(path.join(dir, 'other.json.v2')), false);
});

test('downgrade: outbox entries of the next format are delivered by the fields this version knows, one warning; those without them are moved aside, not deleted', async (t) => {
  const dir = tmp(t);
  const sinkDir = path.join(dir, 'hook');
  fs.mkdirSync(sinkDir, { recursive: true });
  const alert = {
    fingerprint: 'fp1', idempotencyKey: 'fp1-1-x', sequence: 1, state: 'firing', kind: 'pids-max', severity: 'critical', host: 'h',
    summary: 's', container: { cgroupPath: '/docker/a' }, counters: { eventsSinceLast: 1, eventsTotal: 1 }, startsAt: 'x', updatedAt: 'x',
    limitScope: 'container', identity: {}, sources: ['kmsg'], newField: { from: 'the next release' },
  };
  fs.writeFileSync(path.join(sinkDir, '0000000000000001.json'), JSON.stringify({ v: 2, sink: 'hook', seq: 1, enqueuedAt: Date.now(), alert, priority: 3 }));
  fs.writeFileSync(path.join(sinkDir, '0000000000000002.json'), JSON.stringify({ v: 2, sink: 'hook', seq: 2, enqueuedAt: Date.now(), payload: 'moved elsewhere' }));
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) });
  const ob = await Outbox.open({ dir, maxEntries: 10, log });
  t.after(() => ob.close());
  const e = ob.peek('hook');
  assert.equal(e?.alert.idempotencyKey, 'fp1-1-x');
  assert.deepEqual((e?.alert as unknown as { newField: unknown }).newField, { from: 'the next release' }, 'the fields it does not know are sent on as they are');
  assert.equal(ob.depth('hook'), 1);
  const warned = lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('written by a later cgwatchdog'));
  assert.equal(warned.length, 1, JSON.stringify(lines));
  assert.equal(warned[0]!.msg, `outbox: 2 entries were written by a later cgwatchdog (format 2): delivered with the fields this version knows; 1 without them moved to ${path.join(dir, 'corrupt')}, not deleted`);
  const aside = fs.readdirSync(path.join(dir, 'corrupt'));
  assert.equal(aside.length, 1);
  assert.match(fs.readFileSync(path.join(dir, 'corrupt', aside[0]!), 'utf8'), /moved elsewhere/);
});
