/**
 * Detection latency: kernel event (triggered here, timestamped with CLOCK_MONOTONIC just
 * before the failing fork) to the daemon's `event` hook (the alert is enqueued right after,
 * in the same tick), for each source:
 *  - kmsg (this host, cgroup v1): the first rejected fork of a fresh cgroup; floor: a C reader
 *    blocking on /dev/kmsg, on the same events.
 *  - sweep (v1): later rejections in the same cgroup, which only the counter sweep sees.
 *  - inotify (cgroup v2, in user-mode Linux): see uml/detect-v2.ts; floor: a C reader blocking
 *    on inotify over the same pids.events files.
 * A do-it-yourself 1 s poller of pids.events watches the same v1 events (see alternatives.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { LimitEvent } from '../src/detect/event';
import { runInUml, umlAvailable } from '../test/helpers/uml';
import { startPidsPoller, type PollerHandle } from './alternatives';
import { benchRoot, hasV1, hex64, joinCgroup, mkdirs, v1Dir } from './lib/cgroups';
import { trackChild } from './lib/cleanup';
import { startInProc } from './lib/inproc-daemon';
import { KmsgFloor } from './lib/kmsg-floor';
import { LineQueue } from './lib/lines';
import { compile } from './lib/native';
import { monoNs, nsToMs, sleep, summarize, type Summary } from './lib/stats';

const CONTROLLERS = ['pids', 'cpu', 'memory'];

export interface SourceResult {
  source: 'kmsg' | 'sweep' | 'inotify';
  where: string;
  ours: Summary;
  floor: Summary | null;
  /** Our p99 / the floor's p99 (and p50 / p50). */
  ratioP99: number | null;
  ratioP50: number | null;
  target: string;
  targetMet: boolean | null;
  /** Samples that did not arrive through this source (another source was first) or timed out. */
  otherSource: number;
  timedOut: number;
  note?: string;
  raw?: { ours: number[]; floor: number[] };
}

export interface DetectionResult {
  sources: SourceResult[];
  /** The DIY 1 s poller on the same v1 events (kmsg + sweep samples). */
  diyPoll: { ours: Summary; diy: Summary; intervalMs: number } | null;
  skipped?: string[];
}

/** One recorded daemon event, with the hook's CLOCK_MONOTONIC time. */
interface Seen {
  e: LimitEvent;
  at: bigint;
}

class EventLog {
  private readonly byPath = new Map<string, Seen[]>();
  private waiters: { path: string; after: bigint; resolve: (s: Seen | null) => void }[] = [];
  record(e: LimitEvent): void {
    const s: Seen = { e, at: monoNs() };
    const list = this.byPath.get(e.cgroupPath) ?? [];
    list.push(s);
    this.byPath.set(e.cgroupPath, list);
    for (const w of [...this.waiters]) {
      if (w.path === e.cgroupPath && s.at >= w.after) {
        this.waiters = this.waiters.filter((x) => x !== w);
        w.resolve(s);
      }
    }
  }
  /** The first event of `cgPath` seen at or after `after`, or null at the timeout. */
  wait(cgPath: string, after: bigint, timeoutMs: number): Promise<Seen | null> {
    const have = this.byPath.get(cgPath)?.find((s) => s.at >= after);
    if (have) return Promise.resolve(have);
    return new Promise((resolve) => {
      const w = { path: cgPath, after, resolve: (s: Seen | null) => (clearTimeout(t), resolve(s)) };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        resolve(null);
      }, timeoutMs);
      this.waiters.push(w);
    });
  }
}

/** A fork-trigger process (bench/tools/fork-trigger.c). fire() forks once and returns the time before the fork. */
class Trigger {
  readonly child: ChildProcess;
  private readonly q: LineQueue;
  private readonly untrack: () => Promise<void>;
  constructor(bin: string) {
    this.child = spawn(bin, [], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.untrack = trackChild(this.child, 'fork trigger');
    this.q = new LineQueue(this.child.stdout!);
  }
  async ready(): Promise<number> {
    const { line } = await this.q.take(5000, 'fork-trigger');
    return Number(line.split(' ')[1]);
  }
  async fire(): Promise<{ t0: bigint; errno: number }> {
    this.child.stdin!.write('f\n');
    const { line } = await this.q.take(5000, 'fork-trigger');
    const [ns, err] = line.split(' ');
    return { t0: BigInt(ns!), errno: Number(err) };
  }
  async stop(): Promise<void> {
    await this.untrack();
  }
}

function ratio(a: number | null, b: number | null): number | null {
  return a === null || b === null || b <= 0 ? null : Math.round((a / b) * 100) / 100;
}

/** v1 on this host: kmsg and sweep samples, with the kmsg floor and the DIY poller on the same events. */
async function detectV1(samples: number, lanes: number): Promise<{ sources: SourceResult[]; diyPoll: DetectionResult['diyPoll'] }> {
  const root = benchRoot('det', CONTROLLERS);
  const triggers: Trigger[] = [];
  let stopDaemon: (() => Promise<void>) | undefined;
  let floor: KmsgFloor | undefined;
  let poller: PollerHandle | undefined;
  try {
    // Containers: `samples` fresh ones for kmsg (one first rejection each), `lanes` for the sweep.
    const mk = (): string => {
      const rel = `${root.rel}/docker/${hex64()}`;
      for (const c of CONTROLLERS) mkdirs(c, rel);
      fs.writeFileSync(path.join(v1Dir('pids', rel), 'pids.max'), '1');
      return rel;
    };
    const kmsgCgs = Array.from({ length: samples }, mk);
    const laneCgs = Array.from({ length: lanes }, mk);
    const all = [...kmsgCgs, ...laneCgs];

    const log = new EventLog();
    const d = await startInProc({ roots: [root.rel], hooks: { event: (e) => log.record(e) } });
    stopDaemon = d.stop;
    if (d.daemon.inventory.size !== all.length) throw new Error(`daemon found ${d.daemon.inventory.size} containers, expected ${all.length}`);
    // Wait for the kmsg follower to have caught up with "now".
    await sleep(300);
    floor = new KmsgFloor();
    await floor.ready();
    poller = await startPidsPoller(all.map((rel) => path.join(v1Dir('pids', rel), 'pids.events')), 1000);

    const bin = compile('tools/fork-trigger');
    // --- kmsg: one trigger moved from fresh cgroup to fresh cgroup --------------------------
    const kmsgOurs: number[] = [];
    const kmsgFloor: number[] = [];
    const ourAll: { idx: number; count: number; t0: bigint; at: bigint | null }[] = [];
    let kOther = 0;
    let kTimeout = 0;
    const t = new Trigger(bin);
    triggers.push(t);
    const tpid = await t.ready();
    for (const [i, rel] of kmsgCgs.entries()) {
      joinCgroup(tpid, rel, CONTROLLERS);
      const { t0, errno } = await t.fire();
      if (errno !== 11) throw new Error(`fork in ${rel} (pids.max 1) gave errno ${errno}, expected EAGAIN`);
      const seen = await log.wait(rel, t0, 3000);
      const fl = await floor.find((m) => m.includes('fork rejected') && m.endsWith(` in ${rel}`), t0, 2000);
      ourAll.push({ idx: i, count: 1, t0, at: seen?.at ?? null });
      if (!seen) kTimeout++;
      else if (seen.e.source !== 'kmsg') kOther++;
      else kmsgOurs.push(nsToMs(seen.at - t0));
      if (fl !== null) kmsgFloor.push(nsToMs(fl - t0));
      await sleep(20);
    }
    // Park the trigger back in the bench root (no limit there) before it exits.
    joinCgroup(tpid, root.rel, CONTROLLERS);
    await t.stop();

    // --- sweep: lanes in parallel, each fires at a random phase, waits for its event --------
    const sweepOurs: number[] = [];
    let sOther = 0;
    let sTimeout = 0;
    const laneTriggers = await Promise.all(
      laneCgs.map(async (rel) => {
        const lt = new Trigger(bin);
        triggers.push(lt);
        const pid = await lt.ready();
        joinCgroup(pid, rel, CONTROLLERS);
        return lt;
      }),
    );
    // The first rejection of each lane goes to kmsg: not a sweep sample.
    await Promise.all(
      laneTriggers.map(async (lt, l) => {
        const { t0 } = await lt.fire();
        const seen = await log.wait(laneCgs[l]!, t0, 3000);
        ourAll.push({ idx: kmsgCgs.length + l, count: 1, t0, at: seen?.at ?? null });
      }),
    );
    let started = 0;
    await Promise.all(
      laneTriggers.map(async (lt, l) => {
        let count = 1;
        while (started < samples) {
          started++;
          await sleep(Math.random() * 1000);
          const { t0 } = await lt.fire();
          count++;
          const seen = await log.wait(laneCgs[l]!, t0, 3000);
          ourAll.push({ idx: kmsgCgs.length + l, count, t0, at: seen?.at ?? null });
          if (!seen) sTimeout++;
          else if (seen.e.source !== 'sweep') sOther++;
          else sweepOurs.push(nsToMs(seen.at - t0));
        }
      }),
    );
    // Let the DIY poller see the last ones.
    await sleep(1300);

    // DIY poller: trigger number k of a cgroup is seen by its first report with max >= k.
    const diy: number[] = [];
    const oursSame: number[] = [];
    for (const s of ourAll) {
      const seen = poller.firstAtLeast(s.idx, s.count);
      if (seen !== null) {
        diy.push(nsToMs(seen - s.t0));
        if (s.at !== null) oursSame.push(nsToMs(s.at - s.t0));
      }
    }

    const kO = summarize(kmsgOurs);
    const kF = summarize(kmsgFloor);
    const kTarget = kF.p99 !== null ? 2 * kF.p99 + 1 : null;
    const sO = summarize(sweepOurs);
    return {
      sources: [
        {
          source: 'kmsg',
          where: 'host, cgroup v1, /dev/kmsg (first rejected fork of a fresh cgroup)',
          ours: kO,
          floor: kF,
          ratioP99: ratio(kO.p99, kF.p99),
          ratioP50: ratio(kO.p50, kF.p50),
          target: kTarget !== null ? `p99 <= 2 x floor p99 + 1 ms = ${kTarget.toFixed(3)} ms` : 'p99 <= 2 x floor + 1 ms',
          targetMet: kO.p99 !== null && kTarget !== null ? kO.p99 <= kTarget : null,
          otherSource: kOther,
          timedOut: kTimeout,
          raw: { ours: kmsgOurs, floor: kmsgFloor },
        },
        {
          source: 'sweep',
          where: 'host, cgroup v1, counter sweep every 1000 ms (later rejections in the same cgroup)',
          ours: sO,
          floor: null,
          ratioP99: null,
          ratioP50: null,
          target: 'p99 within the sweep interval (1000 ms)',
          targetMet: sO.p99 !== null ? sO.p99 <= 1000 : null,
          otherSource: sOther,
          timedOut: sTimeout,
          note: 'trigger at a random phase of the sweep; the floor of a 1 s sweep is the interval itself (uniform 0..1000 ms, p50 ~500)',
          raw: { ours: sweepOurs, floor: [] },
        },
      ],
      diyPoll: { ours: summarize(oursSame), diy: summarize(diy), intervalMs: 1000 },
    };
  } finally {
    for (const t of triggers) await t.stop();
    await poller?.stop();
    await floor?.stop();
    await stopDaemon?.();
    await root.remove();
  }
}

/** cgroup v2 in user-mode Linux: inotify on pids.events, with the C inotify floor on the same files. */
async function detectV2(samples: number): Promise<SourceResult> {
  const script = path.resolve(__dirname, 'uml', 'detect-v2.js');
  const run = await runInUml(script, [compile('tools/fork-trigger'), compile('floor/inotify-floor'), String(samples)], { timeoutMs: 180_000 });
  const res = run.results as { ours?: number[]; floor?: number[]; other?: number; timedOut?: number; error?: string; kernel?: string }[];
  const r = res.find((x) => Array.isArray(x.ours));
  if (!run.exitOk || !r) {
    const err = res.find((x) => x.error)?.error;
    throw new Error(`UML run failed (exit ${run.exitCode}, timedOut ${run.timedOut})${err ? `: ${err}` : ''}; console tail: ${run.console.slice(-1500)}`);
  }
  const o = summarize(r.ours!);
  const f = summarize(r.floor ?? []);
  const target = f.p99 !== null ? 2 * f.p99 + 1 : null;
  return {
    source: 'inotify',
    where: `user-mode Linux ${run.kernel ?? ''}, cgroup v2, inotify IN_MODIFY on pids.events (kmsg off)`.replace('  ', ' '),
    ours: o,
    floor: f,
    ratioP99: ratio(o.p99, f.p99),
    ratioP50: ratio(o.p50, f.p50),
    target: target !== null ? `p99 <= 2 x floor p99 + 1 ms = ${target.toFixed(3)} ms` : 'p99 <= 2 x floor + 1 ms',
    targetMet: o.p99 !== null && target !== null ? o.p99 <= target : null,
    otherSource: r.other ?? 0,
    timedOut: r.timedOut ?? 0,
    note: `UML boot+run ${Math.round(run.durationMs / 1000)} s; times are UML's own CLOCK_MONOTONIC (a UML syscall costs far more than a host one, for us and the floor alike)`,
    raw: { ours: r.ours!, floor: r.floor ?? [] },
  };
}

export async function detectionLatency(opts: { samples?: number; lanes?: number; uml?: boolean } = {}): Promise<DetectionResult> {
  const samples = opts.samples ?? 60;
  const out: DetectionResult = { sources: [], diyPoll: null, skipped: [] };
  if (hasV1(CONTROLLERS)) {
    const v1 = await detectV1(samples, opts.lanes ?? 6);
    out.sources.push(...v1.sources);
    out.diyPoll = v1.diyPoll;
  } else {
    out.skipped!.push('no cgroup v1 pids/cpu/memory hierarchies on this host: kmsg and sweep not measured');
  }
  if (opts.uml === false) out.skipped!.push('inotify (UML) not run: BENCH_UML=0');
  else if (!umlAvailable()) out.skipped!.push('user-mode Linux (linux.uml) not installed: inotify path not measured');
  else {
    try {
      out.sources.push(await detectV2(samples));
    } catch (err) {
      out.skipped!.push(`inotify (UML): ${(err as Error).message}`);
    }
  }
  return out;
}
