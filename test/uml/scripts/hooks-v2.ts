/**
 * Runs inside user-mode Linux (see test/uml/hooks-v2.test.ts): issue 11 on a real cgroup v2
 * kernel. podman + runc with `--hooks-dir` on the hooks `cgwatchdog install-hooks` wrote
 * (precreate for podman, prestart-only for the CRI-O path) and on an empty directory; each
 * container's first command prints its own pids.max (its cgroup namespace's root on v2).
 * install-hooks installs the native client: a daemon (observe, touching nothing) serves the
 * hooks' socket during the runs; one more run after it stopped takes the Node hook fallback.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { emit, inUml } from '../in-uml';
import { DaemonProc, runMain, writeConfig } from './daemon-util';
import { IMAGE, setupPodman } from './podman-v2';

const CLI = path.resolve(__dirname, '..', '..', '..', 'src', 'cli.js');
const DIR = '/run/cgwd-hooks';
const PRINT = ['sh', '-c', 'read v < /sys/fs/cgroup/pids.max; echo "pids.max=$v"'];

function sh(bin: string, args: string[], timeoutMs = 60_000): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: (r.stdout ?? '').trim(), stderr: (r.stderr ?? '').trim() };
}

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  return sh(process.execPath, [CLI, ...args]);
}

async function main(): Promise<void> {
  if (!inUml()) throw new Error('run this through test/helpers/uml.ts runInUml()');
  setupPodman();
  fs.mkdirSync(path.join(DIR, 'empty.d'), { recursive: true });
  const config = path.join(DIR, 'config.yaml');
  const hookSocket = path.join(DIR, 'hook.sock');
  fs.writeFileSync(config, `kernel: {manage: false}\npaths: {cgroupRoot: /sys/fs/cgroup, stateDir: ${DIR}/state, hookSocket: ${hookSocket}}\npolicy: {existing: keep-lower}\nmetrics: {enabled: false}\n`);
  const installs = ['podman', 'crio'].map((rt) => cli(['install-hooks', '--runtime', rt, '--hooks-dir', path.join(DIR, `${rt}.d`), '--config', config]));
  emit({ check: 'setup', installs: installs.map((r) => ({ status: r.status, out: r.stdout, err: r.stderr })) });
  const daemonConfig = writeConfig('cgwd-hooks-daemon', {
    mode: 'observe',
    logLevel: 'debug',
    kernel: { manage: false },
    metrics: { enabled: false },
    detection: { kmsg: false },
    discovery: { roots: ['/cgwd-hooks-daemon-none'] },
    paths: { cgroupRoot: '/sys/fs/cgroup', stateDir: path.join(DIR, 'daemon-state'), statusSocket: path.join(DIR, 'status.sock'), hookSocket },
  });
  const daemon = new DaemonProc(daemonConfig, 'hooks');
  const listening = (await daemon.waitMsg('hook socket listening', 90_000)) !== null;

  const runs: Record<string, unknown>[] = [];
  for (const [cores, quota] of [[2, '200000'], [8, '800000']] as const) {
    for (const dir of ['podman.d', 'crio.d', 'empty.d']) {
      const t0 = Date.now();
      const r = sh('/usr/bin/podman', ['--hooks-dir', path.join(DIR, dir), 'run', '--rm', '--pids-limit', '-1', '--cpu-period', '100000', '--cpu-quota', quota, IMAGE, ...PRINT]);
      runs.push({ cores, dir, status: r.status, pidsMax: /pids\.max=(\S+)/.exec(r.stdout)?.[1] ?? null, ms: Date.now() - t0, err: r.stderr.slice(-300) });
    }
  }
  emit({ check: 'runs', runs });

  // A live one, for apply --json to look at.
  const name = 'cgwd-test-hooks-live';
  const id = sh('/usr/bin/podman', ['--hooks-dir', path.join(DIR, 'podman.d'), 'run', '-d', '--name', name, '--pids-limit', '-1', '--cpu-period', '100000', '--cpu-quota', '800000', IMAGE, 'sleep', '1000']).stdout;
  try {
    const rel = `/libpod_parent/libpod-${id}`;
    const a = cli(['apply', '--dry-run', '--json', '--config', config]);
    const entry = a.status === 0 ? (JSON.parse(a.stdout) as { containers: Record<string, unknown>[] }).containers.find((c) => c.cgroupPath === rel) : undefined;
    emit({ check: 'apply', status: a.status, stderr: a.stderr.slice(-500), entry: entry ?? null, pidsMax: fs.readFileSync(path.join('/sys/fs/cgroup', rel, 'pids.max'), 'utf8').trim() });
  } finally {
    sh('/usr/bin/podman', ['rm', '-f', '-t', '0', name]);
  }
  // After it stopped: spawnSync above held the daemon's output in the pipe, unread.
  await daemon.stop();
  await new Promise((r) => setTimeout(r, 200));
  const served = daemon.lines.filter((l) => l.msg === 'hook request served');
  daemon.save();
  emit({ check: 'daemon', listening, served: served.map((l) => ({ stage: l.stage, config: l.config, ms: l.ms })), problems: daemon.problems().map((l) => l.msg) });

  // No daemon now: the native client execs the Node hook, the first process still sees 8192.
  const t0 = Date.now();
  const r = sh('/usr/bin/podman', ['--hooks-dir', path.join(DIR, 'podman.d'), 'run', '--rm', '--pids-limit', '-1', '--cpu-period', '100000', '--cpu-quota', '800000', IMAGE, ...PRINT]);
  emit({ check: 'nodaemon', status: r.status, socketGone: !fs.existsSync(hookSocket), pidsMax: /pids\.max=(\S+)/.exec(r.stdout)?.[1] ?? null, ms: Date.now() - t0, err: r.stderr.slice(-300) });
}

runMain(main, emit);
