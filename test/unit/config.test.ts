import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkSecrets, ConfigError, loadConfig, validateConfig } from '../../src/config/load';

const repo = path.join(__dirname, '..', '..', '..');

test('config/default.yaml is valid and documents exactly the built-in defaults', () => {
  const fromFile = loadConfig(path.join(repo, 'config', 'default.yaml'));
  const builtIn = validateConfig({});
  assert.deepEqual(fromFile, builtIn);
  assert.equal(fromFile.policy.minCores, 6);
  assert.equal(fromFile.policy.pidsPerCore, 1024);
  assert.equal(fromFile.kernel.pidMax, 4194304);
  assert.equal(fromFile.discovery.reconcileSchedule, '* * * * *');
  assert.equal(fromFile.detection.sweepIntervalMs, 1000);
});

test('every key of the schema appears in config/default.yaml', () => {
  const text = fs.readFileSync(path.join(repo, 'config', 'default.yaml'), 'utf8');
  const walk = (o: unknown, prefix: string[]): string[] =>
    o && typeof o === 'object' && !Array.isArray(o)
      ? Object.entries(o).flatMap(([k, v]) => [k, ...walk(v, [...prefix, k])])
      : [];
  for (const key of walk(validateConfig({}), [])) assert.match(text, new RegExp(`^\\s*#?\\s*${key}:`, 'm'), `key ${key} is not documented`);
});

function errorOf(raw: unknown): string {
  try {
    validateConfig(raw, 'test.yaml');
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.message;
  }
  assert.fail('expected a ConfigError');
}

test('an invalid value names the key, the value and what was expected', () => {
  const m = errorOf({ policy: { minCores: 'six' } });
  assert.match(m, /policy\.minCores/);
  assert.match(m, /"six"/);
  assert.match(m, /expected number/);
});

test('unknown keys, bad enums, bad regexes and bad cron schedules are refused', () => {
  assert.match(errorOf({ polcy: {} }), /unknown key polcy/);
  assert.match(errorOf({ mode: 'enforcing' }), /mode is "enforcing".*(enforce|observe)/);
  assert.match(errorOf({ policy: { overrides: [{ pathPattern: '([' }] } }), /policy\.overrides\[0\]\.pathPattern.*not a regular expression/);
  assert.match(errorOf({ policy: { overrides: [{ exclude: true }] } }), /pathPattern.*runtime/);
  assert.match(errorOf({ discovery: { reconcileSchedule: 'every minute' } }), /reconcileSchedule is "every minute".*cron/);
  assert.match(errorOf({ metrics: { listen: '9464' } }), /metrics\.listen is "9464".*host:port/);
  assert.match(errorOf({ alerts: { sinks: [{ type: 'webhook', url: 'http://x', bearerToken: {} }] } }), /bearerToken.*exactly one/);
  assert.match(errorOf({ kernel: { pidMax: 5_000_000 } }), /kernel\.pidMax is 5000000/);
});

test('a YAML syntax error names the file and the line', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-config-'));
  try {
    const f = path.join(dir, 'bad.yaml');
    fs.writeFileSync(f, 'mode: enforce\npolicy:\n  minCores: [1\n');
    assert.throws(() => loadConfig(f), (e: Error) => e instanceof ConfigError && e.message.includes(f) && /line \d+/.test(e.message));
    assert.throws(() => loadConfig(path.join(dir, 'missing.yaml')), /no such file/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('errors about sink URLs and headers do not echo their values (they carry tokens)', () => {
  const m = errorOf({ alerts: { sinks: [{ type: 'slack', url: 'hooks.example/T0/B0/s3cr3t', headers: { Authorization: 42 } }] } });
  assert.match(m, /alerts\.sinks\[0\]\.url is \(value not shown\)/);
  assert.match(m, /alerts\.sinks\[0\]\.headers\.Authorization is \(value not shown\)/);
  assert.doesNotMatch(m, /s3cr3t/);
});

test('a sink URL must be http or https; the message says so once and hides the URL', () => {
  const m = errorOf({ alerts: { sinks: [{ type: 'webhook', url: 'ftp://hooks.example/s3cr3t' }] } });
  assert.match(m, /alerts\.sinks\[0\]\.url is \(value not shown\): expected an http:\/\/ or https:\/\/ URL/);
  assert.equal(m.split('alerts.sinks[0].url').length - 1, 1, `said more than once: ${m}`);
  assert.doesNotMatch(m, /s3cr3t/);
  assert.doesNotThrow(() => validateConfig({ alerts: { sinks: [{ type: 'webhook', url: 'HTTPS://hooks.example/x' }] } }));
});

test('the daemon\'s secret check: a missing secret file or an unset variable is refused, naming the key', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-secret-'));
  try {
    const file = path.join(dir, 'hmac');
    const cfg = (secret: Record<string, string>) => validateConfig({ alerts: { sinks: [{ type: 'webhook', url: 'http://127.0.0.1:1/x', hmac: { secret } }] } });
    assert.throws(() => checkSecrets(cfg({ file }), 'config x.yaml'), (e: Error) => e instanceof ConfigError && /alerts\.sinks\[0\]\.hmac\.secret\.file is ".*hmac": no such file/.test(e.message));
    const unset = `CGWD_TEST_UNSET_${process.pid}`;
    assert.throws(() => checkSecrets(cfg({ env: unset }), 'config x.yaml'), /alerts\.sinks\[0\]\.hmac\.secret\.env is "CGWD_TEST_UNSET_\d+": that environment variable is not set/);
    fs.writeFileSync(file, 'k3y\n');
    assert.doesNotThrow(() => checkSecrets(cfg({ file }), 'config x.yaml'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('two sinks of one name, two unnamed sinks of one type and URL, or the reserved name: refused, naming the key', () => {
  const named = errorOf({ alerts: { sinks: [{ type: 'webhook', name: 'ops', url: 'http://a.example/x' }, { type: 'slack', name: 'ops', url: 'https://hooks.example/T0/s3cr3t' }] } });
  assert.match(named, /alerts\.sinks\[1\]\.name is "ops": alerts\.sinks\[0\] has this name too: give each sink a distinct name/);
  assert.doesNotMatch(named, /s3cr3t/);
  const unnamed = errorOf({ alerts: { sinks: [{ type: 'slack', url: 'https://hooks.example/T0/s3cr3t' }, { type: 'slack', url: 'https://hooks.example/T0/s3cr3t', minSeverity: 'critical' }] } });
  assert.match(unnamed, /alerts\.sinks\[1\]\.url is \(value not shown\): alerts\.sinks\[0\] has the same type and URL/);
  assert.doesNotMatch(unnamed, /s3cr3t/);
  assert.equal(unnamed.split('alerts.sinks[1].url').length - 1, 1, `said more than once: ${unnamed}`);
  assert.match(errorOf({ alerts: { sinks: [{ type: 'webhook', name: 'corrupt', url: 'http://a.example/x' }] } }), /alerts\.sinks\[0\]\.name is "corrupt": sink name "corrupt" is reserved by the outbox/);
  // One URL under two types, or under two names, is two sinks.
  assert.doesNotThrow(() => validateConfig({ alerts: { sinks: [{ type: 'webhook', url: 'http://a.example/x' }, { type: 'alertmanager', url: 'http://a.example/x' }] } }));
  assert.doesNotThrow(() => validateConfig({ alerts: { sinks: [{ type: 'webhook', name: 'a', url: 'http://a.example/x' }, { type: 'webhook', name: 'b', url: 'http://a.example/x' }] } }));
});
