import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { inInitialPidNamespace, raisePidMax, readPidMax, readThreadsMax } from '../../src/kernel/sysctl';
import { pidMaxBaseWithHeadroom } from '../helpers/pid-max';
import { isRoot, need } from '../helpers/prereq';

const FILE = '/proc/sys/kernel/pid_max';

test('raises the host kernel.pid_max and puts it back', (t) => {
  need(isRoot() && fs.existsSync(FILE), 'root and /proc/sys/kernel/pid_max');
  // Restored with a plain write: raisePidMax never lowers, which is the point.
  const original = pidMaxBaseWithHeadroom(1024, (restore) => t.after(restore));
  assert.equal(readPidMax('/proc'), original);
  assert.ok(readThreadsMax('/proc') > 0);
  assert.equal(inInitialPidNamespace('/proc'), true, "this host's tests run in the initial PID namespace");

  const target = original + 1024;
  const r = raisePidMax({ procRoot: '/proc', target, persist: false });
  assert.deepEqual(r, { before: original, after: target, changed: true, persisted: false });
  assert.equal(fs.readFileSync(FILE, 'utf8').trim(), String(target), 'the kernel holds the new value');

  const again = raisePidMax({ procRoot: '/proc', target: original, persist: false });
  assert.deepEqual(again, { before: target, after: target, changed: false, persisted: false }, 'a lower target leaves it alone');
});
