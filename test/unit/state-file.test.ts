import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { WrittenStore } from '../../src/policy/written-store';
import { StateFile } from '../../src/state/state-file';

function tmp(t: { after(fn: () => void): void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-state-file-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

test('written-pids-max.json of the previous format (a bare object, no version) is read; it is written back with its version', (t) => {
  const dir = tmp(t);
  const file = path.join(dir, 'written-pids-max.json');
  fs.writeFileSync(file, JSON.stringify({ '/docker/abc': 6144, '/kubepods/pod1/def': 8192, bogus: 1 }));
  const messages: string[] = [];
  const s = new WrittenStore(dir, (m) => messages.push(m));
  assert.deepEqual(Object.fromEntries(s), { '/docker/abc': 6144, '/kubepods/pod1/def': 8192 });
  assert.deepEqual(messages, []);
  s.set('/docker/ghi', 10240);
  s.flush();
  assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), { version: 2, written: { '/docker/abc': 6144, '/kubepods/pod1/def': 8192, '/docker/ghi': 10240 } });
  assert.deepEqual(Object.fromEntries(new WrittenStore(dir)), Object.fromEntries(s), 'the new format reads back');
});

test('a state file from a newer cgwatchdog, or not JSON, is refused with its path; the store starts empty and says so', (t) => {
  const dir = tmp(t);
  const file = path.join(dir, 'written-pids-max.json');
  fs.writeFileSync(file, JSON.stringify({ version: 99, written: {} }));
  const messages: string[] = [];
  assert.equal(new WrittenStore(dir, (m) => messages.push(m)).size, 0);
  assert.match(messages[0]!, /written-pids-max\.json has format version 99, newer than this cgwatchdog's 2/);
  fs.writeFileSync(file, '{"ver');
  const f = new StateFile(dir, 'written-pids-max.json', 2, () => ({}));
  assert.throws(() => f.read(), /written-pids-max\.json is not JSON/);
  assert.equal(new StateFile(dir, 'absent.json', 1, () => ({})).read(), null);
});
