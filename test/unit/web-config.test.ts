import test, { type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import { ConfigError, loadConfig } from '../../src/config/load';
import { BasicAuth, parseBasicAuth } from '../../src/metrics/basic-auth';
import { parseWebConfig, WebConfigError } from '../../src/metrics/web-config';
import { readWebConfig } from '../../src/metrics/web-config-file';
import { runCli } from '../helpers/daemon';
import { makeTestPki } from '../helpers/tls-certs';

// bcrypt of "secret" at cost 10 with the $2y$ prefix `htpasswd -B` writes (node_exporter's docs use it).
const HTPASSWD_HASH = '$2y$10$yzbtPzGPtR1DJvy90m/mN.uB97K9u5wo1YlKocSO/HOyH9X8dXd.W';

function errorOf(text: string): string {
  try {
    parseWebConfig(text);
  } catch (err) {
    assert.ok(err instanceof WebConfigError, String(err));
    return err.message;
  }
  assert.fail(`expected a WebConfigError for:\n${text}`);
}

function tmpDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-webcfg-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('web config: the node_exporter example parses; empty is no TLS and no auth', () => {
  const cfg = parseWebConfig(['tls_server_config:', '  cert_file: node_exporter.crt', '  key_file: /etc/node_exporter/node_exporter.key', 'basic_auth_users:', `  prometheus: ${HTPASSWD_HASH}`, ''].join('\n'));
  assert.deepEqual(cfg, { tls: { certFile: 'node_exporter.crt', keyFile: '/etc/node_exporter/node_exporter.key' }, users: { prometheus: HTPASSWD_HASH } });
  assert.deepEqual(parseWebConfig(''), {});
  assert.deepEqual(parseWebConfig('tls_server_config:\nbasic_auth_users:\n'), {});
  assert.deepEqual(parseWebConfig(`basic_auth_users:\n  alice: "${HTPASSWD_HASH}"\n`), { users: { alice: HTPASSWD_HASH } });
});

test('web config: every exporter-toolkit key cgwatchdog does not serve is refused by name', () => {
  const tls = ['client_auth_type: RequireAndVerifyClientCert', 'client_ca_file: ca.crt', 'client_ca: "-----BEGIN CERTIFICATE-----"', 'client_allowed_sans: [a]', 'cipher_suites: [TLS_AES_128_GCM_SHA256]', 'curve_preferences: [X25519]', 'min_version: TLS13', 'max_version: TLS13', 'prefer_server_cipher_suites: true', 'cert: "-----BEGIN CERTIFICATE-----"', 'key: "-----BEGIN PRIVATE KEY-----"'];
  for (const line of tls) {
    const key = line.split(':')[0]!;
    const msg = errorOf(`tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  ${line}\n`);
    assert.match(msg, new RegExp(`^tls_server_config\\.${key} is not supported by cgwatchdog`), msg);
    assert.doesNotMatch(msg, /BEGIN/, 'the value is not echoed');
  }
  for (const text of ['http_server_config:\n  http2: false\n', 'http_server_config:\n  headers:\n    X-Frame-Options: deny\n', 'rate_limit:\n  interval: 1s\n']) {
    const key = text.split(':')[0]!;
    assert.match(errorOf(text), new RegExp(`^${key} is not supported by cgwatchdog`));
  }
  // Keys exporter-toolkit does not know either (a typo) are refused too, by name.
  assert.match(errorOf('tls_server_config:\n  cert_file: a\n  key_file: b\n  certfile: c\n'), /^tls_server_config\.certfile is not a web config key/);
  assert.match(errorOf('basic_auth:\n  a: b\n'), /^basic_auth is not a web config key/);
});

test('web config: a value that is not a bcrypt hash is refused without showing it', () => {
  const bad = ['hunter2', '$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/', '{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=', HTPASSWD_HASH.replace('$2y$', '$2x$'), HTPASSWD_HASH.replace('$10$', '$03$'), `${HTPASSWD_HASH}x`, '12345', ''];
  for (const hash of bad) {
    const msg = errorOf(`basic_auth_users:\n  prometheus: ${JSON.stringify(hash)}\n`);
    assert.match(msg, /^basic_auth_users\.prometheus is not a bcrypt hash/);
    if (hash) assert.ok(!msg.includes(hash), `the value is not in: ${msg}`);
  }
  assert.match(errorOf('basic_auth_users:\n  prometheus: 12345\n'), /^basic_auth_users\.prometheus is not a bcrypt hash/);
  assert.match(errorOf(`basic_auth_users:\n  "a:b": ${HTPASSWD_HASH}\n`), /^basic_auth_users has the user "a:b": .*without ":"/);
});

test('web config: wrong types, a half TLS section and broken YAML name the key', () => {
  assert.match(errorOf('tls_server_config: true\n'), /^tls_server_config is true: expected a mapping with cert_file and key_file/);
  assert.match(errorOf('tls_server_config:\n  cert_file: a.crt\n'), /^tls_server_config\.key_file is missing: TLS needs both cert_file and key_file/);
  assert.match(errorOf('tls_server_config:\n  cert_file: 5\n  key_file: a.key\n'), /^tls_server_config\.cert_file is 5: expected a file path/);
  assert.match(errorOf('tls_server_config: {}\n'), /^tls_server_config\.cert_file is missing/);
  assert.match(errorOf('basic_auth_users: [alice]\n'), /^basic_auth_users is \["alice"\]: expected a mapping/);
  assert.match(errorOf('- a\n- b\n'), /^expected a mapping .* got a list/);
  assert.match(errorOf('tls_server_config:\n  cert_file: a\n  cert_file: b\n'), /^not valid YAML \(line 3/);
  assert.match(errorOf('basic_auth_users: {a: [\n'), /^not valid YAML/);
});

test('web config file: certificate and key are read relative to the file, and checked as a pair', (t) => {
  const dir = tmpDir(t);
  const pki = makeTestPki(dir);
  const file = path.join(dir, 'web.yml');
  fs.writeFileSync(file, `tls_server_config:\n  cert_file: server.crt\n  key_file: ${pki.serverKey}\n`);
  const loaded = readWebConfig(file);
  assert.deepEqual(loaded.tls?.cert, fs.readFileSync(pki.serverCert));
  assert.equal(loaded.users, undefined);

  const errorFor = (text: string | null): string => {
    if (text !== null) fs.writeFileSync(file, text);
    try {
      readWebConfig(file);
    } catch (err) {
      assert.ok(err instanceof WebConfigError, String(err));
      return err.message;
    }
    assert.fail('expected a WebConfigError');
  };
  assert.match(errorFor('tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n'), new RegExp(`^tls_server_config\\.cert_file "${path.join(dir, 'missing.crt')}" cannot be read \\(no such file\\)`));
  assert.match(errorFor('tls_server_config:\n  cert_file: server.crt\n  key_file: nokey.pem\n'), /^tls_server_config\.key_file ".*nokey\.pem" cannot be read \(no such file\)/);
  assert.match(errorFor('tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n'), /^tls_server_config\.cert_file and key_file do not make a TLS certificate and key: .*mismatch/);
  assert.match(errorFor('tls_server_config:\n  cert_file: web.yml\n  key_file: server.key\n'), /^tls_server_config\.cert_file and key_file do not make a TLS certificate and key/);
  assert.match(errorFor('tls_server_config:\n  cert_file: .\n  key_file: server.key\n'), /^tls_server_config\.cert_file ".*" cannot be read \(EISDIR\)/);
  fs.rmSync(file);
  assert.match(errorFor(null), /^the file ".*web\.yml" cannot be read \(no such file\)/);
});

test('a bad web config is a config error naming the file and the key, for run and apply alike', async (t) => {
  const dir = tmpDir(t);
  const web = path.join(dir, 'web.yml');
  fs.writeFileSync(web, 'tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  client_auth_type: RequireAndVerifyClientCert\n');
  const cfg = path.join(dir, 'config.yaml');
  fs.writeFileSync(cfg, `mode: observe\nmetrics:\n  webConfigFile: ${web}\n`);
  const want = `invalid config ${cfg}: metrics.webConfigFile ${web}: tls_server_config.client_auth_type is not supported by cgwatchdog (it serves cert_file and key_file only)`;
  assert.throws(() => loadConfig(cfg), (err: unknown) => err instanceof ConfigError && err.message === want);
  for (const args of [['apply', '--dry-run'], ['run']]) {
    const r = await runCli([...args, '--config', cfg]);
    assert.equal(r.code, 2, `${args[0]}: ${r.stderr}`);
    assert.equal(r.stderr, `cgwatchdog: ${want}\n`);
  }
  fs.writeFileSync(cfg, 'metrics:\n  webConfigFile: web.yml\n');
  assert.throws(() => loadConfig(cfg), /metrics\.webConfigFile is "web\.yml"/);
});

test('basic auth: bcrypt verified once per (user, password), wrong and unknown refused', async () => {
  const password = randomBytes(12).toString('base64url');
  const hash = bcrypt.hashSync(password, 10);
  const auth = new BasicAuth({ prometheus: hash, other: HTPASSWD_HASH });
  const header = (u: string, p: string): string => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

  assert.deepEqual(parseBasicAuth(header('a', 'b:c')), { user: 'a', password: 'b:c' });
  assert.equal(parseBasicAuth('Bearer abc'), undefined);
  assert.equal(parseBasicAuth(`Basic ${Buffer.from('nocolon').toString('base64')}`), undefined);
  assert.equal(parseBasicAuth(undefined), undefined);

  let t0 = performance.now();
  assert.equal(await auth.check(header('prometheus', password)), true);
  const first = performance.now() - t0;
  t0 = performance.now();
  for (let i = 0; i < 20; i++) assert.equal(await auth.check(header('prometheus', password)), true);
  const cached = (performance.now() - t0) / 20;
  // bcrypt at cost 10 in bcryptjs: ~50-150 ms; a cached check is a SHA-256.
  assert.ok(first > 10 && cached < first / 10, `first ${first.toFixed(1)} ms, cached ${cached.toFixed(2)} ms`);

  assert.equal(await auth.check(header('prometheus', `${password}x`)), false);
  assert.equal(await auth.check(header('prometheus', '')), false);
  t0 = performance.now();
  assert.equal(await auth.check(header('nobody', password)), false);
  // An unknown user costs a bcrypt too (no user enumeration by timing).
  assert.ok(performance.now() - t0 > 10);
  assert.equal(await auth.check(undefined), false);
  assert.equal(await auth.check(header('PROMETHEUS', password)), false);
  // The cache of one table never lets a password in against another hash.
  const rotated = new BasicAuth({ prometheus: bcrypt.hashSync('new', 4) });
  assert.equal(await rotated.check(header('prometheus', password)), false);
  assert.equal(await rotated.check(header('prometheus', 'new')), true);
});
