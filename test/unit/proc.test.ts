import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { countCpuList } from '../../src/cgroup/parsers';
import { countHostTasks, hostCores, readComm, topCommands } from '../../src/kernel/proc';

function fakeProc(t: TestContext, comms: Record<number, string>, loadavg = '0.47 0.27 0.12 1/146 7567\n'): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-proc-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  fs.writeFileSync(path.join(root, 'loadavg'), loadavg);
  for (const [tid, comm] of Object.entries(comms)) {
    fs.mkdirSync(path.join(root, tid));
    fs.writeFileSync(path.join(root, tid, 'comm'), comm + '\n');
  }
  return root;
}

test('countHostTasks takes the total from /proc/loadavg', (t) => {
  assert.equal(countHostTasks(fakeProc(t, {})), 146);
  const bad = fakeProc(t, {}, 'nonsense\n');
  assert.throws(() => countHostTasks(bad), /loadavg: expected "l1 l5 l15 running\/total last_pid"/);
});

test('countHostTasks on this host is close to the thread count from /proc/*/task', () => {
  let threads = 0;
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      threads += fs.readdirSync(`/proc/${e}/task`).length;
    } catch {
      /* exited */
    }
  }
  const total = countHostTasks('/proc');
  assert.ok(Math.abs(total - threads) <= 20, `loadavg says ${total}, /proc/*/task says ${threads}`);
});

test('readComm: the name, or null for a task that is gone', (t) => {
  const root = fakeProc(t, { 7: 'kworker/0:1' });
  assert.equal(readComm(root, 7), 'kworker/0:1');
  assert.equal(readComm(root, 8), null);
  assert.equal(readComm('/proc', process.pid), 'node');
});

test('topCommands counts tasks per command, most first, skipping tasks that are gone', (t) => {
  const root = fakeProc(t, { 1: 'java', 2: 'java', 3: 'C2 CompilerThre', 4: 'java', 5: 'sh', 6: 'bash', 7: 'bash' });
  assert.deepEqual(topCommands(root, [1, 2, 3, 4, 5, 6, 7, 99], 3), [
    { comm: 'java', tasks: 3 },
    { comm: 'bash', tasks: 2 },
    { comm: 'C2 CompilerThre', tasks: 1 },
  ]);
  assert.deepEqual(topCommands(root, [], 3), []);
});

test('topCommands on this host sees its own threads', () => {
  const tids = fs.readdirSync(`/proc/${process.pid}/task`).map(Number);
  const top = topCommands('/proc', tids, 10);
  assert.equal(top.reduce((s, c) => s + c.tasks, 0), tids.length);
  assert.ok(top.some((c) => c.comm === 'node'));
});

test('hostCores counts the online CPUs', () => {
  const online = fs.readFileSync('/sys/devices/system/cpu/online', 'utf8');
  assert.equal(hostCores(), countCpuList(online));
  assert.equal(hostCores('/nonexistent'), os.availableParallelism());
});
