/**
 * src/install/service.ts without systemd: the unit rendered from the repository's unit file, the
 * hooks record read back, and the one-sentence refusals. The real install: test/e2e/package
 * (npm pack + npm install -g --offline, --no-start) and test/uml/systemd-service (systemd as PID 1).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { installService, recordedHooks, renderUnit, ServiceError } from '../../src/install/service';

// dist/test/unit -> repository root
const ROOT = path.resolve(__dirname, '../../..');
const UNIT = fs.readFileSync(path.join(ROOT, 'systemd/cgwatchdog.service'), 'utf8');
const base = { nodePath: '/usr/local/bin/node', cliPath: '/usr/local/lib/node_modules/cgwatchdog/dist/src/cli.js', configFile: '/etc/cgwatchdog/config.yaml', source: '/x/systemd/cgwatchdog.service', readme: '/usr/local/lib/node_modules/cgwatchdog/README.md', version: '9.9.9' };

test('renderUnit: ExecStart and Documentation name this install; every other directive is the package\'s', () => {
  const out = renderUnit(UNIT, { ...base, hooks: [] });
  const exec = out.split('\n').filter((l) => l.startsWith('ExecStart='));
  assert.deepEqual(exec, ['ExecStart=/usr/local/bin/node --max-semi-space-size=1 /usr/local/lib/node_modules/cgwatchdog/dist/src/cli.js run --config /etc/cgwatchdog/config.yaml']);
  assert.ok(out.includes('\nDocumentation=file:/usr/local/lib/node_modules/cgwatchdog/README.md\n'));
  assert.ok(out.startsWith('# Written by cgwatchdog install-service 9.9.9 from /x/systemd/cgwatchdog.service'));
  assert.ok(!out.includes('/opt/cgwatchdog'), 'the /opt layout comment is gone');
  const directives = (t: string) => t.split('\n').filter((l) => l && !l.startsWith('#') && !/^(ExecStart|Documentation)=/.test(l));
  assert.deepEqual(directives(out), directives(UNIT));
  assert.deepEqual(recordedHooks(out), []);
});

test('renderUnit records the hooks; recordedHooks reads them back', () => {
  const hooks = [{ runtime: 'podman' as const, file: '/etc/containers/oci/hooks.d/cgwatchdog-precreate.json' }];
  assert.deepEqual(recordedHooks(renderUnit(UNIT, { ...base, hooks })), hooks);
  assert.deepEqual(recordedHooks('# cgwatchdog install-service hooks: lxc=/x podman=/y\n'), [{ runtime: 'podman', file: '/y' }]);
});

test('renderUnit refuses a unit whose ExecStart is not the package\'s', () => {
  assert.throws(() => renderUnit(UNIT.replace(/^ExecStart=.*$/m, 'ExecStart=/bin/true'), { ...base, hooks: [] }), ServiceError);
});

test('installService: one-sentence refusals before anything is written', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-svc-unit-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const config = path.join(tmp, 'config.yaml');
  await assert.rejects(installService({ noStart: true, unitDir: path.join(tmp, 'nope'), configFile: config, packageRoot: ROOT }), /^ServiceError: the unit directory \S+ does not exist/);
  await assert.rejects(installService({ unitDir: tmp, configFile: config, packageRoot: ROOT, systemctl: '/bin/true', systemdRunning: false }), (e: Error) => e instanceof ServiceError && /systemd is not running as PID 1 here|must run as root/.test(e.message) && !/\n/.test(e.message));
  await assert.rejects(installService({ noStart: true, unitDir: tmp, configFile: path.join(tmp, 'a b.yaml'), packageRoot: ROOT }), /would have to quote/);
  assert.deepEqual(fs.readdirSync(tmp), [], 'nothing written');
});
