/**
 * Scale: N runtime-shaped container cgroups (/cgwd-bench-scaleN-*\/docker/<64 hex> in the
 * pids, cpu and memory v1 hierarchies), then a real daemon process
 * (`node dist/src/cli.js run --config <tmp>`): time to discover and apply at start, idle CPU
 * over a window with the sweep at its default 1 s (utime+stime from /proc/<pid>/stat), RSS,
 * open fds, /metrics scrape time and size, reconcile duration (from its histogram), and
 * `apply --dry-run` wall time. Beside it, in the same idle windows, the floor: a C program
 * that preads every container's pids.events once a second through kept-open fds
 * (floor/sweep-floor.c). The idle figure is the median of `runs` windows.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchRoot, hasV1, hex64, mkdirs, v1Dir } from './lib/cgroups';
import { startBenchDaemon } from './lib/bench-daemon';
import { childPids, cpuSeconds, fdCount, metric, rssMb, scrape } from './lib/proc-stats';
import { onCleanup, trackChild } from './lib/cleanup';
import { onLines } from './lib/lines';
import { compile } from './lib/native';
import { round, sleep, summarize, type Summary } from './lib/stats';

const CONTROLLERS = ['pids', 'cpu', 'memory'];
const CLI = path.resolve(__dirname, '..', 'src', 'cli.js');

export interface ScaleRow {
  containers: number;
  /** Making the N cgroups in 3 hierarchies (the benchmark's own set-up), s. */
  mkdirSeconds: number;
  /** Spawn -> "initial reconcile done" log line, ms (process start, host facts, scan, apply). */
  startMs: number | null;
  /** The daemon's own startMs (reconcile at start) from that line. */
  reconcileAtStartMs: number | null;
  containersFound: number | null;
  /** pids.max written (not "max") on all N after start. */
  limitsWritten: number;
  idleSeconds: number;
  /** % of one core over the idle window (daemon process; its `cat` child shown apart): the median of the windows. */
  idleCpuPercent: number | null;
  /** Each window's figure, ours and the C floor's. */
  idleCpuRuns: number[];
  floorCpuRuns: number[];
  /** The C 1 s pread sweep of every pids.events, median over the same windows. */
  floorCpuPercent: number | null;
  /** Cgroups the daemon reads every sweep / in the safety net (cgwatchdog_watches_active). */
  fastSwept: number | null;
  netSwept: number | null;
  catCpuPercent: number | null;
  rssMb: number | null;
  fds: number | null;
  scrapeMs: Summary;
  scrapeBytes: number | null;
  reconcileMeanMs: number | null;
  reconcileCount: number | null;
  sweepMeanMs: number | null;
  applyDryRunMs: number | null;
  applyDryRunExit: number | null;
  targets: Record<string, { target: string; met: boolean | null }>;
  error?: string;
}


function runCli(args: string[]): Promise<{ code: number | null; ms: number }> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'ignore'] });
    c.on('close', (code) => resolve({ code, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
  });
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** The C floor sweeper over these pids.events files, running until stopped. */
async function startFloor(files: string[], tmp: string): Promise<{ pid: number; stop: () => Promise<void> }> {
  const bin = compile('floor/sweep-floor');
  const list = path.join(tmp, 'floor-files');
  fs.writeFileSync(list, files.join('\n') + '\n');
  const c = spawn(bin, [list], { stdio: ['ignore', 'pipe', 'pipe'] });
  const untrack = trackChild(c, 'sweep floor');
  await new Promise<void>((resolve, reject) => {
    onLines(c.stdout!, (l) => {
      if (l.startsWith('ready')) resolve();
    });
    c.once('exit', (code) => reject(new Error(`sweep-floor exited ${code}`)));
  });
  return {
    pid: c.pid!,
    stop: async () => {
      c.kill('SIGKILL');
      await untrack();
    },
  };
}

async function one(n: number, idleSeconds: number, runs: number): Promise<ScaleRow> {
  const row: ScaleRow = {
    containers: n,
    mkdirSeconds: 0,
    startMs: null,
    reconcileAtStartMs: null,
    containersFound: null,
    limitsWritten: 0,
    idleSeconds,
    idleCpuPercent: null,
    idleCpuRuns: [],
    floorCpuRuns: [],
    floorCpuPercent: null,
    fastSwept: null,
    netSwept: null,
    catCpuPercent: null,
    rssMb: null,
    fds: null,
    scrapeMs: summarize([]),
    scrapeBytes: null,
    reconcileMeanMs: null,
    reconcileCount: null,
    sweepMeanMs: null,
    applyDryRunMs: null,
    applyDryRunExit: null,
    targets: {},
  };
  const root = benchRoot(`scale${n}`, CONTROLLERS);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-bench-scale-'));
  const removeTmp = onCleanup('scale temp dir', () => fs.rmSync(tmp, { recursive: true, force: true }));
  let stopDaemon: (() => Promise<void>) | undefined;
  let floor: { pid: number; stop: () => Promise<void> } | undefined;
  let child: ChildProcess | undefined;
  try {
    const t0 = Date.now();
    const rels: string[] = [];
    for (const c of CONTROLLERS) mkdirs(c, `${root.rel}/docker`);
    for (let i = 0; i < n; i++) {
      const rel = `${root.rel}/docker/${hex64()}`;
      for (const c of ['memory', 'cpu', 'pids']) mkdirs(c, rel);
      rels.push(rel);
    }
    row.mkdirSeconds = round((Date.now() - t0) / 1000, 1)!;

    const d = await startBenchDaemon(`scale-${n}`, [root.rel], tmp);
    stopDaemon = d.stop;
    child = d.child;
    const c = d.child;
    const port = d.port;
    const cfg = d.configPath;
    const spawnAt = d.spawnAt;
    const ready = d.ready;
    const line = await ready;
    row.startMs = round(Number(process.hrtime.bigint() - spawnAt) / 1e6, 1);
    row.reconcileAtStartMs = typeof line.startMs === 'number' ? line.startMs : null;
    row.containersFound = typeof line.containers === 'number' ? line.containers : null;
    for (const rel of rels) {
      try {
        if (fs.readFileSync(path.join(v1Dir('pids', rel), 'pids.max'), 'utf8').trim() !== 'max') row.limitsWritten++;
      } catch {
        /* gone */
      }
    }

    // Idle: CPU over each window, ours and the floor's side by side.
    floor = await startFloor(rels.map((r) => path.join(v1Dir('pids', r), 'pids.events')), tmp);
    // Steady state: the reconcile at start and the first scheduled one (which re-applies
    // every container once more and takes the drift reference) are behind us.
    for (let i = 0; i < 90; i++) {
      if ((metric((await scrape(port)).body, 'cgwatchdog_reconcile_duration_seconds_count') ?? 0) >= 2) break;
      await sleep(1000);
    }
    await sleep(3000);
    const pid = c.pid!;
    const kids = childPids(pid);
    let kd = 0;
    let kw = 0;
    for (let r = 0; r < runs; r++) {
      const a0 = cpuSeconds(pid);
      const f0 = cpuSeconds(floor.pid);
      const k0 = kids.map(cpuSeconds);
      const w0 = process.hrtime.bigint();
      await sleep(idleSeconds * 1000);
      const a1 = cpuSeconds(pid);
      const f1 = cpuSeconds(floor.pid);
      const k1 = kids.map(cpuSeconds);
      const wall = Number(process.hrtime.bigint() - w0) / 1e9;
      if (a0 !== null && a1 !== null) row.idleCpuRuns.push(round(((a1 - a0) / wall) * 100, 2)!);
      if (f0 !== null && f1 !== null) row.floorCpuRuns.push(round(((f1 - f0) / wall) * 100, 2)!);
      kd += k1.reduce<number>((s, v, i) => s + ((v ?? 0) - (k0[i] ?? 0)), 0);
      kw += wall;
    }
    await floor.stop();
    floor = undefined;
    row.idleCpuPercent = median(row.idleCpuRuns);
    row.floorCpuPercent = median(row.floorCpuRuns);
    row.catCpuPercent = kids.length ? round((kd / kw) * 100, 2) : null;
    row.rssMb = rssMb(pid);
    row.fds = fdCount(pid);

    // /metrics: a few scrapes, after the idle window (not to disturb it).
    const times: number[] = [];
    let body = '';
    for (let i = 0; i < 20; i++) {
      const s = await scrape(port);
      times.push(s.ms);
      body = s.body;
    }
    row.scrapeMs = summarize(times);
    row.scrapeBytes = Buffer.byteLength(body);
    const rs = metric(body, 'cgwatchdog_reconcile_duration_seconds_sum');
    const rc = metric(body, 'cgwatchdog_reconcile_duration_seconds_count');
    row.reconcileCount = rc;
    row.reconcileMeanMs = rs !== null && rc ? round((rs / rc) * 1000, 1) : null;
    const ss = metric(body, 'cgwatchdog_sweep_duration_seconds_sum');
    const sc = metric(body, 'cgwatchdog_sweep_duration_seconds_count');
    row.sweepMeanMs = ss !== null && sc ? round((ss / sc) * 1000, 2) : null;
    row.fastSwept = metric(body, 'cgwatchdog_watches_active\\{type="fast-swept-cgroups"\\}');
    row.netSwept = metric(body, 'cgwatchdog_watches_active\\{type="net-swept-cgroups"\\}');

    const dry = await runCli(['apply', '--config', cfg, '--dry-run', '--json']);
    row.applyDryRunMs = round(dry.ms, 1);
    row.applyDryRunExit = dry.code;
  } catch (err) {
    row.error = (err as Error).message;
  } finally {
    await floor?.stop();
    await stopDaemon?.();
    await root.remove();
    await removeTmp();
  }
  row.targets = targetsFor(row);
  return row;
}

/** Per-process fds besides the per-container ones: stdio, the inotify fd, sockets, kmsg's pipe, libuv's. */
const FD_CONSTANT = 64;

function targetsFor(row: ScaleRow): ScaleRow['targets'] {
  const n = row.containers;
  const lt = (v: number | null, limit: number) => (v !== null ? v < limit : null);
  const t: ScaleRow['targets'] = {};
  if (n === 1000) {
    t.start = { target: '< 2000 ms', met: lt(row.startMs, 2000) };
    t.idleCpu = { target: '< 1 %', met: lt(row.idleCpuPercent, 1) };
    t.rss = { target: '< 100 MB', met: lt(row.rssMb, 100) };
    t.scrape = { target: '< 100 ms', met: lt(row.scrapeMs.p99, 100) };
  }
  if (n === 5000) {
    const half = row.floorCpuPercent !== null ? round(row.floorCpuPercent / 2, 2)! : null;
    t.idleCpu = { target: `< floor / 2 = ${half ?? '?'} %`, met: half !== null ? lt(row.idleCpuPercent, half) : null };
    t.rss = { target: '< 100 MB', met: lt(row.rssMb, 100) };
    t.fds = { target: `<= ${n} + ${FD_CONSTANT}`, met: row.fds !== null ? row.fds <= n + FD_CONSTANT : null };
    t.scrape = { target: '< 100 ms', met: lt(row.scrapeMs.p99, 100) };
  }
  if (n === 10000) {
    t.start = { target: '< 5000 ms', met: lt(row.startMs, 5000) };
    t.rss = { target: '< 150 MB', met: lt(row.rssMb, 150) };
    t.scrape = { target: '< 200 ms', met: lt(row.scrapeMs.p99, 200) };
    t.limits = { target: `${n}/${n}`, met: row.limitsWritten === n };
  }
  return t;
}

export async function scale(sizes: number[], idleSeconds: number, runs = 3): Promise<{ rows: ScaleRow[]; skipped?: string }> {
  if (!hasV1(CONTROLLERS)) return { rows: [], skipped: 'no cgroup v1 pids/cpu/memory hierarchies' };
  const rows: ScaleRow[] = [];
  for (const n of sizes) rows.push(await one(n, idleSeconds, runs));
  return { rows };
}
