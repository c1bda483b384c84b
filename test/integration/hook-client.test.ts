/**
 * The native client (native/hook-client.c, built by `npm run build` into dist/native/) against a
 * real hook socket (serveHooks in this process) and against none, a garbage one and a silent
 * one: its output must be the Node hook's in every case (the socket's answer, or the Node hook
 * it execs with the same stdin), and the wrapper must hand runc the exact argv after writing
 * the policy into the bundle (same mode), touching the socket only for create/run.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { createLogger } from '../../src/log';
import { loadConfig } from '../../src/config/load';
import { configIdentity, hookCacheFile } from '../../src/hook/hook-config';
import { encodeFrame, serveHooks, type HookServer } from '../../src/hook/hook-server';
import { runHook } from '../../src/hook/oci-hook';
import { isRoot, need } from '../helpers/prereq';
import { startDaemon } from '../helpers/daemon';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const NATIVE = path.join(ROOT, 'dist', 'native', 'cgwatchdog-hook');
const CLI = path.join(ROOT, 'dist', 'src', 'cli.js');
const spec = (limit: number, cgroupsPath: string | null = '/cgwd-test-hook-client/libpod-abc') =>
  JSON.stringify({ ociVersion: '1.0.2-dev', linux: { ...(cgroupsPath ? { cgroupsPath } : {}), resources: { pids: { limit }, cpu: { quota: 200000, period: 100000 } } } });

interface Setup {
  dir: string;
  config: string;
  socket: string;
  stateDir: string;
  serve(): Promise<HookServer>;
}

function setup(t: TestContext, extra: Record<string, unknown> = {}): Setup {
  need(fs.existsSync(NATIVE), `the native client ${NATIVE} (npm run build with gcc)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-test-hook-client-'));
  const socket = path.join(dir, 'hook.sock');
  const stateDir = path.join(dir, 'state');
  const config = path.join(dir, 'config.yaml');
  fs.writeFileSync(config, YAML.stringify({ kernel: { manage: false }, paths: { stateDir, hookSocket: socket }, policy: { existing: 'replace' }, ...extra }));
  t.after(() => {
    fs.rmSync(hookCacheFile(config), { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir,
    config,
    socket,
    stateDir,
    async serve() {
      const log = createLogger('fatal');
      const s = await serveHooks(socket, () => ({ config: loadConfig(config), file: config, identity: configIdentity(config) }), log);
      assert.ok(s);
      t.after(() => s.close());
      return s;
    },
  };
}

function runNative(args: string[], input: string, opts: { cwd?: string; fd3?: number } = {}): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const stdio: ('pipe' | number)[] = ['pipe', 'pipe', 'pipe'];
    if (opts.fd3 !== undefined) stdio.push(opts.fd3);
    const c = spawn(NATIVE, args, { stdio, cwd: opts.cwd });
    let stdout = '';
    let stderr = '';
    c.stdout!.on('data', (b: Buffer) => (stdout += b));
    c.stderr!.on('data', (b: Buffer) => (stderr += b));
    c.stdin!.on('error', () => undefined); // a wrapper's runc may not read it
    c.stdin!.end(input);
    c.on('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - t0 }));
  });
}

const hookArgs = (s: Setup, stage = 'precreate', more: string[] = []) => ['--socket', s.socket, ...more, '--node', process.execPath, '--cli', CLI, '--config', s.config, 'hook', stage];

test('native hook: with the daemon, without it, with a garbage and a silent socket: always the Node hook\'s output', async (t) => {
  const s = setup(t);
  const input = spec(0);
  const node = await runHook('precreate', input, { configFile: s.config });
  assert.match(node.stdout, /"limit":6144/);

  const none = await runNative(hookArgs(s), input);
  assert.deepEqual([none.code, none.stdout], [0, node.stdout], `no daemon: the Node hook runs (${none.stderr})`);

  const server = await s.serve();
  const served = await runNative(hookArgs(s), input);
  assert.deepEqual([served.code, served.stdout, served.stderr], [0, node.stdout, '']);
  assert.equal(server.served, 1, 'the socket answered');
  t.diagnostic(`no daemon (Node hook): ${none.ms} ms; through the socket: ${served.ms} ms`);
  await server.close();

  for (const [what, answer] of [
    ['garbage', (c: net.Socket) => c.end(Buffer.from([0, 0, 0, 5, 104, 101, 108, 108, 111]))],
    ['a wrong shape', (c: net.Socket) => c.end(encodeFrame({ exitCode: 'zero', stdout: '', log: [] }))],
    ['an exit code out of range', (c: net.Socket) => c.end(encodeFrame({ exitCode: 300, stdout: '', log: [] }))],
    ['silence', () => undefined],
  ] as const) {
    const fake = net.createServer((c) => {
      c.on('error', () => undefined);
      c.once('data', () => answer(c));
    });
    await new Promise<void>((r) => fake.listen(s.socket, r));
    const r = await runNative(hookArgs(s, 'precreate', ['--timeout-ms', '300']), input);
    await new Promise<void>((res) => fake.close(() => res()));
    assert.deepEqual([r.code, r.stdout], [0, node.stdout], `${what}: the Node hook runs (${r.stderr})`);
    if (what === 'silence') assert.ok(r.ms >= 300, `waited for the timeout (${r.ms} ms)`);
    fs.rmSync(s.socket, { force: true });
  }
});

test('native hook, fail closed (a spec without cgroupsPath): exit 1 and the reason on stderr, through the socket and through the Node fallback alike', async (t) => {
  const s = setup(t, { hooks: { failClosed: true } });
  const input = spec(0, null);
  const fallback = await runNative(hookArgs(s), input);
  await s.serve();
  const socket = await runNative(hookArgs(s), input);
  for (const r of [fallback, socket]) {
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /no usable linux\.cgroupsPath.*container refused \(hooks\.failClosed\)/);
  }
});

test('native hook: paths must be absolute, a missing --node is refused, never a shell', async (t) => {
  const s = setup(t);
  for (const args of [['--node', 'node', '--cli', CLI, 'hook', 'precreate'], ['--cli', CLI, 'hook', 'precreate'], ['--socket', 'rel.sock', '--node', process.execPath, '--cli', CLI, 'hook', 'precreate']]) {
    const r = await runNative(args, spec(0));
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /absolute path/);
  }
  void s;
});

test('native wrapper: create gets the policy in the bundle (same mode) and runc the exact argv, fds and exit status; other commands never touch the socket; the Node wrapper when nobody answers', async (t) => {
  const s = setup(t);
  const report = path.join(s.dir, 'report.json');
  const fake = path.join(s.dir, 'fake-runc');
  fs.writeFileSync(fake, `#!${process.execPath}
const fs = require('fs');
let fd3 = null; try { fd3 = fs.readFileSync('/proc/self/fd/3', 'utf8'); } catch (e) { fd3 = String(e.code); }
fs.appendFileSync(${JSON.stringify(report)}, JSON.stringify({ argv: process.argv.slice(2), argv0: process.argv0, stdin: fs.readFileSync(0, 'utf8'), fd3, cwd: process.cwd() }) + '\\n');
process.exit(7);
`, { mode: 0o755 });
  // As install-hooks does: --runc is the config's hooks.runcPath, which the Node wrapper reads.
  fs.writeFileSync(s.config, YAML.stringify({ ...YAML.parse(fs.readFileSync(s.config, 'utf8')), hooks: { runcPath: fake } }));
  const bundle = path.join(s.dir, 'bundle');
  fs.mkdirSync(bundle);
  const configJson = path.join(bundle, 'config.json');
  const fd3File = path.join(s.dir, 'fd3');
  fs.writeFileSync(fd3File, 'through fd 3');
  const wrap = (argv: string[], cwd?: string) => {
    const fd = fs.openSync(fd3File, 'r');
    return runNative(['--socket', s.socket, '--node', process.execPath, '--cli', CLI, '--config', s.config, '--runc', fake, 'runc-wrapper', '--', ...argv], 'stdin bytes', { cwd, fd3: fd }).finally(() => fs.closeSync(fd));
  };
  const reports = () => fs.readFileSync(report, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { argv: string[]; stdin: string; fd3: string; cwd: string });
  const server = await s.serve();

  fs.writeFileSync(configJson, spec(0, '/cgwd-test-hook-client/docker-1'), { mode: 0o640 });
  fs.chmodSync(configJson, 0o640);
  const argv = ['--root', '/run/x', '--log', path.join(s.dir, 'log.json'), '--log-format', 'json', '--systemd-cgroup', 'create', '--bundle', '.', '--pid-file', '/p', '--preserve-fds', '1', 'id-1'];
  const r = await wrap(argv, bundle);
  assert.equal(r.code, 7, r.stderr);
  assert.equal(server.served, 1);
  assert.match(fs.readFileSync(configJson, 'utf8'), /"limit":6144/);
  assert.equal(fs.statSync(configJson).mode & 0o7777, 0o640, 'the same mode');
  assert.deepEqual(fs.readdirSync(bundle), ['config.json'], 'no temp file left');
  const got = reports()[0]!;
  assert.deepEqual(got.argv, argv);
  assert.equal(got.stdin, 'stdin bytes');
  assert.equal(got.fd3, 'through fd 3');
  assert.equal(got.cwd, bundle);

  for (const cmd of [['state', 'id-1'], ['--root', '/run/x', 'delete', '--force', 'id-1'], ['exec', '--process', '/p.json', 'id-1']]) {
    const x = await wrap(cmd);
    assert.equal(x.code, 7);
    assert.deepEqual(reports().pop()!.argv, cmd);
  }
  assert.equal(server.served, 1, 'only create/run ask the daemon');

  await server.close();
  fs.writeFileSync(configJson, spec(0, '/cgwd-test-hook-client/docker-2'));
  const fb = await wrap(['create', '--bundle', bundle, 'id-2']);
  assert.equal(fb.code, 7, fb.stderr);
  assert.match(fs.readFileSync(configJson, 'utf8'), /"limit":6144/, 'the Node wrapper applied it');
  assert.deepEqual(reports().pop()!.argv, ['create', '--bundle', bundle, 'id-2']);
});

test('the daemon serves the socket from its start with its own config, reads an edited file as the Node hook would until a reload (SIGHUP keeps the socket), removes it at stop', async (t) => {
  need(isRoot(), 'root (the daemon in enforce mode)');
  need(fs.existsSync(NATIVE), `the native client ${NATIVE}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-test-hook-client-daemon-'));
  const configPath = path.join(dir, 'config.yaml');
  const socket = path.join(dir, 'hook.sock');
  // Enforce (the hook then writes the spec) on an empty discovery root: the daemon touches no cgroup.
  const config = (pidsPerCore: number) => ({ mode: 'enforce', logLevel: 'debug', kernel: { manage: false }, metrics: { enabled: false }, detection: { kmsg: false }, discovery: { roots: ['/cgwd-test-hook-client-none'] }, policy: { existing: 'replace', pidsPerCore }, paths: { stateDir: path.join(dir, 'state'), statusSocket: path.join(dir, 'status.sock'), hookSocket: socket } });
  const d = startDaemon(config(1024), { configPath });
  t.after(async () => {
    await d.stop();
    fs.rmSync(hookCacheFile(configPath), { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await d.waitForLog((l) => l.msg === 'hook socket listening', 15_000);
  assert.equal(fs.statSync(socket).mode & 0o777, 0o600);
  const args = ['--socket', socket, '--node', process.execPath, '--cli', CLI, '--config', configPath, 'hook', 'precreate'];
  const served = async (n: number) => (await d.waitForLog((l) => l.msg === 'hook request served' && d.logs.filter((x) => x.msg === 'hook request served').indexOf(l) === n - 1, 5000)).config;

  const first = await runNative(args, spec(0));
  assert.match(first.stdout, /"limit":6144/);
  assert.equal(await served(1), 'daemon', 'its own unchanged file: its loaded config');

  d.writeConfig(config(2048));
  const edited = await runNative(args, spec(0));
  assert.match(edited.stdout, /"limit":12288/, 'an edit not yet reloaded counts, as for the Node hook');
  assert.equal(await served(2), 'file');

  d.proc.kill('SIGHUP');
  await d.waitForLog((l) => l.msg === 'reloaded', 10_000);
  const reloaded = await runNative(args, spec(0));
  assert.match(reloaded.stdout, /"limit":12288/);
  assert.equal(await served(3), 'daemon', 'the reload kept the socket and took the new config');

  await d.stop();
  assert.equal(fs.existsSync(socket), false, 'the socket goes at stop');
  const after = await runNative(args, spec(0));
  assert.match(after.stdout, /"limit":12288/, 'no daemon: the Node hook, same answer');
});
