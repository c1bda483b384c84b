import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { need } from '../helpers/prereq';
import { inInitialPidNamespace, raisePidMax, readPidMax, readThreadsMax } from '../../src/kernel/sysctl';

/** A fake proc root holding sys/kernel/pid_max and threads-max, like node_exporter's fixtures. */
function procRoot(t: TestContext, pidMax: string, threadsMax = '192730\n'): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-proc-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  fs.mkdirSync(path.join(root, 'sys/kernel'), { recursive: true });
  fs.writeFileSync(path.join(root, 'sys/kernel/pid_max'), pidMax);
  fs.writeFileSync(path.join(root, 'sys/kernel/threads-max'), threadsMax);
  return root;
}

const pidMaxFile = (root: string) => fs.readFileSync(path.join(root, 'sys/kernel/pid_max'), 'utf8');

test('reads pid_max and threads-max', (t) => {
  const root = procRoot(t, '32768\n');
  assert.equal(readPidMax(root), 32768);
  assert.equal(readThreadsMax(root), 192730);
});

test('raises pid_max to the target', (t) => {
  const root = procRoot(t, '32768\n');
  const r = raisePidMax({ procRoot: root, target: 4194304, persist: false });
  assert.deepEqual(r, { before: 32768, after: 4194304, changed: true, persisted: false });
  assert.equal(pidMaxFile(root).trim(), '4194304');
});

test('never lowers pid_max', (t) => {
  const root = procRoot(t, '4194304\n');
  const r = raisePidMax({ procRoot: root, target: 65536, persist: false });
  assert.deepEqual(r, { before: 4194304, after: 4194304, changed: false, persisted: false });
  assert.equal(pidMaxFile(root), '4194304\n', 'the file is not rewritten');
});

test('persists a sysctl.d drop-in atomically, with the value and why', (t) => {
  const root = procRoot(t, '32768\n');
  const dropIn = path.join(root, 'etc-sysctl.d', '60-cgwatchdog.conf');
  fs.mkdirSync(path.dirname(dropIn));
  fs.writeFileSync(dropIn, 'kernel.pid_max = 1\n');
  const r = raisePidMax({ procRoot: root, target: 131072, persist: true, dropInPath: dropIn });
  assert.equal(r.persisted, true);
  const text = fs.readFileSync(dropIn, 'utf8');
  assert.match(text, /^kernel\.pid_max = 131072$/m);
  assert.match(text, /^# /, 'starts with a comment');
  assert.deepEqual(fs.readdirSync(path.dirname(dropIn)), ['60-cgwatchdog.conf'], 'no temp file left behind');
});

test('the drop-in keeps a higher value already in force', (t) => {
  const root = procRoot(t, '262144\n');
  const dropIn = path.join(root, 'pid.conf');
  raisePidMax({ procRoot: root, target: 131072, persist: true, dropInPath: dropIn });
  assert.match(fs.readFileSync(dropIn, 'utf8'), /^kernel\.pid_max = 262144$/m);
});

test('errors name the path', (t) => {
  const root = procRoot(t, 'garbage\n');
  assert.throws(() => readPidMax(root), new RegExp(`${path.join(root, 'sys/kernel/pid_max')}: expected a positive integer`));
  assert.throws(() => readThreadsMax('/nonexistent'), /cannot read \/nonexistent\/sys\/kernel\/threads-max/);
  const ok = procRoot(t, '32768\n');
  assert.throws(
    () => raisePidMax({ procRoot: ok, target: 65536, persist: true, dropInPath: '/nonexistent/dir/x.conf' }),
    /cannot write \/nonexistent\/dir\/x\.conf: ENOENT/,
  );
  assert.throws(() => raisePidMax({ procRoot: ok, target: 65536, persist: true }), /no drop-in path/);
  assert.throws(() => raisePidMax({ procRoot: ok, target: 0, persist: false }), /positive integer/);
});

test('a read-only pid_max gives the privileged hint', (t) => {
  const root = procRoot(t, '32768\n');
  const file = path.join(root, 'sys/kernel/pid_max');
  let immutable = false;
  if (process.getuid?.() === 0) {
    // Root ignores file modes; an immutable file refuses root too (EPERM), as a read-only
    // /proc/sys refuses with EROFS/EACCES.
    immutable = spawnSync('chattr', ['+i', file]).status === 0;
    need(immutable, 'chattr +i on the temp directory (e2fsprogs, ext4/tmpfs)');
  } else {
    fs.chmodSync(file, 0o444);
  }
  try {
    assert.throws(
      () => raisePidMax({ procRoot: root, target: 65536, persist: false }),
      (err: Error) => err.message === `cannot write ${file}: read-only (is /proc/sys mounted read-only? run privileged)`,
    );
  } finally {
    // Before the temp tree is removed, which an immutable file would stop.
    if (immutable) spawnSync('chattr', ['-i', file]);
  }
  assert.equal(readPidMax(root), 32768);
});

test('PID namespace: the fake root has no ns link, so it cannot tell and adds no note', (t) => {
  const root = procRoot(t, '32768\n');
  assert.equal(inInitialPidNamespace(root), null);
  assert.equal(raisePidMax({ procRoot: root, target: 40000, persist: false }).note, undefined);
});

test('PID namespace: a namespace other than the initial one gives the hostPID note', (t) => {
  const root = procRoot(t, '32768\n');
  fs.mkdirSync(path.join(root, 'self/ns'), { recursive: true });
  fs.symlinkSync('pid:[4026532210]', path.join(root, 'self/ns/pid'));
  assert.equal(inInitialPidNamespace(root), false);
  const r = raisePidMax({ procRoot: root, target: 40000, persist: false });
  assert.equal(r.note, "not in the host's PID namespace: pid_max written here applies to this namespace only; run with hostPID");
  fs.unlinkSync(path.join(root, 'self/ns/pid'));
  fs.symlinkSync('pid:[4026531836]', path.join(root, 'self/ns/pid'));
  assert.equal(inInitialPidNamespace(root), true);
});
