/**
 * The daemon's hook socket (src/hook/hook-server.ts): its framing and request checks (pure),
 * and a real server on a temp socket fed bad input (garbage, an oversized length, a request cut
 * short, silence, bytes after the request), which must close that connection with a log line and
 * go on answering; and good requests, whose answers must be the Node hook's very output and records.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { createLogger } from '../../src/log';
import { loadConfig } from '../../src/config/load';
import { configIdentity } from '../../src/hook/hook-config';
import { encodeFrame, FrameDecoder, FrameError, parseHookRequest, serveHooks, type DaemonConfigView } from '../../src/hook/hook-server';
import { runHook } from '../../src/hook/oci-hook';
import { listRecords, type HookRecord } from '../../src/hook/records';

const SPEC = JSON.stringify({ ociVersion: '1.0.2-dev', linux: { cgroupsPath: '/cgwd-test-hook-server/libpod-abc', resources: { pids: { limit: 0 }, cpu: { quota: 200000, period: 100000 } } } });

test('frames: a 4-byte big-endian length and JSON, whole across any chunking; an over-cap length and trailing bytes are errors', () => {
  const f = encodeFrame({ a: 'é' });
  assert.equal(f.readUInt32BE(0), f.length - 4);
  for (let cut = 0; cut <= f.length; cut++) {
    const d = new FrameDecoder();
    const first = d.push(f.subarray(0, cut));
    const body = cut === f.length ? first : d.push(f.subarray(cut));
    assert.deepEqual(JSON.parse(body!.toString('utf8')), { a: 'é' }, `cut at ${cut}`);
  }
  const big = Buffer.alloc(4);
  big.writeUInt32BE(4 * 1024 * 1024 + 1, 0);
  assert.throws(() => new FrameDecoder().push(big), FrameError);
  assert.throws(() => new FrameDecoder().push(Buffer.concat([f, Buffer.from('x')])), /bytes after the request/);
});

test('requests: every field checked, each problem said in one sentence', () => {
  const ok = { v: 1, stage: 'precreate', input: '{}', config: '/etc/x.yaml' };
  assert.deepEqual(parseHookRequest(Buffer.from(JSON.stringify(ok))), { ...ok, id: undefined, logFormat: undefined });
  const bad: [unknown, RegExp][] = [
    ['nope{', /not JSON/],
    [[1], /not a JSON object/],
    [{ ...ok, v: 2 }, /version 2/],
    [{ ...ok, stage: 7 }, /stage/],
    [{ ...ok, input: undefined }, /input/],
    [{ ...ok, config: 'relative.yaml' }, /absolute path or null/],
    [{ ...ok, id: 3 }, /request\.id/],
  ];
  for (const [v, re] of bad) assert.throws(() => parseHookRequest(Buffer.from(typeof v === 'string' ? v : JSON.stringify(v))), re);
});

function exchange(socket: string, bytes: Buffer | null, opts: { end?: boolean } = {}): Promise<{ frame?: Record<string, unknown>; closed: boolean }> {
  return new Promise((resolve) => {
    const c = net.connect(socket);
    const d = new FrameDecoder();
    let frame: Record<string, unknown> | undefined;
    c.on('connect', () => {
      if (bytes) c.write(bytes);
      if (opts.end) c.end();
    });
    c.on('data', (b: Buffer) => {
      const body = d.push(b);
      if (body) frame = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
    });
    c.on('error', () => undefined);
    c.on('close', () => resolve({ frame, closed: true }));
  });
}

test('a real hook socket: 0600, bad input closes only that connection with a log line, good requests get the Node hook\'s own answer and records', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-test-hook-server-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const socket = path.join(dir, 'run', 'hook.sock');
  const stateDir = path.join(dir, 'state');
  const nodeStateDir = path.join(dir, 'node-state');
  const configFile = path.join(dir, 'config.yaml');
  const nodeConfigFile = path.join(dir, 'node-config.yaml');
  const cfg = { kernel: { manage: false }, paths: { stateDir, hookSocket: socket }, policy: { existing: 'replace' } };
  fs.writeFileSync(configFile, YAML.stringify(cfg));
  fs.writeFileSync(nodeConfigFile, YAML.stringify({ ...cfg, paths: { stateDir: nodeStateDir } }));
  const cacheDir = path.join(dir, 'cache');
  const lines: Record<string, unknown>[] = [];
  const log = createLogger('debug', { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) });
  const view: DaemonConfigView = { config: loadConfig(configFile), file: configFile, identity: configIdentity(configFile) };
  const server = await serveHooks(socket, () => view, log, { cacheDir, timeoutMs: 300 });
  assert.ok(server);
  t.after(() => server.close());
  assert.equal(fs.statSync(socket).mode & 0o777, 0o600);
  assert.equal(fs.statSync(path.dirname(socket)).mode & 0o777, 0o700);

  const garbageBody = Buffer.from('this is not json');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(garbageBody.length, 0);
  const tooBig = Buffer.alloc(4);
  tooBig.writeUInt32BE(0xffffffff, 0);
  const good = encodeFrame({ v: 1, stage: 'precreate', input: SPEC, config: configFile });
  const cases: [string, Buffer | null, { end?: boolean }, RegExp][] = [
    ['garbage', Buffer.concat([head, garbageBody]), {}, /not JSON/],
    ['an oversized length', tooBig, {}, /over the 4194304-byte cap/],
    ['half a request, then the end', good.subarray(0, 10), { end: true }, /closed before a whole request/],
    ['silence', null, {}, /no whole request within 300 ms/],
    ['bytes after the request', Buffer.concat([good, Buffer.from('xx')]), {}, /bytes after the request/],
    ['not a request', encodeFrame({ v: 1, stage: 'precreate' }), {}, /request\.input/],
  ];
  for (const [what, bytes, opts, re] of cases) {
    const before = lines.length;
    const r = await exchange(socket, bytes, opts);
    assert.equal(r.frame, undefined, `${what}: no answer`);
    const said = lines.slice(before).find((l) => l.msg === 'hook socket: bad request, connection closed (the client runs the Node hook)');
    assert.match(String(said?.err), re, `${what}: ${JSON.stringify(lines.slice(before))}`);
  }

  // The same request as the Node hook: the same stdout, exit code and record (but for its time).
  const viaSocket = await exchange(socket, good);
  const viaNode = await runHook('precreate', SPEC, { configFile: nodeConfigFile, cacheDir });
  assert.deepEqual(viaSocket.frame, { stdout: viaNode.stdout, exitCode: viaNode.exitCode, log: viaNode.log });
  assert.match(String(viaSocket.frame?.stdout), /"limit":6144/);
  const strip = (r: { rec: HookRecord }) => ({ ...r.rec, at: 0 });
  assert.deepEqual(listRecords(stateDir).map(strip), listRecords(nodeStateDir).map(strip));
  assert.equal(lines.find((l) => l.msg === 'hook request served')?.config, 'daemon', 'the daemon\'s own, unchanged file: its loaded config');

  // Another file (or the daemon's own once edited) is read as the Node hook reads it: a broken one fails as there.
  const broken = path.join(dir, 'broken.yaml');
  fs.writeFileSync(broken, `paths: {stateDir: ${stateDir}}\nhooks: {failClosed: true}\npolicy: {minCores: six}\n`);
  const refused = await exchange(socket, encodeFrame({ v: 1, stage: 'precreate', input: SPEC, config: broken }));
  assert.equal(refused.frame?.exitCode, 1);
  assert.equal(refused.frame?.stdout, '');
  assert.match(String((refused.frame?.log as string[])[0]), /policy\.minCores.*container refused/);
  const wrapper = await exchange(socket, encodeFrame({ v: 1, stage: 'runc-create', input: SPEC, config: configFile, id: 'abc', logFormat: 'json' }));
  assert.equal(wrapper.frame?.exitCode, 0);
  assert.match(String(wrapper.frame?.stdout), /"limit":6144/);
  assert.equal(server.served, 3);
  // A file the daemon cannot see (a sandboxed unit's own /tmp): no answer, the client runs the Node hook.
  const unseen = await exchange(socket, encodeFrame({ v: 1, stage: 'precreate', input: SPEC, config: path.join(dir, 'not-here.yaml') }));
  assert.equal(unseen.frame, undefined);
  assert.ok(lines.some((l) => typeof l.msg === 'string' && l.msg.startsWith('hook request for a config file the daemon does not see')));
  assert.equal(server.served, 3);

  await server.close();
  assert.equal(fs.existsSync(socket), false, 'the socket goes at stop');
});

test('a live socket of another daemon is left alone: the second server says so and runs without one', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-test-hook-server2-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const socket = path.join(dir, 'hook.sock');
  const lines: Record<string, unknown>[] = [];
  const log = createLogger('debug', { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) });
  const view = (): DaemonConfigView => ({ config: loadConfig(path.join(__dirname, '..', '..', '..', 'config', 'default.yaml')), file: null, identity: null });
  const first = await serveHooks(socket, view, log);
  t.after(() => first?.close());
  const second = await serveHooks(socket, view, log);
  assert.equal(second, undefined);
  assert.ok(lines.some((l) => l.msg === 'cannot serve the hook socket: the native hooks run the Node hook instead; the daemon runs on' && /another process answers/.test(String(l.err))));
});
