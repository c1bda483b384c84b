/**
 * Issue 11 for Docker (no hook registry): a private dockerd (docker.io 20.10, its own
 * containerd, runc 1.1.5) whose default runtime is the wrapper `install-hooks --runtime docker`
 * wrote. Containers print their own pids.max as their first command; `--runtime runc` on the
 * same daemon is the run without the wrapper, which must not show the policy value. Then what
 * the wrapper must pass through untouched: stdin, `docker exec`, the exit status, `docker stop`;
 * and a broken config, fail open and fail closed. A fake runc (a script of the test's own, set
 * as hooks.runcPath) shows the exact argv, the --preserve-fds descriptors, stdin, signals and
 * the exit status crossing the wrapper.
 *
 * install-hooks installs the native wrapper (a copy of dist/native/cgwatchdog-hook and its .conf):
 * a daemon serves the wrappers' hook socket for the whole file (checked: it answered), and one
 * more runtime's wrapper has no daemon, so it runs the Node wrapper, with the same result.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { isRoot, need } from '../helpers/prereq';
import { DOCKER, IMAGE, startDocker, type PrivateDocker } from '../helpers/docker';
import { applyEntry, hookSetup, installHooks, startHookDaemon, type HookDaemon, type HookSetup } from '../helpers/hooks';

const READ_PIDS_MAX = ['sh', '-c', 'read v < /sys/fs/cgroup/pids/pids.max; echo "pids.max=$v"'];

interface World {
  s: HookSetup;
  wrapper: string;
  dockerd: PrivateDocker;
  open: HookSetup;
  closed: HookSetup;
  daemon: HookDaemon;
}

let world: Promise<World> | undefined;
/** The dockerd and its wrappers live for the whole file: their temp dirs go after it stops. */
const fileCleanups: (() => void | Promise<void>)[] = [];
const fileScope = { after: (fn: () => void | Promise<void>) => void fileCleanups.push(fn) } as unknown as Pick<TestContext, 'after'>;

/** One dockerd for the file: the wrapper as its default runtime, and a fail-open and a fail-closed wrapper beside it. */
function getWorld(): Promise<World> {
  need(isRoot(), 'root (dockerd)');
  world ??= (async () => {
    const s = hookSetup(fileScope, 'docker', { policy: { existing: 'keep-lower' } });
    const wrapper = (await installHooks(['--runtime', 'docker', '--hooks-dir', path.join(s.dir, 'bin'), '--config', s.configFile, '--print-runtime-path'])).trim();
    const broken = (failClosed: boolean, stateDir: string) => `kernel: {manage: false}\npaths: {stateDir: ${stateDir}}\nhooks: {failClosed: ${failClosed}}\npolicy: {minCores: six}\n`;
    const open = hookSetup(fileScope, 'docker-open', '');
    const closed = hookSetup(fileScope, 'docker-closed', '');
    const wrappers: string[] = [];
    for (const [h, fc] of [[open, false], [closed, true]] as const) {
      fs.writeFileSync(h.configFile, broken(fc, h.stateDir));
      const p = path.join(h.dir, 'bin', 'cgwatchdog-runc');
      // install-hooks refuses a broken config: install with the good one, then break it (the
      // native wrapper's options are in its .conf; the Node wrapper has them in its script).
      await installHooks(['--runtime', 'docker', '--hooks-dir', path.dirname(p), '--config', s.configFile]);
      const f = fs.existsSync(`${p}.conf`) ? `${p}.conf` : p;
      fs.writeFileSync(f, f === p ? fs.readFileSync(p, 'utf8').replace(JSON.stringify(s.configFile), JSON.stringify(h.configFile)) : fs.readFileSync(f, 'utf8').replace(`config=${s.configFile}`, `config=${h.configFile}`));
      wrappers.push(p);
    }
    // A wrapper whose hook socket nobody serves: the native wrapper runs the Node wrapper.
    const lone = hookSetup(fileScope, 'docker-nodaemon', { policy: { existing: 'keep-lower' } });
    const loneWrapper = (await installHooks(['--runtime', 'docker', '--hooks-dir', path.join(lone.dir, 'bin'), '--config', lone.configFile, '--print-runtime-path'])).trim();
    const daemon = await startHookDaemon(fileScope, s);
    const dockerd = await startDocker({
      dockerdArgs: ['--add-runtime', `cgwd-test=${wrapper}`, '--default-runtime', 'cgwd-test', '--add-runtime', `cgwd-test-open=${wrappers[0]}`, '--add-runtime', `cgwd-test-closed=${wrappers[1]}`, '--add-runtime', `cgwd-test-nodaemon=${loneWrapper}`],
    });
    return { s, wrapper, dockerd, open, closed, daemon };
  })();
  return world;
}

test.after(async () => {
  try {
    if (world) await (await world.catch(() => undefined))?.dockerd.stop();
  } finally {
    for (const f of fileCleanups.reverse()) await f();
  }
});

function dockerIn(w: World, args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(DOCKER, args, { input, encoding: 'utf8', timeout: 60_000, env: { ...process.env, DOCKER_HOST: `unix://${w.dockerd.sock}` } });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

const pidsMaxOf = (out: string): string | undefined => /pids\.max=(\S+)/.exec(out)?.[1];

test('docker with the wrapper as default runtime: --cpus 2 -> 6144 and an 8-CPU quota -> 8192 for the first process; --runtime runc (no wrapper) shows neither', async (t) => {
  const w = await getWorld();
  for (const [args, want] of [[['--cpus', '2'], '6144'], [['--cpu-period', '100000', '--cpu-quota', '800000'], '8192']] as const) {
    const hooked = dockerIn(w, ['run', '--rm', '--network', 'none', ...args, IMAGE, ...READ_PIDS_MAX]);
    const plain = dockerIn(w, ['run', '--rm', '--network', 'none', '--runtime', 'runc', ...args, IMAGE, ...READ_PIDS_MAX]);
    t.diagnostic(`${args.join(' ')}: ${pidsMaxOf(hooked.stdout)} with the wrapper, ${pidsMaxOf(plain.stdout)} without`);
    assert.equal(hooked.status, 0, hooked.stderr);
    assert.equal(pidsMaxOf(hooked.stdout), want);
    assert.equal(plain.status, 0, plain.stderr);
    assert.notEqual(pidsMaxOf(plain.stdout), want, 'without the wrapper the first process must not see the policy value');
  }
  assert.ok(fs.existsSync(`${w.wrapper}.conf`), 'the native wrapper is installed');
  const served = await w.daemon.served('runc-create');
  assert.ok(served >= 2, `the hook socket answered the wrapper's creates (${served})`);
});

test('docker wrapper with no daemon serving its socket: the native wrapper runs the Node wrapper, and --cpus 2 still gives 6144', async (t) => {
  const w = await getWorld();
  const before = await w.daemon.served();
  const r = dockerIn(w, ['run', '--rm', '--network', 'none', '--runtime', 'cgwd-test-nodaemon', '--cpus', '2', IMAGE, ...READ_PIDS_MAX]);
  t.diagnostic(`no daemon: pids.max ${pidsMaxOf(r.stdout)}`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(pidsMaxOf(r.stdout), '6144');
  assert.equal(await w.daemon.served(), before, 'nobody asked the daemon');
});

test('through the wrapper: apply --json reports the same value with origin "creation"; docker exec, piped stdin (docker run -i), exit 7 and docker stop pass through', async (t) => {
  const w = await getWorld();
  const name = 'cgwd-test-hooks-docker-live';
  t.after(() => void dockerIn(w, ['rm', '-f', name]));
  const r = dockerIn(w, ['run', '-d', '--name', name, '--network', 'none', '--cpu-period', '100000', '--cpu-quota', '800000', IMAGE, 'sh', '-c', 'read v < /sys/fs/cgroup/pids/pids.max; echo "pids.max=$v"; exec sleep 1000']);
  assert.equal(r.status, 0, r.stderr);
  const id = r.stdout.trim();
  const cgroupPath = `${w.dockerd.cgroupParent}/${id}`;
  let first: string | undefined;
  for (let i = 0; i < 100 && !first; i++) {
    first = pidsMaxOf(dockerIn(w, ['logs', name]).stdout);
    if (!first) await new Promise((res) => setTimeout(res, 50));
  }
  assert.equal(first, '8192');
  const rec = w.s.record(cgroupPath);
  assert.equal(rec?.stage, 'runc-create');
  assert.equal(rec?.value, 8192);
  const applyCfg = path.join(w.s.dir, 'apply.yaml');
  fs.writeFileSync(applyCfg, YAML.stringify({ kernel: { manage: false }, paths: { stateDir: w.s.stateDir }, discovery: { roots: [w.dockerd.root] } }));
  const e = await applyEntry(applyCfg, cgroupPath);
  assert.equal(e.runtime, 'docker');
  assert.equal(e.policyValue, 8192);
  assert.equal(e.oldPidsMax, 8192);
  assert.equal(e.limitOrigin, 'creation');
  assert.equal(e.hook?.stage, 'runc-create');

  const ex = dockerIn(w, ['exec', name, 'cat', '/sys/fs/cgroup/pids/pids.max']);
  assert.equal(ex.status, 0, ex.stderr);
  assert.equal(ex.stdout.trim(), '8192');

  const piped = dockerIn(w, ['run', '-i', '--rm', '--network', 'none', IMAGE, 'sh', '-c', 'cat; echo done'], 'line one\nline two\n');
  assert.equal(piped.status, 0, piped.stderr);
  assert.equal(piped.stdout, 'line one\nline two\ndone\n');

  const seven = dockerIn(w, ['run', '--rm', '--network', 'none', IMAGE, 'sh', '-c', 'exit 7']);
  assert.equal(seven.status, 7, seven.stderr);

  const t0 = Date.now();
  const stop = dockerIn(w, ['stop', '-t', '1', name]);
  assert.equal(stop.status, 0, stop.stderr);
  t.diagnostic(`docker stop -t 1 (pid 1 ignores SIGTERM, killed after 1 s): ${Date.now() - t0} ms`);
  assert.equal(dockerIn(w, ['inspect', '--format', '{{.State.Running}}', name]).stdout.trim(), 'false');
});

test('docker wrapper with a broken config: fail open starts the container without the limit (recorded); fail closed refuses it, saying why', async (t) => {
  const w = await getWorld();
  const open = dockerIn(w, ['run', '--rm', '--network', 'none', '--runtime', 'cgwd-test-open', '--cpus', '2', IMAGE, ...READ_PIDS_MAX]);
  assert.equal(open.status, 0, open.stderr);
  assert.equal(pidsMaxOf(open.stdout), 'max');
  const openRec = w.open.records().find((r) => r.failed);
  assert.equal(openRec?.refused, false);
  assert.match(openRec?.reason ?? '', /policy\.minCores/);
  const closed = dockerIn(w, ['run', '--rm', '--network', 'none', '--runtime', 'cgwd-test-closed', IMAGE, 'echo', 'ran']);
  t.diagnostic(`fail closed: docker run exit ${closed.status}: ${closed.stderr.trim()}`);
  assert.notEqual(closed.status, 0);
  assert.doesNotMatch(closed.stdout, /ran/);
  assert.match(closed.stderr, /PID limit could not be set/);
  assert.equal(w.closed.records().find((r) => r.failed)?.refused, true);
});

test('the wrapper passes to runc the exact argv (global flags first), the --preserve-fds descriptors, stdin, our signals and the exit status', async (t) => {
  need(isRoot(), 'root');
  const s = hookSetup(t, 'fake-runc', {});
  const fake = path.join(s.dir, 'fake-runc');
  const report = path.join(s.dir, 'report.json');
  // A runc stand-in: writes what it got, then exits as asked (or waits for a signal).
  fs.writeFileSync(fake, `#!${process.execPath}
const fs = require('fs');
const stdin = fs.readFileSync(0, 'utf8');
let fd3 = null; try { fd3 = fs.readFileSync('/proc/self/fd/3', 'utf8'); } catch (e) { fd3 = String(e.code); }
fs.writeFileSync(${JSON.stringify(report)}, JSON.stringify({ argv: process.argv.slice(2), stdin, fd3, cwd: process.cwd() }));
if (process.argv.includes('wait-for-signal')) { process.on('SIGUSR1', () => process.exit(42)); setInterval(() => {}, 1000); fs.writeFileSync(${JSON.stringify(report)} + '.ready', ''); }
else process.exit(Number(process.env.FAKE_EXIT || 0));
`, { mode: 0o755 });
  fs.writeFileSync(s.configFile, YAML.stringify({ kernel: { manage: false }, paths: { stateDir: s.stateDir }, hooks: { runcPath: fake } }));
  const wrapper = (await installHooks(['--runtime', 'docker', '--hooks-dir', path.join(s.dir, 'bin'), '--config', s.configFile, '--print-runtime-path'])).trim();
  const fd3File = path.join(s.dir, 'fd3');
  fs.writeFileSync(fd3File, 'through fd 3');
  const argv = ['--root', '/run/x', '--log', path.join(s.dir, 'log.json'), '--log-format', 'json', '--systemd-cgroup', 'exec', '--preserve-fds', '1', '--process', '/p.json', 'id-1'];
  const fd = fs.openSync(fd3File, 'r');
  const child = spawn(wrapper, argv, { stdio: ['pipe', 'inherit', 'inherit', fd], env: { ...process.env, FAKE_EXIT: '7' } });
  child.stdin!.end('stdin bytes');
  const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
  fs.closeSync(fd);
  assert.equal(code, 7, 'the exit status of runc');
  const got = JSON.parse(fs.readFileSync(report, 'utf8')) as { argv: string[]; stdin: string; fd3: string };
  assert.deepEqual(got.argv, argv);
  assert.equal(got.stdin, 'stdin bytes');
  assert.equal(got.fd3, 'through fd 3');

  const waiting = spawn(wrapper, ['state', 'wait-for-signal'], { stdio: ['ignore', 'inherit', 'inherit'] });
  for (let i = 0; i < 200 && !fs.existsSync(`${report}.ready`); i++) await new Promise((res) => setTimeout(res, 25));
  assert.ok(fs.existsSync(`${report}.ready`), 'the fake runc started');
  waiting.kill('SIGUSR1');
  const code2 = await new Promise<number | null>((res) => waiting.on('exit', (c) => res(c)));
  assert.equal(code2, 42, 'SIGUSR1 reached runc through the wrapper');
  assert.equal(s.records().length, 0, 'exec and state apply no policy');
});
