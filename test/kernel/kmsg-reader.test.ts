import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { KmsgReader } from '../../src/kernel/kmsg-reader';
import { classifyKmsg, type KmsgRecord } from '../../src/kernel/kmsg-parser';
import { isRoot, need } from '../helpers/prereq';

const PIDS_ROOT = '/sys/fs/cgroup/pids';

function kmsgReady(): void {
  let readable = false;
  try {
    fs.closeSync(fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK));
    readable = true;
  } catch {
    /* reported below */
  }
  need(isRoot() && readable, 'root and a readable /dev/kmsg');
}

/** A record written to /dev/kmsg by root lands in the ring buffer like a kernel message. */
function writeKmsg(text: string): void {
  fs.writeFileSync('/dev/kmsg', text + '\n');
}

function collect(reader: KmsgReader): { records: Array<{ record: KmsgRecord; at: bigint }>; waitFor: (pred: (r: KmsgRecord) => boolean, ms: number) => Promise<KmsgRecord> } {
  const records: Array<{ record: KmsgRecord; at: bigint }> = [];
  const waiters: Array<() => void> = [];
  reader.on('record', (record, at) => {
    records.push({ record, at });
    for (const w of waiters.splice(0)) w();
  });
  const waitFor = (pred: (r: KmsgRecord) => boolean, ms: number): Promise<KmsgRecord> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching record within ${ms} ms`)), ms);
      const check = (): void => {
        const hit = records.find((r) => pred(r.record));
        if (hit) {
          clearTimeout(timer);
          resolve(hit.record);
        } else waiters.push(check);
      };
      check();
    });
  return { records, waitFor };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const mode of ['follow', 'poll'] as const) {
test(`${mode} mode: a record written to /dev/kmsg arrives once, within 100 ms, and the old log is not replayed`, async (t) => {
  kmsgReady();
  const tag = randomBytes(6).toString('hex');
  const before = `cgwd-test-before-${tag}`;
  const after = `cgwd-test-after-${tag}`;
  writeKmsg(before);

  const reader = new KmsgReader({ mode });
  t.after(() => reader.stop());
  const { records, waitFor } = collect(reader);
  reader.start();
  await reader.whenReady();
  const startSeq = reader.lastSeq;
  assert.ok(startSeq !== null && startSeq > 0, 'start() learns the last sequence number');

  const sent = process.hrtime.bigint();
  writeKmsg(after);
  const rec = await waitFor((r) => r.message === after, 1000);
  const hit = records.find((r) => r.record === rec)!;
  const latencyMs = Number(hit.at - sent) / 1e6;
  t.diagnostic(`write-to-receive latency: ${latencyMs.toFixed(2)} ms (${mode} mode)`);
  assert.ok(latencyMs < 500, `latency ${latencyMs} ms`);

  await sleep(3 * reader.pollIntervalMs);
  assert.equal(records.filter((r) => r.record.message === after).length, 1, 'the marker arrives exactly once');
  assert.equal(records.filter((r) => r.record.message === before).length, 0, 'a record from before start() is not replayed');
  for (const r of records) assert.ok(r.record.seq > startSeq, `record ${r.record.seq} is from before start() (${startSeq})`);
  assert.equal(reader.lost, 0);
});
}

test('stop() ends reading at once and does not hold the process open', async (t) => {
  kmsgReady();
  // A child process runs a reader, stops it and lets the event loop run dry: it must exit by
  // itself, with nothing written to /dev/kmsg to wake a parked read.
  const modulePath = path.resolve(__dirname, '../../src/kernel/kmsg-reader.js');
  const script = `
    const { KmsgReader } = require(${JSON.stringify(modulePath)});
    const r = new KmsgReader();
    r.on('record', () => {});
    r.start();
    setTimeout(() => { const t0 = process.hrtime.bigint(); r.stop(); console.log(Number(process.hrtime.bigint() - t0) / 1e6); }, 200);
  `;
  const t0 = Date.now();
  const res = spawnSync(process.execPath, ['-e', script], { timeout: 5000, encoding: 'utf8' });
  const tookMs = Date.now() - t0;
  assert.equal(res.error, undefined, `child did not exit by itself: ${res.error?.message}`);
  assert.equal(res.status, 0, res.stderr);
  t.diagnostic(`stop() took ${Number(res.stdout.trim()).toFixed(3)} ms; child exited after ${tookMs} ms`);
  assert.ok(tookMs < 3000);
});

test('a real fork rejected by a v1 pids cgroup is reported with that cgroup', async (t) => {
  kmsgReady();
  need(fs.existsSync(path.join(PIDS_ROOT, 'tasks')), 'the v1 pids hierarchy at /sys/fs/cgroup/pids');
  const rel = `/cgwd-test-${randomBytes(6).toString('hex')}`;
  const dir = path.join(PIDS_ROOT, rel);

  // A Node child that forks only when told, so it can be moved into the cgroup first. Node
  // already has more threads than pids.max allows; attaching is not limited, forking is.
  const child = spawn(
    process.execPath,
    ['-e', `process.stdin.once('data', () => { for (let i = 0; i < 3; i++) require('child_process').spawn('/bin/sleep', ['30']).on('error', () => {}); });`],
    { stdio: ['pipe', 'ignore', 'ignore'] },
  );
  t.after(async () => {
    for (let i = 0; i < 250; i++) {
      let pids: number[] = [];
      try {
        pids = fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
      } catch {
        /* not created */
      }
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      try {
        fs.rmdirSync(dir);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      }
      await sleep(20);
    }
    throw new Error(`could not remove ${dir}`);
  });
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'pids.max'), '5');
  fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(child.pid));

  const reader = new KmsgReader();
  t.after(() => reader.stop());
  const { waitFor } = collect(reader);
  reader.start();

  const sent = process.hrtime.bigint();
  child.stdin!.write('go\n');
  const rec = await waitFor((r) => {
    const ev = classifyKmsg(r.message);
    return ev?.type === 'fork-rejected' && ev.cgroup === rel;
  }, 2000);
  t.diagnostic(`fork-rejected seen ${(Number(process.hrtime.bigint() - sent) / 1e6).toFixed(2)} ms after the child was told to fork`);
  assert.deepEqual(classifyKmsg(rec.message), { type: 'fork-rejected', cgroup: rel });
  const max = /^max (\d+)$/m.exec(fs.readFileSync(path.join(dir, 'pids.events'), 'utf8'));
  assert.ok(max && Number(max[1]) >= 1, 'pids.events counts the rejection');
});

/** A named pipe in a temp dir, removed afterwards. */
function fifo(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-kmsg-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const p = path.join(dir, 'kmsg');
  const res = spawnSync('mkfifo', [p]);
  need(res.status === 0, 'mkfifo (coreutils)');
  return p;
}

test('FIFO: several records in one read, a record split across writes, continuation lines and garbage', async (t) => {
  const p = fifo(t);
  const reader = new KmsgReader({ path: p, pollIntervalMs: 5 });
  t.after(() => reader.stop());
  const { records, waitFor } = collect(reader);
  const unparsed: string[] = [];
  reader.on('unparsed', (l) => unparsed.push(l));
  reader.start();
  const w = fs.openSync(p, 'w');
  t.after(() => fs.closeSync(w));

  fs.writeSync(w, '6,10,100,-;first\n SUBSYSTEM=net\n6,11,200,-;second\nnot a record\n6,12,3');
  await sleep(30);
  fs.writeSync(w, '00,-;cgroup: fork rejected by pids controller in /x\n');
  await waitFor((r) => r.seq === 12, 1000);
  assert.deepEqual(
    records.map((r) => [r.record.seq, r.record.message]),
    [
      [10, 'first'],
      [11, 'second'],
      [12, 'cgroup: fork rejected by pids controller in /x'],
    ],
  );
  assert.deepEqual(unparsed, ['not a record']);
});

test('FIFO: a sequence gap is reported as lost records', async (t) => {
  const p = fifo(t);
  const reader = new KmsgReader({ path: p, pollIntervalMs: 5 });
  t.after(() => reader.stop());
  const { waitFor } = collect(reader);
  const gaps: number[] = [];
  reader.on('wrapped', (n) => gaps.push(n));
  reader.start();
  const w = fs.openSync(p, 'w');
  t.after(() => fs.closeSync(w));
  fs.writeSync(w, '6,1,1,-;a\n6,2,2,-;b\n6,7,3,-;c\n6,7,3,-;c again\n');
  await waitFor((r) => r.seq === 7, 1000);
  await sleep(20);
  assert.deepEqual(gaps, [4]);
  assert.equal(reader.lost, 4);
});

test('start() on a missing path names it', () => {
  const reader = new KmsgReader({ path: '/nonexistent/kmsg' });
  assert.throws(() => reader.start(), /cannot open \/nonexistent\/kmsg for reading: ENOENT/);
  assert.equal(reader.running, false);
});
