/**
 * Runs inside user-mode Linux (cgroup v2), started by bench/detection-latency.ts:
 *   node detect-v2.js <fork-trigger binary> <inotify-floor binary> <samples> [sweep interval ms, default 1000]
 * The real Daemon in-process (kmsg off, so the inotify path is measured alone) watching
 * /cgwd-bench/docker/<id> cgroups with pids.max 1; one trigger process moved from cgroup to
 * cgroup forks once in each; the C inotify floor waits on the same pids.events files.
 * Emits { ours: ms[], floor: ms[], other, timedOut } (trigger -> event hook / floor wake-up).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { LimitEvent } from '../../src/detect/event';
import { cgroupRoot, emit, inUml } from '../../test/uml/in-uml';
import { startInProc } from '../lib/inproc-daemon';
import { LineQueue, onLines } from '../lib/lines';
import { sleep } from '../lib/stats';

async function main(): Promise<void> {
  if (!inUml()) throw new Error('run through bench/detection-latency.ts (user-mode Linux)');
  const [triggerBin, floorBin, samplesArg, sweepArg] = process.argv.slice(2);
  const samples = Number(samplesArg);
  const cg = cgroupRoot();
  const top = '/cgwd-bench';
  const abs = (rel: string): string => path.join(cg, rel);
  fs.mkdirSync(abs(top));
  fs.writeFileSync(path.join(abs(top), 'cgroup.subtree_control'), '+pids +memory');
  fs.mkdirSync(abs(`${top}/docker`));
  fs.writeFileSync(path.join(abs(`${top}/docker`), 'cgroup.subtree_control'), '+pids +memory');
  const park = `${top}/park`;
  fs.mkdirSync(abs(park));
  const rels: string[] = [];
  for (let i = 0; i < samples; i++) {
    const rel = `${top}/docker/${randomBytes(32).toString('hex')}`;
    fs.mkdirSync(abs(rel));
    fs.writeFileSync(path.join(abs(rel), 'pids.max'), '1');
    rels.push(rel);
  }

  const events: { e: LimitEvent; at: bigint }[] = [];
  const d = await startInProc({ roots: [top], cgroupRoot: cg, kmsg: false, inotify: true, stateBase: '/run', sweepIntervalMs: sweepArg ? Number(sweepArg) : 1000, hooks: { event: (e) => events.push({ e, at: process.hrtime.bigint() }) } });
  const floorLines: { at: bigint; idx: number }[] = [];
  const floor = spawn(floorBin!, rels.map((r) => path.join(abs(r), 'pids.events')), { stdio: ['ignore', 'pipe', 'inherit'] });
  let floorReady!: () => void;
  const floorReadyP = new Promise<void>((r) => (floorReady = r));
  onLines(floor.stdout!, (line) => {
    if (line === 'ready') return floorReady();
    const [ns, idx] = line.split(' ');
    floorLines.push({ at: BigInt(ns!), idx: Number(idx) });
  });
  const trig = spawn(triggerBin!, [], { stdio: ['pipe', 'pipe', 'inherit'] });
  const q = new LineQueue(trig.stdout!);
  try {
    await floorReadyP;
    const pid = Number((await q.take(10_000, 'trigger')).line.split(' ')[1]);
    const ours: number[] = [];
    const floorMs: number[] = [];
    let other = 0;
    let timedOut = 0;
    const waitFor = async <T>(f: () => T | undefined, ms: number): Promise<T | undefined> => {
      const deadline = Date.now() + ms;
      for (;;) {
        const v = f();
        if (v !== undefined || Date.now() > deadline) return v;
        await sleep(2);
      }
    };
    for (const [i, rel] of rels.entries()) {
      fs.writeFileSync(path.join(abs(rel), 'cgroup.procs'), String(pid));
      trig.stdin!.write('f\n');
      const [ns, errno] = (await q.take(10_000, 'trigger')).line.split(' ');
      if (Number(errno) !== 11) throw new Error(`fork in ${rel} gave errno ${errno}, expected EAGAIN`);
      const t0 = BigInt(ns!);
      const ev = await waitFor(() => events.find((x) => x.e.cgroupPath === rel && x.at >= t0), 5000);
      const fl = await waitFor(() => floorLines.find((x) => x.idx === i && x.at >= t0), 2000);
      if (!ev) timedOut++;
      else if (ev.e.source !== 'inotify') other++;
      else ours.push(Number(ev.at - t0) / 1e6);
      if (fl) floorMs.push(Number(fl.at - t0) / 1e6);
      // cgroup_file_notify() rate-limits a file's notifications to one per 10 ms: keep clear of it.
      await sleep(25);
    }
    fs.writeFileSync(path.join(abs(park), 'cgroup.procs'), String(pid));
    emit({ ours, floor: floorMs, other, timedOut });
  } finally {
    trig.kill('SIGKILL');
    floor.kill('SIGKILL');
    await d.stop();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    try {
      emit({ error: (err as Error).stack ?? String(err) });
    } catch {
      /* no output dir */
    }
    process.exit(1);
  },
);
