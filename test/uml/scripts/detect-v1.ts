/**
 * Runs inside user-mode Linux (see test/uml/detect-v1.test.ts): cgroup v1 pids and memory
 * hierarchies mounted in place of v2's controllers, the real daemon on them, and a fork loop,
 * a second fork burst after the first alert resolved (v1 kmsg logs only a cgroup's first
 * rejection: the second is the counters' to find), and an OOM kill, each to a webhook.
 * Phases: mount, daemon-start, pids, pids-again, memory, alerts, daemon-stop, cleanup.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cgroupRoot, emit, inUml, nowMs, readKeyed, sleep } from '../in-uml';
import { DaemonProc, FORKER, HOG, ONE_MORE, hex64, pick, readTrim, receiver, removeTree, runMain, waitChildLine, writeConfig } from './daemon-util';

const TEST = '/cgwd-test';
const V1 = '/run/v1';
/** The v1 hierarchies mounted: pids always; memory where the kernel still has v1 memcg. */
const CONTROLLERS: string[] = [];

/**
 * Take pids and memory off v2 and mount each as its own v1 hierarchy. Linux 6.11 made v1
 * memcg optional (CONFIG_MEMCG_V1), and Debian's 6.12 and 7.2 UML kernels leave it out: the
 * mount fails with EINVAL there, and memory stays on v2. Returns that mount's error.
 */
async function mountV1(v2Root: string): Promise<string | undefined> {
  // A controller serves one hierarchy at a time; a removed v2 cgroup lets go of it a moment later.
  for (let i = 0; ; i++) {
    try {
      fs.writeFileSync(path.join(v2Root, 'cgroup.subtree_control'), '-pids -memory');
      break;
    } catch (err) {
      if (i >= 50) throw new Error(`taking pids and memory off cgroup v2: ${(err as Error).message}`);
      await sleep(100);
    }
  }
  for (const c of ['pids', 'memory']) {
    fs.mkdirSync(path.join(V1, c), { recursive: true });
    let m = spawnSync('/bin/mount', ['-t', 'cgroup', '-o', c, 'cgroup', path.join(V1, c)], { encoding: 'utf8' });
    for (let i = 0; i < 50 && m.status !== 0; i++) {
      await sleep(100);
      m = spawnSync('/bin/mount', ['-t', 'cgroup', '-o', c, 'cgroup', path.join(V1, c)], { encoding: 'utf8' });
    }
    if (m.status !== 0 && c === 'memory') {
      fs.rmdirSync(path.join(V1, c));
      return m.stderr.trim();
    }
    if (m.status !== 0) throw new Error(`mount cgroup v1 ${c}: ${m.stderr}`);
    CONTROLLERS.push(c);
  }
  return undefined;
}

const dirOf = (c: string, rel: string): string => path.join(V1, c, rel);

function mkV1(rel: string): void {
  for (const c of CONTROLLERS) fs.mkdirSync(dirOf(c, rel), { recursive: true });
}

async function removeV1(rel: string): Promise<void> {
  for (const c of CONTROLLERS) await removeTree(dirOf(c, rel));
}

/** A memory hog in the v1 memory cgroup `dir`: OOM-killed at its 20M limit. */
async function memoryPhase(dir: string, rx: Awaited<ReturnType<typeof receiver>>): Promise<void> {
  // --- a memory hog at memory.limit_in_bytes 20M ------------------------------------------------
  fs.mkdirSync('/run/bin');
  fs.symlinkSync(process.execPath, '/run/bin/memhog');
  const hog = spawn('/run/bin/memhog', ['-e', HOG], { stdio: ['pipe', 'pipe', 'pipe'] });
  await waitChildLine(hog, (l) => l === 'ready', 20_000);
  fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(hog.pid));
  const memGo = nowMs();
  hog.stdin.write('go\n');
  const hogExit = await new Promise<string | null>((resolve) => {
    const timer = setTimeout(() => resolve(null), 30_000);
    hog.once('exit', (_code, signal) => {
      clearTimeout(timer);
      resolve(signal);
    });
  });
  const hogExitMs = nowMs() - memGo;
  const oom = await rx.waitFor((r) => r.body?.kind === 'oom-kill' && r.body?.state === 'firing', 10_000);
  emit({ check: 'memory', hogSignal: hogExit, hogExitMs, oomAlertMs: oom ? oom.at - memGo : null, sources: oom?.body?.sources, victim: oom?.body?.victim, oomControl: readTrim(path.join(dir, 'memory.oom_control')) });
}

async function main(): Promise<void> {
  if (!inUml()) throw new Error('run this through test/helpers/uml.ts runInUml()');
  const memoryMountError = await mountV1(cgroupRoot());
  emit({ check: 'mount', controllers: CONTROLLERS, memoryMountError, mounts: fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(' - cgroup ')) });

  const rx = await receiver();
  const pidsId = hex64();
  const memId = hex64();
  const P = `${TEST}/docker/${pidsId}`;
  const M = `${TEST}/docker/${memId}`;
  mkV1(P);
  mkV1(M);
  const memV1 = CONTROLLERS.includes('memory');
  if (memV1) fs.writeFileSync(path.join(dirOf('memory', M), 'memory.limit_in_bytes'), String(20 * 1024 * 1024));
  fs.mkdirSync('/run/cgwd-state');
  const config = writeConfig('cgwd-detect-v1', {
    mode: 'enforce',
    logLevel: 'debug',
    paths: { cgroupRoot: V1, procRoot: '/proc', kmsg: '/dev/kmsg', stateDir: '/run/cgwd-state' },
    kernel: { manage: false },
    policy: { overrides: [{ pathPattern: `^${TEST}/docker/${pidsId}$`, pidsMax: 8 }] },
    discovery: { roots: [TEST] },
    detection: { inotify: true, kmsg: true, sweepIntervalMs: 1000 },
    alerts: {
      host: 'uml-test',
      repeatIntervalSeconds: 1,
      resolveAfterSeconds: 2,
      sinks: [{ type: 'webhook', url: rx.url, timeoutMs: 2000, retry: { initialDelayMs: 100, maxDelayMs: 1000 } }],
    },
    metrics: { enabled: false },
  });

  const d = new DaemonProc(config, 'detect-v1');
  const ready = await d.waitMsg('detection running', 60_000);
  emit({
    check: 'daemon-start',
    ready: pick(ready),
    starting: pick(d.lines.find((l) => l.msg === 'starting')),
    signals: pick(d.lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('kernel signals measured'))),
    pidsMax: readTrim(path.join(dirOf('pids', P), 'pids.max')),
    stderr: d.stderr,
  });
  if (!ready) {
    d.save();
    await d.stop();
    throw new Error(`the daemon did not get ready; stderr: ${d.stderr.slice(-2000)}`);
  }
  await sleep(300);

  // --- a fork loop at pids.max 8 ---------------------------------------------------------------
  const sh = spawn('/bin/sh', ['-c', FORKER, 'sh', dirOf('pids', P)], { stdio: ['pipe', 'pipe', 'pipe'] });
  await waitChildLine(sh, (l) => l === 'ready', 10_000);
  const pidsGo = nowMs();
  sh.stdin.write('go\n');
  await new Promise<void>((resolve) => sh.once('exit', () => resolve()));
  const first = await rx.waitFor((r) => r.body?.kind === 'pids-max' && r.body?.state === 'firing', 8000);
  emit({ check: 'pids', firstAlertMs: first ? first.at - pidsGo : null, sources: first?.body?.sources, events: readKeyed(path.join(dirOf('pids', P), 'pids.events')) });

  // --- resolved, then one more rejected fork: kmsg stays silent, the counters must see it ------
  const resolved = await rx.waitFor((r) => r.body?.kind === 'pids-max' && r.body?.state === 'resolved', 15_000);
  const kmsgBefore = spawnSync('/bin/dmesg', [], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.includes('fork rejected')).length;
  const againGo = nowMs();
  const x = spawn('/bin/sh', ['-c', ONE_MORE, 'sh', dirOf('pids', P)], { stdio: ['ignore', 'ignore', 'ignore'] });
  await new Promise<void>((resolve) => x.once('exit', () => resolve()));
  const again = await rx.waitFor((r) => r.body?.kind === 'pids-max' && r.body?.state === 'firing' && r.at >= againGo, 8000);
  emit({
    check: 'pids-again',
    resolved: resolved !== null,
    againAlertMs: again ? again.at - againGo : null,
    sources: again?.body?.sources,
    kmsgNewRejections: spawnSync('/bin/dmesg', [], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.includes('fork rejected')).length - kmsgBefore,
    events: readKeyed(path.join(dirOf('pids', P), 'pids.events')),
  });

  if (memV1) await memoryPhase(dirOf('memory', M), rx);

  const stopped = await d.stop();
  d.save();
  await rx.close();
  emit({ check: 'alerts', received: rx.got.map((r) => ({ kind: r.body?.kind, state: r.body?.state, id: r.body?.container?.id, cgroupPath: r.body?.container?.cgroupPath, sources: r.body?.sources, events: r.body?.counters?.eventsTotal })), ids: { P, M } });
  emit({ check: 'daemon-stop', ...stopped, problems: d.problems().filter((l) => l.alert === undefined).map(pick), stderr: d.stderr });

  await removeV1(TEST);
  emit({ check: 'cleanup', gone: CONTROLLERS.every((c) => !fs.existsSync(dirOf(c, TEST))) });
  for (const c of CONTROLLERS) spawnSync('/bin/umount', [path.join(V1, c)]);
}

runMain(main, emit);
