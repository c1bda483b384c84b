/**
 * Churn: a small long-lived C generator (tools/churn-gen.c) makes `rate` Docker-shaped
 * container cgroups a second under /cgwd-bench-churn-*, each with a process that forks once,
 * and removes each `lifetimeMs` after its mkdir, while a real daemon (shipped defaults, the
 * unit's Node flags) runs. The generator measures mkdir -> pids.max no longer "max" itself.
 * Before and after (once the removed containers' records have expired): RSS, fds, inotify
 * watches and every per-container map of the daemon (cgwatchdog_state_entries).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchRoot, hasV1, mkdirs, V1_ROOT } from './lib/cgroups';
import { startBenchDaemon } from './lib/bench-daemon';
import { onCleanup, trackChild } from './lib/cleanup';
import { onLines } from './lib/lines';
import { compile } from './lib/native';
import { fdCount, inotifyWatches, rssMb, scrape } from './lib/proc-stats';
import { round, sleep, summarize, type Summary } from './lib/stats';

const CONTROLLERS = ['pids', 'cpu', 'memory'];

/** Removed quiet containers' records stay DEPARTED_QUIET_MS (30 s); then a sweep publishes the gauges. */
const SETTLE_AFTER_MS = 40_000;

export interface ChurnSnapshot {
  rssMb: number | null;
  fds: number | null;
  /** What the fds are (sockets, files, pipes), for a leak's report. */
  fdKinds: Record<string, number>;
  inotifyWatches: number | null;
  /** cgwatchdog_state_entries by map. */
  entries: Record<string, number>;
}

export interface ChurnResult {
  seconds: number;
  rate: number;
  made: number;
  limited: number;
  missed: number;
  removed: number;
  /** mkdir -> limit read back, by the generator, ms. */
  latencyMs: Summary;
  before: ChurnSnapshot;
  during: ChurnSnapshot;
  after: ChurnSnapshot;
  /** What did not come back: empty when nothing leaked. */
  leaks: string[];
  daemonCpuPercent: number | null;
}

async function snapshot(pid: number, port: number): Promise<ChurnSnapshot> {
  // The process's own figures first: counted after the scrape, the scrape's own connection
  // (closed by the server a moment after the response) was sometimes still there.
  const own = { rssMb: rssMb(pid), fds: fdCount(pid), fdKinds: fdKinds(pid), inotifyWatches: inotifyWatches(pid) };
  const { body } = await scrape(port);
  const entries: Record<string, number> = {};
  for (const m of body.matchAll(/^cgwatchdog_state_entries\{map="([^"]+)"\} (\d+)$/gm)) entries[m[1]!] = Number(m[2]);
  return { ...own, entries };
}

function fdKinds(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  try {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      let k = '?';
      try {
        k = fs.readlinkSync(`/proc/${pid}/fd/${fd}`).replace(/^(socket|pipe):.*/, '$1').replace(/^\/sys\/fs\/cgroup\/.*/, 'cgroup file');
      } catch {
        /* closed meanwhile */
      }
      out[k] = (out[k] ?? 0) + 1;
    }
  } catch {
    /* gone */
  }
  return out;
}

/** What grew from `before` to `after`: fds, watches and map entries exactly; RSS by more than `rssSlackMb`. */
export function leaksBetween(before: ChurnSnapshot, after: ChurnSnapshot, rssSlackMb = 15): string[] {
  const out: string[] = [];
  if (before.fds !== null && after.fds !== null && after.fds > before.fds) {
    const grew = Object.entries(after.fdKinds).filter(([k, n]) => n > (before.fdKinds[k] ?? 0)).map(([k, n]) => `${k} ${before.fdKinds[k] ?? 0} -> ${n}`);
    out.push(`fds ${before.fds} -> ${after.fds} (${grew.join(', ')})`);
  }
  if (before.inotifyWatches !== null && after.inotifyWatches !== null && after.inotifyWatches > before.inotifyWatches) out.push(`inotify watches ${before.inotifyWatches} -> ${after.inotifyWatches}`);
  for (const [map, n] of Object.entries(after.entries)) if (n > (before.entries[map] ?? 0)) out.push(`${map} ${before.entries[map] ?? 0} -> ${n}`);
  if (before.rssMb !== null && after.rssMb !== null && after.rssMb > before.rssMb + rssSlackMb) out.push(`RSS ${before.rssMb} -> ${after.rssMb} MB`);
  return out;
}

function cpuOf(pid: number): number | null {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const x = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(x[11]) + Number(x[12])) / 100;
  } catch {
    return null;
  }
}

export async function churn(o: { seconds: number; rate?: number; lifetimeMs?: number; log?: (s: string) => void }): Promise<ChurnResult | { skipped: string }> {
  if (!hasV1(CONTROLLERS)) return { skipped: 'no cgroup v1 pids/cpu/memory hierarchies' };
  const rate = o.rate ?? 100;
  const lifetimeMs = o.lifetimeMs ?? 1000;
  const bin = compile('tools/churn-gen');
  const root = benchRoot('churn', CONTROLLERS);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-bench-churn-'));
  const removeTmp = onCleanup('churn temp dir', () => fs.rmSync(tmp, { recursive: true, force: true }));
  let stop: (() => Promise<void>) | undefined;
  try {
    for (const c of CONTROLLERS) mkdirs(c, `${root.rel}/docker`);
    const d = await startBenchDaemon('churn', [root.rel], tmp);
    stop = d.stop;
    await d.ready;
    const pid = d.child.pid!;
    await sleep(3000);
    const before = await snapshot(pid, d.port);
    const cpu0 = cpuOf(pid);
    const t0 = Date.now();
    const gen = spawn(bin, [V1_ROOT, root.rel, String(rate), String(o.seconds), String(lifetimeMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const untrack = trackChild(gen, 'churn generator');
    const lat: number[] = [];
    let done = '';
    let stderr = '';
    gen.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
    onLines(gen.stdout!, (l) => {
      if (l.startsWith('lat ')) lat.push(Number(l.slice(4)) / 1000);
      else if (l.startsWith('done ')) done = l;
      else if (l.startsWith('miss ')) o.log?.(`churn: ${l}`);
    });
    // Half way: the daemon under churn (RSS and maps with ~rate x lifetime live containers).
    await sleep((o.seconds * 1000) / 2);
    const during = await snapshot(pid, d.port);
    const code = await new Promise<number | null>((r) => gen.once('close', r));
    await untrack();
    const cpu1 = cpuOf(pid);
    const wall = (Date.now() - t0) / 1000;
    if (code !== 0) throw new Error(`churn-gen exited ${code}: ${stderr.trim()}`);
    await sleep(SETTLE_AFTER_MS);
    const after = await snapshot(pid, d.port);
    const num = (k: string): number => Number(new RegExp(`${k}=(\\d+)`).exec(done)?.[1] ?? NaN);
    return {
      seconds: o.seconds,
      rate,
      made: num('made'),
      limited: num('limited'),
      missed: num('missed'),
      removed: num('removed'),
      latencyMs: summarize(lat),
      before,
      during,
      after,
      leaks: leaksBetween(before, after),
      daemonCpuPercent: cpu0 !== null && cpu1 !== null ? round(((cpu1 - cpu0) / wall) * 100, 2) : null,
    };
  } finally {
    await stop?.();
    await root.remove();
    await removeTmp();
  }
}
