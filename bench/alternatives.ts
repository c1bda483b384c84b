/**
 * Against what operators use instead, on the same events in the same run:
 *  - `podman events --filter event=oom --format json` for OOM kills of a real podman (runc)
 *    container running a memory hog under --memory 32m, versus our daemon's oom-kill event for
 *    the same container (and the C /dev/kmsg floor).
 *  - a plain 1 s polling loop over pids.events (alt/pids-poll.ts, its own process) for
 *    PID-limit hits: started here, run by detection-latency.ts on its v1 events.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LimitEvent } from '../src/detect/event';
import { onCleanup, trackChild } from './lib/cleanup';
import { startInProc } from './lib/inproc-daemon';
import { onLines } from './lib/lines';
import { compile } from './lib/native';
import { monoNs, nsToMs, sleep, summarize, type Summary } from './lib/stats';
import { KmsgFloor } from './lib/kmsg-floor';

// ---- the DIY pids.events poller -------------------------------------------------------

export interface PollerHandle {
  /** CLOCK_MONOTONIC ns of the first report of file `idx` with max >= `count`, or null. */
  firstAtLeast(idx: number, count: number): bigint | null;
  stop(): Promise<void>;
}

export async function startPidsPoller(files: string[], intervalMs: number): Promise<PollerHandle> {
  const child = spawn(process.execPath, [path.join(__dirname, 'alt', 'pids-poll.js'), String(intervalMs), ...files], { stdio: ['ignore', 'pipe', 'inherit'] });
  const untrack = trackChild(child, 'DIY pids poller');
  const seen: { at: bigint; idx: number; max: number }[] = [];
  let ready!: () => void;
  const readyP = new Promise<void>((r) => (ready = r));
  onLines(child.stdout!, (line) => {
    if (line === 'ready') return ready();
    const [ns, idx, max] = line.split(' ');
    seen.push({ at: BigInt(ns!), idx: Number(idx), max: Number(max) });
  });
  await Promise.race([readyP, sleep(10_000).then(() => Promise.reject(new Error('DIY poller not ready')))]);
  return {
    firstAtLeast: (idx, count) => seen.find((s) => s.idx === idx && s.max >= count)?.at ?? null,
    stop: untrack,
  };
}

// ---- podman events vs us, OOM kills ---------------------------------------------------

const IMAGE = 'localhost/cgwd-busybox:latest';
const NAME_PREFIX = 'cgwd-bench-';

export interface PodmanOomResult {
  available: boolean;
  why?: string;
  samples: number;
  ours: Summary;
  podman: Summary;
  /** `podman events` "died" (exit 137) for the same containers: what podman does report here. */
  podmanDied: Summary;
  /** podman inspect State.OOMKilled was true for this many of the samples. */
  podmanOomKilledFlag: number;
  floor: Summary;
  /** Samples where podman events printed nothing within the wait. */
  podmanMissed: number;
  oursMissed: number;
  podmanVersion?: string;
  note: string;
}

function runSync(cmd: string, args: string[], timeoutMs = 120_000): { code: number | null; out: string; err: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.error ? null : r.status, out: r.stdout ?? '', err: r.error ? String(r.error) : (r.stderr ?? '') };
}

function run(cmd: string, args: string[], timeoutMs = 120_000, cwd?: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd });
    let out = '';
    let err = '';
    c.stdout.on('data', (b: Buffer) => (out += b));
    c.stderr.on('data', (b: Buffer) => (err += b));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('error', (e) => (clearTimeout(t), resolve({ code: null, out, err: String(e) })));
    c.on('close', (code) => (clearTimeout(t), resolve({ code, out, err })));
  });
}

/** The busybox image (podman import of a static busybox root; no registry here). */
function ensureImage(): void {
  if (runSync('podman', ['image', 'exists', IMAGE]).code === 0) return;
  const bb = ['/bin/busybox', '/usr/bin/busybox'].find((p) => fs.existsSync(p));
  if (!bb) throw new Error('busybox not found (apt-get install busybox-static)');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-bench-img-'));
  try {
    const root = path.join(tmp, 'root');
    for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'etc']) fs.mkdirSync(path.join(root, d), { recursive: true });
    fs.copyFileSync(bb, path.join(root, 'bin/busybox'));
    fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
    for (const a of ['sh', 'sleep', 'cat', 'echo', 'true']) fs.symlinkSync('busybox', path.join(root, 'bin', a));
    const tar = path.join(tmp, 'root.tar');
    const t = runSync('tar', ['-C', root, '--numeric-owner', '--owner=0', '--group=0', '-cf', tar, '.']);
    if (t.code !== 0) throw new Error(`tar: ${t.err}`);
    const i = runSync('podman', ['import', tar, IMAGE]);
    if (i.code !== 0) throw new Error(`podman import: ${i.err.trim()}`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function baseRunArgs(): string[] {
  // crun refuses hybrid cgroups; the hard nofile limit here is 20000 (podman asks for more).
  return ['--runtime', 'runc', '--network', 'none', '--ulimit', 'nofile=10000:10000', '--ulimit', 'nproc=16384:16384'];
}

function podmanProblem(): string | undefined {
  const have = (b: string): boolean => runSync('sh', ['-c', 'command -v "$1"', 'sh', b]).code === 0;
  if (!have('podman')) return 'podman not on PATH';
  if (!have('runc')) return 'runc not on PATH';
  try {
    ensureImage();
  } catch (err) {
    return `cannot make the busybox image: ${(err as Error).message}`;
  }
  const r = runSync('podman', ['run', '--rm', ...baseRunArgs(), IMAGE, 'true'], 60_000);
  if (r.code !== 0) return `cannot start a container: ${r.err.trim().split('\n').pop()}`;
  return undefined;
}

export async function podmanOom(samples: number): Promise<PodmanOomResult> {
  const empty = summarize([]);
  const note =
    'OOM time = the hog\'s CLOCK_MONOTONIC just before it starts touching memory (the kill follows after ~32 MiB of page faults, the same for every reader); ' +
    'podman events = the JSON line\'s arrival on `podman events --filter event=oom --format json`; ours = the daemon\'s oom-kill event hook (observe mode, discovery under /libpod_parent)';
  const why = podmanProblem();
  if (why) return { available: false, why, samples: 0, ours: empty, podman: empty, podmanDied: empty, podmanOomKilledFlag: 0, floor: empty, podmanMissed: 0, oursMissed: 0, note };
  const version = runSync('podman', ['--version']).out.trim();
  const hog = compile('tools/oom-hog');
  const outDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-bench-oom-'));
  const removeOut = onCleanup('oom out dir', () => fs.rmSync(outDir, { recursive: true, force: true }));
  const names: string[] = [];
  const removeContainers = onCleanup('bench containers', async () => {
    if (names.length) await run('podman', ['rm', '-f', '-t', '0', ...names]);
  });
  const events: { e: LimitEvent; at: bigint }[] = [];
  let stopDaemon: (() => Promise<void>) | undefined;
  let floor: KmsgFloor | undefined;
  let stopEvents: (() => Promise<void>) | undefined;
  try {
    // /libpod_parent exists once podman has run a container (podmanProblem did).
    const d = await startInProc({ roots: ['/libpod_parent'], mode: 'observe', hooks: { event: (e) => events.push({ e, at: monoNs() }) } });
    stopDaemon = d.stop;
    floor = new KmsgFloor();
    await floor.ready();
    const pe = spawn('podman', ['events', '--filter', 'event=oom', '--filter', 'event=died', '--format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    stopEvents = trackChild(pe, 'podman events');
    const pLines: { at: bigint; id: string; status: string }[] = [];
    onLines(pe.stdout!, (line, at) => {
      try {
        const j = JSON.parse(line) as { ID?: string; Status?: string };
        if (j.ID) pLines.push({ at, id: j.ID, status: j.Status ?? '' });
      } catch {
        /* not JSON */
      }
    });
    await sleep(1500); // podman events has no "ready" line

    const ours: number[] = [];
    const pod: number[] = [];
    const fl: number[] = [];
    const died: number[] = [];
    let oomFlag = 0;
    let podmanMissed = 0;
    let oursMissed = 0;
    for (let i = 0; i < samples; i++) {
      const name = `${NAME_PREFIX}oom-${process.pid}-${i}`;
      names.push(name);
      const tsFile = path.join(outDir, `t${i}`);
      // sleep 1 first: the daemon sees the new cgroup (inotify) and takes its baseline before the hog runs.
      const args = ['run', '-d', ...baseRunArgs(), '--memory', '32m', '--name', name, '-v', `${hog}:/hog:ro`, '-v', `${outDir}:/out`, IMAGE, 'sh', '-c', `sleep 1; exec /hog /out/t${i} 256`];
      // cwd: conmon (podman 4.3.1 here) writes its "oom" marker file into its working
      // directory, not the container's persist dir: keep it out of the repository.
      const r = await run('podman', args, 120_000, outDir);
      const id = r.out.trim().split('\n').pop() ?? '';
      if (r.code !== 0 || !/^[0-9a-f]{64}$/.test(id)) throw new Error(`podman run failed: ${r.err.trim()}`);
      const deadline = Date.now() + 15_000;
      let t0: bigint | null = null;
      let ourAt: bigint | null = null;
      let podAt: bigint | null = null;
      let floorAt: bigint | null = null;
      let diedAt: bigint | null = null;
      let diedSeenAt = 0;
      while (Date.now() < deadline && (t0 === null || ourAt === null || podAt === null || floorAt === null || diedAt === null)) {
        // podman prints "oom" (if ever) with or after "died": give it 3 s more, not the whole wait.
        if (diedSeenAt && Date.now() - diedSeenAt > 3000 && t0 !== null && ourAt !== null && floorAt !== null) break;
        await sleep(10);
        if (t0 === null && fs.existsSync(tsFile)) {
          const txt = fs.readFileSync(tsFile, 'utf8').trim();
          if (txt) t0 = BigInt(txt);
        }
        ourAt ??= events.find((x) => x.e.kind === 'oom-kill' && (x.e.containerId === id || x.e.cgroupPath.includes(id)))?.at ?? null;
        podAt ??= pLines.find((x) => x.id === id && x.status === 'oom')?.at ?? null;
        if (diedAt === null) {
          diedAt = pLines.find((x) => x.id === id && x.status === 'died')?.at ?? null;
          if (diedAt !== null) diedSeenAt = Date.now();
        }
        if (floorAt === null && t0 !== null) floorAt = (await floor.find((m) => m.startsWith('oom-kill:') && m.includes(id), t0, 0)) ?? null;
      }
      if (t0 === null) throw new Error(`the hog in ${name} never started (no ${tsFile})`);
      if (ourAt !== null) ours.push(nsToMs(ourAt - t0));
      else oursMissed++;
      if (podAt !== null) pod.push(nsToMs(podAt - t0));
      else podmanMissed++;
      if (floorAt !== null) fl.push(nsToMs(floorAt - t0));
      if (diedAt !== null) died.push(nsToMs(diedAt - t0));
      const insp = await run('podman', ['inspect', '--type', 'container', '--format', '{{.State.OOMKilled}}', name]);
      if (insp.out.trim() === 'true') oomFlag++;
      await run('podman', ['rm', '-f', '-t', '0', name]);
      names.splice(names.indexOf(name), 1);
    }
    return { available: true, samples, ours: summarize(ours), podman: summarize(pod), podmanDied: summarize(died), podmanOomKilledFlag: oomFlag, floor: summarize(fl), podmanMissed, oursMissed, podmanVersion: version, note };
  } finally {
    await stopEvents?.();
    await floor?.stop();
    await stopDaemon?.();
    await removeContainers();
    await removeOut();
  }
}
