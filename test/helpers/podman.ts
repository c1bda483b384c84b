/**
 * Real containers for tests: podman + runc on this host's hybrid (v1) cgroups.
 *
 * - `crun` (podman's default) refuses hybrid cgroups, so every container runs with `--runtime runc`.
 * - The image is busybox only (`localhost/cgwd-busybox:latest`), made by `podman import` from a
 *   temp rootfs: no registry is reachable here.
 * - Every container a test starts must be named `cgwd-test-...`; tests call
 *   `removeContainer(name)` / `removeAllTestContainers()` in `t.after` (also on failure).
 *
 * Workloads (measured on the dev host, kernel 6.18, podman 4.3.1, runc):
 * - `forkBombArgs()`: busybox sh. A plain `while :; do sleep 1000 & done` EXITS (status 2) at the
 *   first failed fork (ash treats "can't fork" as fatal), and podman then removes the cgroup. So
 *   the bomb is an inner shell that forks until it dies, inside an outer loop that restarts it
 *   every second: the container stays up and `pids.events` `max` keeps rising (~1 per second).
 * - `memoryHogArgs()`: `dd if=/dev/zero of=/dev/null bs=64M count=1` allocates and touches a 64 MiB
 *   buffer; under `--memory 32m` it is OOM-killed at once (dd exit 137, ~0.2 s including podman
 *   start). With `keepAlive` (default) the shell then `exec sleep`s, so the cgroup stays and
 *   `memory.oom_control` shows `oom_kill 1`.
 * - `threadBombArgs()`: the host's dynamically linked `node`, bind-mounted read-only with the
 *   directories of its shared libraries (found with `ldd`), runs a worker_threads bomb. With
 *   `--pids-limit 40` it gets to 32 workers, then `new Worker()` throws ERR_WORKER_INIT_FAILED
 *   (EAGAIN). It keeps retrying every `retryMs`, so the pids counter keeps rising.
 *
 * Note: a container's main process is PID 1 in its namespace and ignores SIGTERM unless it
 * handles it, so a plain `podman rm -f` waits 10 s; we always pass `-t 0` (SIGKILL at once).
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { findOnPath } from '../../src/find-on-path';

export const BUSYBOX_IMAGE = 'localhost/cgwd-busybox:latest';
export const TEST_CONTAINER_PREFIX = 'cgwd-test-';

export interface RunContainerOptions {
  /** Must start with `cgwd-test-`. */
  name: string;
  cpus?: number;
  /** podman syntax, e.g. `32m`. */
  memory?: string;
  pidsLimit?: number;
  cmd: string[];
  /** Extra `podman run` options, placed before the image name (e.g. `-v a:b:ro`). */
  extra?: string[];
  /** Image; defaults to `BUSYBOX_IMAGE` (built on demand). */
  image?: string;
  /** `--network`; default `none` (no network set-up needed). `host` for a daemon that posts to a test receiver on 127.0.0.1. */
  network?: 'none' | 'host';
}

export interface RunningContainer {
  /** Full 64-hex container id. */
  id: string;
  name: string;
  /** Host PID of the container's main process. */
  pid: number;
  /** cgroup path relative to each v1 controller root, e.g. `/libpod_parent/libpod-<id>`. */
  cgroupPath: string;
}

/** The part of `podman run` that every test container shares. */
export interface WorkloadArgs {
  cmd: string[];
  extra: string[];
}

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

const onPath = (bin: string): boolean => findOnPath(bin, '') !== null;

function runSync(cmd: string, args: string[], timeoutMs = 120_000): RunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, cwd: os.tmpdir() });
  if (r.error) return { code: null, signal: null, stdout: '', stderr: String(r.error) };
  return { code: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** Runs a command (argument array, no shell) and collects its output. */
export function run(cmd: string, args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve) => {
    // podman 4.3's conmon writes an "oom" marker file into its working directory: keep it out of the tree.
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: os.tmpdir() });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, stdout, stderr: stderr + String(e) });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function describe(cmd: string, args: string[], r: RunResult): string {
  return `${cmd} ${args.join(' ')} -> code=${r.code} signal=${r.signal}: ${r.stderr.trim() || r.stdout.trim()}`;
}

/** Hard limit of a resource of this process, from /proc/self/limits ("Max processes"...). */
function hardLimit(label: string): number | undefined {
  try {
    const line = fs
      .readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith(label));
    if (!line) return undefined;
    const hard = line.slice(label.length).trim().split(/\s+/)[1];
    return hard === 'unlimited' ? undefined : Number(hard);
  } catch {
    return undefined;
  }
}

/**
 * `--ulimit` options: podman asks for more open files than this host's hard limit (20000) by
 * default, so pass explicit values. RLIMIT_NPROC counts ALL processes of the uid (root, host
 * wide) because containers lack CAP_SYS_RESOURCE, so nproc must be well above what tests
 * start: a low value would make forks fail for reasons other than pids.max.
 */
function ulimitArgs(): string[] {
  const nofile = Math.min(10_000, hardLimit('Max open files') ?? 10_000);
  // Measured: nproc above 32768 fails here ("error setting rlimit type 6: operation not
  // permitted", we lack CAP_SYS_RESOURCE) even though our hard limit is 96365. 16384 is safe.
  const nproc = Math.min(16_384, hardLimit('Max processes') ?? 16_384);
  return ['--ulimit', `nofile=${nofile}:${nofile}`, '--ulimit', `nproc=${nproc}:${nproc}`];
}

function baseRunArgs(network: 'none' | 'host' = 'none'): string[] {
  return ['--runtime', 'runc', '--network', network, ...ulimitArgs()];
}

function busyboxPath(): string | undefined {
  for (const p of ['/bin/busybox', '/usr/bin/busybox', '/usr/sbin/busybox']) {
    if (fs.existsSync(p)) return p;
  }
  return undefined;
}

/**
 * Builds the busybox image once (skipped when `podman image exists`): a temp rootfs with a copy
 * of the static busybox at /bin/busybox and a symlink per applet (`busybox --list`), plus
 * `lib -> usr/lib` and `lib64 -> usr/lib64` so host libraries can be bind-mounted for
 * `threadBombArgs()`. Tarred with `tar`, then `podman import`. Returns the image name.
 */
export function ensureBusyboxImage(name = BUSYBOX_IMAGE): string {
  if (runSync('podman', ['image', 'exists', name]).code === 0) return name;
  const bb = busyboxPath();
  if (!bb) throw new Error('busybox not found (apt-get install busybox-static)');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-busybox-'));
  try {
    const root = path.join(tmp, 'rootfs');
    for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'etc', 'usr/lib', 'usr/lib64', 'var', 'root']) {
      fs.mkdirSync(path.join(root, d), { recursive: true });
    }
    fs.chmodSync(path.join(root, 'tmp'), 0o1777);
    fs.copyFileSync(bb, path.join(root, 'bin/busybox'));
    fs.chmodSync(path.join(root, 'bin/busybox'), 0o755);
    const list = runSync(bb, ['--list']);
    if (list.code !== 0) throw new Error(describe(bb, ['--list'], list));
    for (const applet of list.stdout.split('\n').map((s) => s.trim())) {
      if (!applet || applet === 'busybox' || applet.includes('/')) continue;
      fs.symlinkSync('busybox', path.join(root, 'bin', applet));
    }
    fs.symlinkSync('usr/lib', path.join(root, 'lib'));
    fs.symlinkSync('usr/lib64', path.join(root, 'lib64'));
    fs.writeFileSync(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    fs.writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\n');
    const tarFile = path.join(tmp, 'rootfs.tar');
    const tarArgs = ['-C', root, '--numeric-owner', '--owner=0', '--group=0', '-cf', tarFile, '.'];
    const tar = runSync('tar', tarArgs);
    if (tar.code !== 0) throw new Error(describe('tar', tarArgs, tar));
    const imp = runSync('podman', ['import', tarFile, name]);
    if (imp.code !== 0) throw new Error(describe('podman', ['import', tarFile, name], imp));
    return name;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

let availability: { ok: boolean; why: string } | undefined;

/** Why podman cannot be used here, or undefined when it can. Cached per process. */
export function podmanUnavailableReason(): string | undefined {
  if (!availability) availability = checkAvailability();
  return availability.ok ? undefined : availability.why;
}

/** podman and runc on PATH, the busybox image builds, and a container can be started. */
export function podmanAvailable(): boolean {
  return podmanUnavailableReason() === undefined;
}

function checkAvailability(): { ok: boolean; why: string } {
  if (!onPath('podman')) return { ok: false, why: 'podman not on PATH' };
  if (!onPath('runc')) return { ok: false, why: 'runc not on PATH' };
  try {
    ensureBusyboxImage();
  } catch (e) {
    return { ok: false, why: `cannot build busybox image: ${(e as Error).message}` };
  }
  const args = ['run', '--rm', ...baseRunArgs(), BUSYBOX_IMAGE, 'true'];
  const r = runSync('podman', args, 60_000);
  if (r.code !== 0) return { ok: false, why: `cannot start a container: ${describe('podman', args, r)}` };
  return { ok: true, why: '' };
}

function assertTestName(name: string): void {
  if (!name.startsWith(TEST_CONTAINER_PREFIX) || name.length === TEST_CONTAINER_PREFIX.length) {
    throw new Error(`test container names must start with ${TEST_CONTAINER_PREFIX}: ${name}`);
  }
}

/** cgroup path of a process in the v1 `pids` hierarchy (falls back to the v2 `0::` line). */
export function cgroupPathOfPid(pid: number): string {
  const lines = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  let v2: string | undefined;
  for (const line of lines) {
    const m = /^(\d+):([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    if (m[2]!.split(',').includes('pids')) return m[3]!;
    if (m[1] === '0' && m[2] === '') v2 = m[3];
  }
  if (v2 !== undefined) return v2;
  throw new Error(`no pids cgroup for pid ${pid}`);
}

export interface ContainerState {
  id: string;
  pid: number;
  running: boolean;
  status: string;
  exitCode: number;
  oomKilled: boolean;
}

/** `podman inspect` of one container (undefined when it does not exist). */
export async function inspectContainer(name: string): Promise<ContainerState | undefined> {
  const fmt = '{{.Id}} {{.State.Pid}} {{.State.Running}} {{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}';
  const r = await run('podman', ['inspect', '--type', 'container', '--format', fmt, name]);
  if (r.code !== 0) return undefined;
  const [id, pid, running, status, exitCode, oom] = r.stdout.trim().split(/\s+/);
  return {
    id: id!,
    pid: Number(pid),
    running: running === 'true',
    status: status ?? '',
    exitCode: Number(exitCode),
    oomKilled: oom === 'true',
  };
}

function runArgs(opts: RunContainerOptions): string[] {
  assertTestName(opts.name);
  const image = opts.image ?? ensureBusyboxImage();
  const args = ['run', '-d', ...baseRunArgs(opts.network), '--name', opts.name];
  if (opts.cpus !== undefined) args.push('--cpus', String(opts.cpus));
  if (opts.memory !== undefined) args.push('--memory', opts.memory);
  if (opts.pidsLimit !== undefined) args.push('--pids-limit', String(opts.pidsLimit));
  args.push(...(opts.extra ?? []), image, ...opts.cmd);
  return args;
}

/**
 * `podman create`: the container and its id, with no cgroup yet (runc makes it at start). A
 * test that watches for the cgroup's creation knows which directory is its own this way.
 * Start it with `podman start <name>` through run().
 */
export async function createContainer(opts: RunContainerOptions): Promise<{ id: string; name: string }> {
  const args = runArgs(opts);
  args.splice(0, 2, 'create');
  const r = await run('podman', args);
  const id = r.stdout.trim().split('\n').pop()!.trim();
  if (r.code !== 0 || !/^[0-9a-f]{64}$/.test(id)) {
    await removeContainer(opts.name);
    throw new Error(describe('podman', args, r));
  }
  return { id, name: opts.name };
}

/**
 * `podman run -d` only: resolves with the full id once podman has started the container, which
 * may already have exited (use `waitContainer`). For short-lived workloads.
 */
export async function startContainer(opts: RunContainerOptions): Promise<{ id: string; name: string }> {
  const args = runArgs(opts);
  const r = await run('podman', args);
  if (r.code !== 0) {
    await removeContainer(opts.name);
    throw new Error(describe('podman', args, r));
  }
  const id = r.stdout.trim().split('\n').pop()!.trim();
  if (!/^[0-9a-f]{64}$/.test(id)) {
    await removeContainer(opts.name);
    throw new Error(`podman run printed no container id: ${r.stdout}`);
  }
  return { id, name: opts.name };
}

/**
 * `podman run -d --runtime runc --network none --ulimit nofile=.. --ulimit nproc=.. --name <name>
 * [--cpus N] [--memory M] [--pids-limit N] ...extra <image> ...cmd`. Resolves once podman has
 * started the container (its cgroup exists and runc has written its limits by then), with the
 * main process's host PID and its cgroup path (the `pids` line of /proc/<pid>/cgroup). Throws if
 * the container is not running right after start (its output is in the error), having removed it.
 */
export async function runContainer(opts: RunContainerOptions): Promise<RunningContainer> {
  const { id } = await startContainer(opts);
  const st = await inspectContainer(opts.name);
  let cgroupPath: string | undefined;
  try {
    if (st && st.running && st.pid > 0) cgroupPath = cgroupPathOfPid(st.pid);
  } catch {
    /* exited in between */
  }
  if (!st || !cgroupPath) {
    const logs = await run('podman', ['logs', opts.name]);
    await removeContainer(opts.name);
    throw new Error(
      `container ${opts.name} is not running after start (status=${st?.status} exit=${st?.exitCode}): ` +
        `${logs.stdout}${logs.stderr}`,
    );
  }
  return { id, name: opts.name, pid: st.pid, cgroupPath };
}

/** Waits for a container to exit; returns its exit code (137 = SIGKILL, e.g. OOM). */
export async function waitContainer(name: string, timeoutMs = 60_000): Promise<number> {
  const r = await run('podman', ['wait', name], timeoutMs);
  if (r.code !== 0) throw new Error(describe('podman', ['wait', name], r));
  return Number(r.stdout.trim());
}

/** `podman rm -f -t 0 <name>`; a container that does not exist is fine. */
export async function removeContainer(name: string): Promise<void> {
  assertTestName(name);
  const r = await run('podman', ['rm', '-f', '-t', '0', name]);
  if (r.code !== 0 && !/no such container/i.test(r.stderr)) {
    throw new Error(describe('podman', ['rm', '-f', '-t', '0', name], r));
  }
}

/** Names of all containers (any state) whose name starts with `cgwd-test-`. */
export async function listTestContainers(): Promise<string[]> {
  // Cleanup hooks call this too: without podman there is nothing of ours to list (the test
  // itself has failed on its prerequisite), and a hook must not throw ENOENT over that.
  if (!onPath('podman')) return [];
  const r = await run('podman', ['ps', '-a', '--format', '{{.Names}}']);
  if (r.code !== 0) throw new Error(describe('podman', ['ps', '-a'], r));
  return r.stdout
    .split('\n')
    .map((s) => s.trim())
    .filter((n) => n.startsWith(TEST_CONTAINER_PREFIX));
}

/**
 * Removes every `cgwd-test-*` container (or those starting with `prefix`, which must itself start
 * with `cgwd-test-`). For `t.after`. Mind that test files may run in parallel: the default
 * removes other files' containers too; pass a prefix of your own (see `testContainerName`).
 */
export async function removeAllTestContainers(prefix = TEST_CONTAINER_PREFIX): Promise<void> {
  if (!prefix.startsWith(TEST_CONTAINER_PREFIX)) throw new Error(`prefix must start with ${TEST_CONTAINER_PREFIX}`);
  const names = (await listTestContainers()).filter((n) => n.startsWith(prefix));
  if (names.length === 0) return;
  const r = await run('podman', ['rm', '-f', '-t', '0', ...names]);
  if (r.code !== 0 && (await listTestContainers()).some((n) => n.startsWith(prefix))) {
    throw new Error(describe('podman', ['rm', '-f', '-t', '0', ...names], r));
  }
}

/** A unique container name for a test: `cgwd-test-<tag>-<pid>-<random>`. */
export function testContainerName(tag: string): string {
  return `${TEST_CONTAINER_PREFIX}${tag}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * A busybox fork bomb that keeps the container alive: the inner shell forks `sleep`s until a
 * fork fails (then it exits: ash treats that as fatal), the outer loop restarts it each second.
 */
export function forkBombArgs(): WorkloadArgs {
  return {
    cmd: ['sh', '-c', 'while :; do sh -c "while :; do sleep 1000 & done"; sleep 1; done'],
    extra: [],
  };
}

/**
 * A busybox memory hog: `dd` with a `mb` MiB block (default 64) allocates and touches it, so
 * under `--memory 32m` it is OOM-killed. With keepAlive (default) the shell prints
 * `hog-exit=<status>` and then `exec sleep`s, so the cgroup (and its oom_kill count) stays.
 */
export function memoryHogArgs(opts: { mb?: number; keepAlive?: boolean } = {}): WorkloadArgs {
  const mb = opts.mb ?? 64;
  const dd = `dd if=/dev/zero of=/dev/null bs=${mb}M count=1`;
  const script = opts.keepAlive === false ? `exec ${dd}` : `${dd}; echo hog-exit=$?; exec sleep 100000`;
  return { cmd: ['sh', '-c', script], extra: [] };
}

/** The script the thread bomb runs (node, worker_threads). */
export const THREAD_BOMB_JS = `
const { Worker } = require('worker_threads');
const retryMs = Number(process.env.CGWD_RETRY_MS || 200);
let n = 0, failures = 0;
function spawnOne() {
  let w;
  try {
    w = new Worker('setInterval(() => {}, 1e9)', { eval: true });
  } catch (e) {
    if (failures++ === 0) console.log('thread-bomb: limit hit after ' + n + ' workers: ' + e.code + ' ' + e.message);
    setTimeout(spawnOne, retryMs);
    return;
  }
  w.on('online', () => { n++; spawnOne(); });
  w.on('error', (e) => { console.log('thread-bomb: worker error after ' + n + ': ' + e.code); setTimeout(spawnOne, retryMs); });
}
console.log('thread-bomb: start');
spawnOne();
setInterval(() => {}, 1e9);
`;

/** Directories (real paths) holding the shared libraries of a binary, from `ldd`. */
export function sharedLibDirs(binary: string): string[] {
  const r = runSync('ldd', [binary]);
  if (r.code !== 0) {
    if (/not a dynamic executable/.test(r.stdout + r.stderr)) return [];
    throw new Error(describe('ldd', [binary], r));
  }
  const dirs = new Set<string>();
  for (const line of r.stdout.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (!m) continue;
    // Resolve the directory, not the file: the file name (e.g. /lib64/ld-linux-x86-64.so.2) is
    // what the ELF asks for, and must keep resolving inside the container.
    dirs.add(fs.realpathSync(path.dirname(m[1]!)));
  }
  return [...dirs].sort();
}

/**
 * A thread bomb: busybox cannot make threads, so the host's `node` binary is bind-mounted
 * read-only at /usr/local/bin/node, with the real directories of its shared libraries at the
 * same paths (the image has `lib -> usr/lib`, `lib64 -> usr/lib64`, so the paths in the ELF
 * resolve). It starts workers until `new Worker()` fails with EAGAIN, prints
 * `thread-bomb: limit hit after N workers...`, and retries every `retryMs` ms.
 * Use with `pidsLimit` (node itself needs ~8 threads; --pids-limit 40 gives 32 workers).
 */
export function threadBombArgs(opts: { retryMs?: number } = {}): WorkloadArgs {
  const node = fs.realpathSync(process.execPath);
  const extra: string[] = ['-v', `${node}:/usr/local/bin/node:ro`];
  for (const dir of sharedLibDirs(node)) extra.push('-v', `${dir}:${dir}:ro`);
  extra.push('-e', `CGWD_RETRY_MS=${opts.retryMs ?? 200}`);
  return { cmd: ['/usr/local/bin/node', '-e', THREAD_BOMB_JS], extra };
}
