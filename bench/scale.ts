/**
 * Scale: N runtime-shaped container cgroups (/cgwd-bench-scaleN-*\/docker/<64 hex> in the
 * pids, cpu and memory v1 hierarchies), then a real daemon process
 * (`node dist/src/cli.js run --config <tmp>`): time to discover and apply at start, idle CPU
 * over a window with the sweep at its default 1 s (utime+stime from /proc/<pid>/stat), RSS,
 * open fds, /metrics scrape time and size, reconcile duration (from its histogram), and
 * `apply --dry-run` wall time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { benchRoot, hasV1, hex64, mkdirs, v1Dir } from './lib/cgroups';
import { freePort, productionNodeFlags } from '../test/helpers/daemon';
import { onCleanup, trackChild } from './lib/cleanup';
import { onLines } from './lib/lines';
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
  /** % of one core over the idle window (daemon process; its `cat` child shown apart). */
  idleCpuPercent: number | null;
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


const TICK = 100; // USER_HZ

/** utime+stime of a process, seconds. */
function cpuSeconds(pid: number): number | null {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / TICK;
  } catch {
    return null;
  }
}

function rssMb(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? round(Number(m[1]) / 1024, 1) : null;
  } catch {
    return null;
  }
}

function fdCount(pid: number): number | null {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

function childPids(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function scrape(port: number): Promise<{ ms: number; body: string }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    http
      .get({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, body }));
      })
      .on('error', reject);
  });
}

function metric(body: string, name: string): number | null {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'm').exec(body);
  return m ? Number(m[1]) : null;
}

function runCli(args: string[]): Promise<{ code: number | null; ms: number }> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'ignore'] });
    c.on('close', (code) => resolve({ code, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
  });
}

async function one(n: number, idleSeconds: number): Promise<ScaleRow> {
  const row: ScaleRow = {
    containers: n,
    mkdirSeconds: 0,
    startMs: null,
    reconcileAtStartMs: null,
    containersFound: null,
    limitsWritten: 0,
    idleSeconds,
    idleCpuPercent: null,
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

    const port = await freePort();
    const cfg = path.join(tmp, 'config.yaml');
    fs.mkdirSync(path.join(tmp, 'state'));
    fs.writeFileSync(
      cfg,
      YAML.stringify({
        mode: 'enforce',
        logLevel: 'info',
        paths: { stateDir: path.join(tmp, 'state') },
        kernel: { manage: false },
        discovery: { roots: [root.rel] },
        names: { podmanBinary: '' },
        metrics: { enabled: true, listen: `127.0.0.1:${port}` },
      }),
    );
    const spawnAt = process.hrtime.bigint();
    // BENCH_CPU_PROF=<dir>: write a V8 CPU profile of each scale daemon there (node --cpu-prof).
    const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`, `--cpu-prof-name=scale-${n}.cpuprofile`] : [];
    child = spawn(process.execPath, [...prof, ...productionNodeFlags(), CLI, 'run', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
    const c = child;
    const untrack = trackChild(c, `scale daemon ${n}`);
    stopDaemon = async () => {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGTERM');
        await Promise.race([new Promise((r) => c.once('exit', r)), sleep(10_000)]);
      }
      await untrack();
    };
    let stderr = '';
    c.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
    const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
      onLines(c.stdout!, (line) => {
        try {
          const j = JSON.parse(line) as Record<string, unknown>;
          if (j.msg === 'initial reconcile done') resolve(j);
        } catch {
          /* not JSON */
        }
      });
      c.once('exit', (code) => reject(new Error(`daemon exited ${code} before it was ready: ${stderr.trim()}`)));
      setTimeout(() => reject(new Error(`daemon not ready within 120 s: ${stderr.trim()}`)), 120_000);
    });
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

    // Idle: let the start settle, then measure CPU over the window.
    await sleep(3000);
    const pid = c.pid!;
    const kids = childPids(pid);
    const a0 = cpuSeconds(pid);
    const k0 = kids.map(cpuSeconds);
    const w0 = process.hrtime.bigint();
    await sleep(idleSeconds * 1000);
    const a1 = cpuSeconds(pid);
    const k1 = kids.map(cpuSeconds);
    const wall = Number(process.hrtime.bigint() - w0) / 1e9;
    if (a0 !== null && a1 !== null) row.idleCpuPercent = round(((a1 - a0) / wall) * 100, 2);
    const kd = k1.reduce<number>((s, v, i) => s + ((v ?? 0) - (k0[i] ?? 0)), 0);
    row.catCpuPercent = kids.length ? round((kd / wall) * 100, 2) : null;
    row.rssMb = rssMb(pid);
    row.fds = fdCount(pid);

    // /metrics: a few scrapes, after the idle window (not to disturb it).
    const times: number[] = [];
    let body = '';
    for (let i = 0; i < 5; i++) {
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

    const dry = await runCli(['apply', '--config', cfg, '--dry-run', '--json']);
    row.applyDryRunMs = round(dry.ms, 1);
    row.applyDryRunExit = dry.code;
  } catch (err) {
    row.error = (err as Error).message;
  } finally {
    await stopDaemon?.();
    await root.remove();
    await removeTmp();
  }
  if (n === 1000) {
    row.targets = {
      start: { target: '< 2000 ms', met: row.startMs !== null ? row.startMs < 2000 : null },
      idleCpu: { target: '< 1 %', met: row.idleCpuPercent !== null ? row.idleCpuPercent < 1 : null },
      rss: { target: '< 100 MB', met: row.rssMb !== null ? row.rssMb < 100 : null },
      scrape: { target: '< 100 ms', met: row.scrapeMs.p99 !== null ? row.scrapeMs.p99 < 100 : null },
    };
  }
  return row;
}

export async function scale(sizes: number[], idleSeconds: number): Promise<{ rows: ScaleRow[]; skipped?: string }> {
  if (!hasV1(CONTROLLERS)) return { rows: [], skipped: 'no cgroup v1 pids/cpu/memory hierarchies' };
  const rows: ScaleRow[] = [];
  for (const n of sizes) rows.push(await one(n, idleSeconds));
  return { rows };
}
