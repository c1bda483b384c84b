/**
 * 5. Zero window (issue 11): container start -> first output, with and without the hook, for
 * podman (precreate hook, --hooks-dir) and Docker (a private dockerd whose default runtime is the
 * wrapper; `--runtime runc` is the same daemon without it). Each container's first command prints
 * its own pids.max; the share that saw the policy value is the hook's result, and without the
 * hook it is the daemon's inotify path alone (a real `cgwatchdog run` confined to the
 * benchmark's cgroups, enforce, existing: replace). The hooks are what `install-hooks` installs:
 * the native client (dist/native/cgwatchdog-hook) asking that daemon's hook socket, the daemon's
 * own config file named by the hooks (its loaded config answers). `node -e 0` is the floor of a
 * Node start; the hook by itself on a podman spec, native and Node, beside it.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { hookCacheFile } from '../src/hook/hook-config';
import { DOCKER, IMAGE as DOCKER_IMAGE, startDocker } from '../test/helpers/docker';
import { CLI } from '../test/helpers/daemon';
import { benchRoot } from './lib/cgroups';
import { onCleanup, trackChild } from './lib/cleanup';
import { onLines } from './lib/lines';
import { sleep, summarize, type Summary } from './lib/stats';

const PODMAN_IMAGE = 'localhost/cgwd-busybox:latest';
const RUN = ['--runtime', 'runc', '--network', 'none', '--ulimit', 'nofile=10000:10000', '--ulimit', 'nproc=16384:16384'];
const PRINT_V1 = ['sh', '-c', 'read v < /sys/fs/cgroup/pids/pids.max; echo "$v"'];
// The cases where the inotify path alone is known to race: podman's runc writes its default
// 2048 after the cgroup appears (existing: replace must overwrite it), and Docker writes an
// 8-CPU container's quota after its pids cgroup appears (the daemon's first value is then 6144).
const PODMAN_ARGS = ['--cpus', '2'];
const PODMAN_POLICY = 6144;
const DOCKER_ARGS = ['--cpu-period', '100000', '--cpu-quota', '800000'];
const DOCKER_POLICY = 8192;

export interface HookVariant {
  runtime: 'podman' | 'docker';
  hook: boolean;
  /** Spawn of `podman run` / `docker run` -> its first stdout byte. */
  startToOutput: Summary;
  /** Containers whose first process printed the policy value. */
  sawPolicy: number;
  samples: number;
  /** What the first processes printed, counted. */
  values: Record<string, number>;
  policy: number;
  args: string[];
}

export interface HooksResult {
  variants: HookVariant[];
  /** p99 of (with hook) - p99 of (without), per runtime; and p50. */
  added: { runtime: string; p50: number | null; p99: number | null }[];
  nodeFloor: Summary;
  /** `node cli.js hook precreate` (the Node hook, what the native client falls back to). */
  hookAlone: Summary;
  /** The installed hook by itself (the native client and the daemon's answer), when native. */
  nativeAlone?: Summary;
  /** What install-hooks installed: the native client or the Node hook. */
  client: 'native' | 'node';
  /** podman with `/bin/cat` as its precreate hook: what podman's hook machinery alone adds (the floor of any hook). */
  podmanHookFloor?: { startToOutput: Summary; p50: number | null; p99: number | null };
  /** The daemon's own time per hook request, connection to answer (its "hook request served" lines). */
  daemonAnswer?: { podman: Summary; docker: Summary };
  target: string;
  note: string;
  skipped?: string[];
}

function timedRun(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<{ ms: number | null; out: string; code: number | null; err: string }> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env, cwd: os.tmpdir() });
    let first: number | null = null;
    let out = '';
    let err = '';
    c.stdout.on('data', (b: Buffer) => {
      first ??= Number(process.hrtime.bigint() - t0) / 1e6;
      out += b;
    });
    c.stderr.on('data', (b: Buffer) => (err += b));
    const t = setTimeout(() => c.kill('SIGKILL'), 60_000);
    c.on('close', (code) => {
      clearTimeout(t);
      resolve({ ms: first, out: out.trim(), code, err: err.trim().slice(-300) });
    });
    c.on('error', (e) => {
      clearTimeout(t);
      resolve({ ms: null, out, code: null, err: String(e) });
    });
  });
}

async function timeNode(args: string[], input: string | undefined, n: number, bin = process.execPath): Promise<Summary> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await new Promise<void>((resolve) => {
      const c = spawn(bin, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'ignore', 'ignore'] });
      if (input !== undefined) c.stdin!.end(input);
      c.on('close', () => resolve());
    });
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return summarize(ms);
}

/** The daemon's config (and the hooks'): confined to `root`, its hook socket in the benchmark's dir. */
function writeDaemonConfig(cfg: string, root: string, stateDir: string, hookSocket: string): void {
  // debug: the daemon logs each hook answer with its time ("hook request served").
  fs.writeFileSync(cfg, YAML.stringify({ mode: 'enforce', logLevel: 'debug', kernel: { manage: false }, paths: { stateDir, hookSocket, statusSocket: `${hookSocket}.status` }, discovery: { roots: [root] }, policy: { existing: 'replace' }, metrics: { enabled: false }, detection: { kmsg: false }, names: { podmanBinary: '' } }));
}

/** The daemon (inotify path, and the hook socket), on `cfg`: what a container gets without a hook. */
async function startDaemon(cfg: string, answers: number[] = []): Promise<() => Promise<void>> {
  const child = spawn(process.execPath, [CLI, 'run', '--config', cfg], { stdio: ['ignore', 'pipe', 'inherit'] });
  const untrack = trackChild(child, 'hooks bench daemon');
  let ready!: () => void;
  const up = new Promise<void>((r) => (ready = r));
  onLines(child.stdout!, (line) => {
    if (line.includes('"detection running"')) ready();
    if (line.includes('"hook request served"')) {
      try {
        answers.push((JSON.parse(line) as { ms: number }).ms);
      } catch {
        /* not one of its JSON lines */
      }
    }
  });
  await Promise.race([up, sleep(30_000).then(() => Promise.reject(new Error('the daemon did not get ready')))]);
  return async () => {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await untrack();
  };
}

function variant(runtime: 'podman' | 'docker', hook: boolean, runs: { ms: number | null; out: string }[], policy: number): HookVariant {
  const values: Record<string, number> = {};
  for (const r of runs) values[r.out || '(nothing)'] = (values[r.out || '(nothing)'] ?? 0) + 1;
  return { runtime, hook, samples: runs.length, startToOutput: summarize(runs.flatMap((r) => (r.ms === null ? [] : [r.ms]))), sawPolicy: runs.filter((r) => r.out === String(policy)).length, values, policy, args: runtime === 'podman' ? PODMAN_ARGS : DOCKER_ARGS };
}

export async function hooksBench(samples: number): Promise<HooksResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-bench-hooks-'));
  const rmDir = onCleanup(`temp dir ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true }));
  // podman: containers under a cgroup parent of the benchmark's own, the daemon watching it;
  // the hooks name the daemon's file (as on a host: one /etc/cgwatchdog/config.yaml).
  const parent = benchRoot('hooks-podman', []);
  const config = path.join(dir, 'daemon-podman.yaml');
  writeDaemonConfig(config, parent.rel, path.join(dir, 'daemon-state-podman'), path.join(dir, 'hook-podman.sock'));
  const dockerConfig = path.join(dir, 'daemon-docker.yaml');
  const rmCache = onCleanup('hook config cache', () => {
    for (const c of [config, dockerConfig]) fs.rmSync(hookCacheFile(c), { force: true });
  });
  const variants: HookVariant[] = [];
  const skipped: string[] = [];
  let client: 'native' | 'node' = 'node';
  let nodeFloor: Summary | undefined;
  let hookAlone: Summary | undefined;
  let nativeAlone: Summary | undefined;
  let podmanHookFloor: HooksResult['podmanHookFloor'];
  const podmanAnswers: number[] = [];
  const dockerAnswers: number[] = [];
  try {
    const install = (args: string[], cfg: string) => timedRun(process.execPath, [CLI, 'install-hooks', ...args, '--config', cfg]);
    const hooksDir = path.join(dir, 'hooks.d');
    const emptyDir = path.join(dir, 'empty.d');
    fs.mkdirSync(emptyDir);
    let stopDaemon: (() => Promise<void>) | undefined;
    try {
      const ip = await install(['--runtime', 'podman', '--hooks-dir', hooksDir], config);
      if (ip.code !== 0) throw new Error(`install-hooks podman: ${ip.err}`);
      const hook = (JSON.parse(fs.readFileSync(path.join(hooksDir, 'cgwatchdog-precreate.json'), 'utf8')) as { hook: { path: string; args: string[] } }).hook;
      client = hook.path === process.execPath ? 'node' : 'native';
      stopDaemon = await startDaemon(config, podmanAnswers);
      // The hook alone (the Node hook, and what install-hooks installed), and the floor of any Node process.
      const spec = JSON.stringify({ ociVersion: '1.0.2-dev', linux: { cgroupsPath: `/cgwd-bench-hooks-spec/libpod-${'a'.repeat(64)}`, resources: { pids: { limit: 0 }, cpu: { quota: 200000, period: 100000 } } } });
      await timeNode([CLI, 'hook', 'precreate', '--config', config], spec, 1); // fills the config cache
      nodeFloor = await timeNode(['-e', '0'], undefined, samples);
      hookAlone = await timeNode([CLI, 'hook', 'precreate', '--config', config], spec, samples);
      if (client === 'native') nativeAlone = await timeNode(hook.args.slice(1), spec, samples, hook.path);
      podmanAnswers.length = 0; // the container starts' answers only
      const catDir = path.join(dir, 'cat.d');
      fs.mkdirSync(catDir);
      fs.writeFileSync(path.join(catDir, 'cat.json'), JSON.stringify({ version: '1.0.0', hook: { path: '/bin/cat', args: ['cat'] }, when: { always: true }, stages: ['precreate'] }));
      const runs: Record<'hook' | 'none' | 'cat', { ms: number | null; out: string }[]> = { hook: [], none: [], cat: [] };
      for (let i = 0; i < samples; i++) {
        for (const k of ['hook', 'none', 'cat'] as const) {
          const r = await timedRun('podman', ['--hooks-dir', k === 'hook' ? hooksDir : k === 'cat' ? catDir : emptyDir, 'run', '--rm', ...RUN, '--cgroup-parent', parent.rel, ...PODMAN_ARGS, PODMAN_IMAGE, ...PRINT_V1]);
          if (r.code !== 0) throw new Error(`podman run: ${r.err}`);
          runs[k].push(r);
        }
      }
      variants.push(variant('podman', true, runs.hook, PODMAN_POLICY), variant('podman', false, runs.none, PODMAN_POLICY));
      const cat = summarize(runs.cat.flatMap((r) => (r.ms === null ? [] : [r.ms])));
      const none = variants[variants.length - 1]!.startToOutput;
      const d = (a: number | null, b: number | null) => (a === null || b === null ? null : Math.round((a - b) * 10) / 10);
      podmanHookFloor = { startToOutput: cat, p50: d(cat.p50, none.p50), p99: d(cat.p99, none.p99) };
    } finally {
      await stopDaemon?.();
      await parent.remove();
    }

    // Docker: the wrapper as the default runtime; --runtime runc is the same daemon without it.
    // The daemon's root is known once dockerd runs: the config is written again then (same socket).
    const dockerSocket = path.join(dir, 'hook-docker.sock');
    writeDaemonConfig(dockerConfig, '/cgwd-bench-hooks-docker-pending', path.join(dir, 'daemon-state-docker'), dockerSocket);
    const wrap = await install(['--runtime', 'docker', '--hooks-dir', path.join(dir, 'bin'), '--print-runtime-path'], dockerConfig);
    if (wrap.code !== 0) throw new Error(`install-hooks docker: ${wrap.err}`);
    let docker;
    try {
      docker = await startDocker({ dockerdArgs: ['--add-runtime', `cgwd-bench=${wrap.out}`, '--default-runtime', 'cgwd-bench'] });
    } catch (err) {
      skipped.push(`docker: ${(err as Error).message}`);
    }
    if (docker) {
      const stopDockerd = onCleanup('hooks bench dockerd', () => docker.stop());
      writeDaemonConfig(dockerConfig, docker.root, path.join(dir, 'daemon-state-docker'), dockerSocket);
      const stopDaemon2 = await startDaemon(dockerConfig, dockerAnswers);
      try {
        const env = { ...process.env, DOCKER_HOST: `unix://${docker.sock}` };
        const runs: Record<'hook' | 'none', { ms: number | null; out: string }[]> = { hook: [], none: [] };
        for (let i = 0; i < samples; i++) {
          for (const k of ['hook', 'none'] as const) {
            const r = await timedRun(DOCKER, ['run', '--rm', '--network', 'none', ...(k === 'none' ? ['--runtime', 'runc'] : []), ...DOCKER_ARGS, DOCKER_IMAGE, ...PRINT_V1], env);
            if (r.code !== 0) throw new Error(`docker run: ${r.err}`);
            runs[k].push(r);
          }
        }
        variants.push(variant('docker', true, runs.hook, DOCKER_POLICY), variant('docker', false, runs.none, DOCKER_POLICY));
      } finally {
        await stopDaemon2();
        await stopDockerd();
      }
    }
    const added = (['podman', 'docker'] as const).flatMap((rt) => {
      const h = variants.find((v) => v.runtime === rt && v.hook)?.startToOutput;
      const n = variants.find((v) => v.runtime === rt && !v.hook)?.startToOutput;
      if (!h || !n || h.p50 === null || n.p50 === null || h.p99 === null || n.p99 === null) return [];
      return [{ runtime: rt, p50: Math.round((h.p50 - n.p50) * 10) / 10, p99: Math.round((h.p99 - n.p99) * 10) / 10 }];
    });
    return {
      variants,
      added,
      nodeFloor: nodeFloor!,
      hookAlone: hookAlone!,
      ...(nativeAlone ? { nativeAlone } : {}),
      ...(podmanHookFloor ? { podmanHookFloor } : {}),
      daemonAnswer: { podman: summarize(podmanAnswers), docker: summarize(dockerAnswers) },
      client,
      target: 'with the hook 100% saw the policy value; the hook adds < 30 ms p99 to a start',
      note: `podman ${PODMAN_ARGS.join(' ')} (podman's 2048 in the spec, existing: replace: policy ${PODMAN_POLICY}); docker ${DOCKER_ARGS.join(' ')} (policy ${DOCKER_POLICY}). Alternating runs with and without the hook; the daemon runs during both (inotify path, and the hook socket the ${client} client asks). podman runs the precreate hook once per start; Docker runs the wrapper for every runc call (create, start, delete), which the native wrapper passes to runc with execv, asking the daemon only on create.`,
      ...(skipped.length ? { skipped } : {}),
    };
  } finally {
    await rmCache();
    await rmDir();
  }
}
