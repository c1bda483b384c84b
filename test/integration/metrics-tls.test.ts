import test, { type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import { freePort, startDaemon, type DaemonHandle } from '../helpers/daemon';
import { need } from '../helpers/prereq';
import { PROMETHEUS, promQuery, promTargets, startPrometheus, until } from '../helpers/prometheus';
import { makeTestPki, type TestPki } from '../helpers/tls-certs';

// The real daemon (`cgwatchdog run`, observe mode, on a fake cgroup v2 tree: the metrics
// server is what is tested, not the host) serving metrics.webConfigFile, scraped by a real
// Prometheus over TLS with basic auth, as node_exporter is with the same file.

/** A minimal cgroup v2 tree and the proc files the daemon reads, reached through paths.*. */
function fakeHost(root: string): { cgroupRoot: string; procRoot: string } {
  const cg = path.join(root, 'cgroup');
  const proc = path.join(root, 'proc');
  fs.mkdirSync(path.join(proc, 'self'), { recursive: true });
  fs.mkdirSync(path.join(proc, 'sys', 'kernel'), { recursive: true });
  fs.mkdirSync(cg, { recursive: true });
  fs.writeFileSync(path.join(proc, 'self', 'mountinfo'), `35 24 0:30 / ${cg} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n`);
  fs.writeFileSync(path.join(proc, 'sys', 'kernel', 'pid_max'), '4194304\n');
  fs.writeFileSync(path.join(proc, 'sys', 'kernel', 'threads-max'), '192730\n');
  fs.writeFileSync(path.join(proc, 'loadavg'), '0.00 0.01 0.05 1/180 4242\n');
  const files: Record<string, string> = { 'cgroup.controllers': 'cpuset cpu io memory pids\n', 'pids.max': 'max\n', 'pids.current': '1\n', 'pids.events': 'max 0\n', 'cpu.max': 'max 100000\n', 'memory.events': 'low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n', 'memory.current': '4096\n', 'memory.max': 'max\n', 'cgroup.threads': '' };
  for (const [f, v] of Object.entries(files)) fs.writeFileSync(path.join(cg, f), v);
  return { cgroupRoot: cg, procRoot: proc };
}

function webConfig(pki: TestPki, users: Record<string, string>): string {
  return ['tls_server_config:', `  cert_file: ${path.basename(pki.serverCert)}`, `  key_file: ${pki.serverKey}`, 'basic_auth_users:', ...Object.entries(users).map(([u, h]) => `  ${u}: "${h}"`), ''].join('\n');
}

/** Write and rename, so the daemon never reads half a file. */
function writeAtomic(file: string, text: string): void {
  fs.writeFileSync(`${file}.tmp`, text);
  fs.renameSync(`${file}.tmp`, file);
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** GET over HTTPS trusting only the test CA (no fetch: Node 20's fetch takes no CA). */
function httpsGet(port: number, urlPath: string, ca: Buffer, auth?: string): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: urlPath, ca, servername: 'localhost', timeout: 5000, ...(auth ? { auth } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/** Plain HTTP to the TLS port: what the client gets (an error, or a reply that is not the metrics). */
function plainGet(port: number): Promise<{ error?: string; status?: number; body?: string }> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/metrics', timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ error: e.message }));
  });
}

/** A temp dir, and the stops to run before it goes (t.after hooks run in the order registered, so one hook does both). */
function tmpDir(t: TestContext): { dir: string; stops: (() => Promise<unknown>)[] } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-metrics-tls-'));
  const stops: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    for (const stop of stops.reverse()) await stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { dir, stops };
}

test('metrics over TLS with basic auth: a real Prometheus scrapes with the web config node_exporter takes', async (t) => {
  need(fs.existsSync(PROMETHEUS), `${PROMETHEUS} (Debian package prometheus)`);
  const { dir, stops } = tmpDir(t);
  const pki = makeTestPki(dir);
  const ca = fs.readFileSync(pki.caCert);
  const password = randomBytes(18).toString('base64url');
  const hash = bcrypt.hashSync(password, 10);
  const webFile = path.join(dir, 'web-config.yml');
  writeAtomic(webFile, webConfig(pki, { prometheus: hash }));

  const port = await freePort();
  const host = fakeHost(dir);
  const daemon: DaemonHandle = startDaemon(
    {
      mode: 'observe',
      paths: { ...host, stateDir: path.join(dir, 'state'), statusSocket: path.join(dir, 'status.sock') },
      kernel: { manage: false },
      detection: { kmsg: false },
      names: { podmanBinary: '', containerdSocket: '', criSockets: [] },
      metrics: { listen: `127.0.0.1:${port}`, webConfigFile: webFile },
    },
  );
  stops.push(() => daemon.stop());
  await daemon.waitForLog((l) => l.msg === 'detection running', 20_000);
  const listening = await daemon.waitForLog((l) => l.msg === 'metrics server listening', 1000);
  assert.equal(listening.tls, true);
  assert.equal(listening.basicAuth, true);

  // Every endpoint wants the credentials; with them, /metrics and /healthz answer over TLS.
  const basic = `prometheus:${password}`;
  for (const p of ['/metrics', '/healthz', '/nope']) {
    const r = await httpsGet(port, p, ca);
    assert.equal(r.status, 401, p);
    assert.equal(r.headers['www-authenticate'], 'Basic', p);
    assert.equal((await httpsGet(port, p, ca, `prometheus:${password}x`)).status, 401, p);
  }
  const m = await httpsGet(port, '/metrics', ca, basic);
  assert.equal(m.status, 200);
  assert.match(m.body, /^cgwatchdog_host_pid_max 4194304$/m);
  assert.equal((await httpsGet(port, '/healthz', ca, basic)).status, 200);
  const plain = await plainGet(port);
  t.diagnostic(`plain HTTP to the TLS port: ${JSON.stringify(plain)}`);
  assert.ok(plain.error !== undefined || (plain.status !== 200 && !plain.body?.includes('cgwatchdog_')), `plain HTTP got ${JSON.stringify(plain)}`);

  const target = `127.0.0.1:${port}`;
  const tlsJob = (name: string, auth?: { username: string; password: string }): Record<string, unknown> => ({
    job_name: name,
    scheme: 'https',
    tls_config: { ca_file: pki.caCert, server_name: 'localhost' },
    ...(auth ? { basic_auth: auth } : {}),
    static_configs: [{ targets: [target] }],
  });
  const prom = await startPrometheus(
    {
      job: 'plain-http',
      targets: [target],
      scrapeConfigs: [tlsJob('tls-auth', { username: 'prometheus', password }), tlsJob('no-credentials'), tlsJob('wrong-password', { username: 'prometheus', password: 'not-it' })],
    },
  );
  stops.push(() => prom.stop());

  const up = (job: string): Promise<number | undefined> => promQuery(prom, `up{job="${job}"}`).then((s) => s[0]?.value);
  await until(async () => ((await up('tls-auth')) === 1 ? true : undefined), 30_000, async () => `up{job="tls-auth"} == 1: ${JSON.stringify(await promTargets(prom))}`);
  const pidMax = await until(async () => (await promQuery(prom, 'cgwatchdog_host_pid_max{job="tls-auth"}'))[0]?.value, 10_000, 'cgwatchdog_host_pid_max in Prometheus');
  assert.equal(pidMax, 4194304);

  const targets = await until(
    async () => {
      const ts = await promTargets(prom);
      const byJob = (j: string) => ts.find((x) => (x as { labels?: Record<string, string> }).labels?.job === j || x.scrapeUrl.includes(j));
      const all = ['no-credentials', 'wrong-password', 'plain-http'].map((j) => ({ j, t: byJob(j) }));
      return all.every((a) => a.t && a.t.health === 'down' && a.t.lastError) ? all : undefined;
    },
    30_000,
    async () => `the failing jobs down: ${JSON.stringify(await promTargets(prom))}`,
  );
  for (const { j, t: tg } of targets) {
    t.diagnostic(`${j}: ${tg!.lastError}`);
    if (j === 'plain-http') assert.doesNotMatch(tg!.lastError, /401/, tg!.lastError);
    else assert.match(tg!.lastError, /401/, `${j}: ${tg!.lastError}`);
  }
  assert.equal(await up('no-credentials'), 0);
  assert.equal(await up('wrong-password'), 0);
  assert.equal(await up('plain-http'), 0);

  // SIGHUP reads the web config file again: a rotated password replaces the old one.
  const password2 = randomBytes(18).toString('base64url');
  const hash2 = bcrypt.hashSync(password2, 10);
  writeAtomic(webFile, webConfig(pki, { scraper: hash2 }));
  const reloadsBefore = daemon.logs.filter((l) => l.msg === 'reloaded').length;
  daemon.proc.kill('SIGHUP');
  await until(() => (daemon.logs.filter((l) => l.msg === 'reloaded').length > reloadsBefore ? true : undefined), 10_000, 'the reload');
  assert.equal((await httpsGet(port, '/metrics', ca, basic)).status, 401, 'the old user is gone');
  assert.equal((await httpsGet(port, '/metrics', ca, `scraper:${password2}`)).status, 200);

  // A bad web config at reload is refused by name, and the server goes on as it was.
  writeAtomic(webFile, `${webConfig(pki, { scraper: hash2 })}http_server_config:\n  http2: false\n`);
  daemon.proc.kill('SIGHUP');
  const failed = await daemon.waitForLog((l) => l.msg === 'reload failed: keeping the running config', 10_000);
  assert.match(String(failed.err), new RegExp(`metrics\\.webConfigFile ${webFile}: http_server_config is not supported by cgwatchdog`));
  assert.equal((await httpsGet(port, '/metrics', ca, `scraper:${password2}`)).status, 200);

  // Neither a password nor a hash ever reaches the log.
  const out = JSON.stringify(daemon.logs) + daemon.otherOutput.join('\n') + daemon.stderr();
  for (const secret of [password, password2, hash, hash2]) assert.ok(!out.includes(secret), 'a secret in the daemon output');
});

test('the daemon does not start with a web config whose key file cannot be read', async (t) => {
  const { dir, stops } = tmpDir(t);
  const pki = makeTestPki(dir);
  const webFile = path.join(dir, 'web-config.yml');
  writeAtomic(webFile, `tls_server_config:\n  cert_file: ${pki.serverCert}\n  key_file: ${path.join(dir, 'gone.key')}\n`);
  const host = fakeHost(dir);
  const daemon = startDaemon({ mode: 'observe', paths: { ...host, stateDir: path.join(dir, 'state'), statusSocket: path.join(dir, 'status.sock') }, kernel: { manage: false }, detection: { kmsg: false }, metrics: { listen: '127.0.0.1:0', webConfigFile: webFile } });
  stops.push(() => daemon.stop());
  const exit = await daemon.exited;
  assert.equal(exit.code, 2, daemon.stderr());
  assert.equal(daemon.stderr(), `cgwatchdog: invalid config ${daemon.configPath}: metrics.webConfigFile ${webFile}: tls_server_config.key_file "${path.join(dir, 'gone.key')}" cannot be read (no such file)\n`);
  assert.equal(daemon.logs.find((l) => l.msg === 'detection running'), undefined);
});
