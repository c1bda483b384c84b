/**
 * "Install on a node in three commands", on this host: `npm pack` gives a tarball with only
 * what runs and its production dependencies bundled; `npm install -g --offline` installs it
 * with the registry unreachable and an empty cache (nothing can come from anywhere else); the
 * installed `cgwatchdog` runs; `install-service --no-start` writes a unit whose ExecStart
 * points into the install prefix, which `systemd-analyze verify` accepts and `security
 * --offline` scores as the repository's unit (test/unit/systemd-unit.test.ts), and a config
 * it never overwrites; `--uninstall` removes the unit and the hooks it installed, and leaves
 * the config. systemd is not PID 1 here: test/uml/systemd-service.test.ts starts it for real.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isRoot, need } from '../helpers/prereq';
import { findOnPath } from '../../src/find-on-path';

// dist/test/e2e -> repository root
const ROOT = path.resolve(__dirname, '../../..');
const MAX_EXPOSURE = 2.9; // the repository unit's measured score (test/unit/systemd-unit.test.ts)
const UNREACHABLE = 'http://127.0.0.1:9/'; // the discard port: nothing listens

interface PackJson {
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  bundled: string[];
  files: { path: string }[];
}

const which = (bin: string): string | undefined => findOnPath(bin, '') ?? undefined;

function sh(file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): { code: number | null; out: string; err: string; ms: number } {
  const t0 = Date.now();
  const r = spawnSync(file, args, { encoding: 'utf8', timeout: opts.timeout ?? 120_000, cwd: opts.cwd, env: opts.env ?? process.env, maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw r.error;
  return { code: r.status, out: r.stdout, err: r.stderr, ms: Date.now() - t0 };
}

test('npm pack -> npm install -g --offline -> cgwatchdog install-service: the unit points into the prefix, verifies, scores <= 2.9; --uninstall leaves the config', async (t) => {
  need(isRoot(), 'root (the package is installed as root installs it)');
  const npm = which('npm');
  need(npm !== undefined, 'npm');
  need(which('systemd-analyze') !== undefined, 'systemd-analyze (apt-get install systemd)');
  need(fs.existsSync(path.join(ROOT, 'dist/src/cli.js')), 'dist/src/cli.js (npm run build)');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-pkg-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string; dependencies: Record<string, string>; devDependencies: Record<string, string> };

  // --- npm pack ------------------------------------------------------------------------------
  // --ignore-scripts: prepack would rebuild dist/ under the other tests; the test run built it.
  // Its other half, moving the bundled packages' tests and types aside, is run here as npm would.
  const scripts = (pkg as unknown as { scripts: Record<string, string> }).scripts;
  assert.match(scripts.prepack!, /&& node scripts\/prune-bundle\.js stash$/);
  assert.equal(scripts.postpack, 'node scripts/prune-bundle.js restore');
  const stash = sh(process.execPath, ['scripts/prune-bundle.js', 'stash'], { cwd: ROOT });
  let pack: ReturnType<typeof sh>;
  try {
    assert.equal(stash.code, 0, stash.err);
    pack = sh(npm!, ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp], { cwd: ROOT });
  } finally {
    const restore = sh(process.execPath, ['scripts/prune-bundle.js', 'restore'], { cwd: ROOT });
    assert.equal(restore.code, 0, restore.err);
  }
  assert.equal(pack.code, 0, pack.err);
  assert.ok(fs.existsSync(path.join(ROOT, 'node_modules/@types/node/package.json')), 'the development tree is whole again');
  const info = (JSON.parse(pack.out) as PackJson[])[0]!;
  const tarball = path.join(tmp, info.filename);
  assert.ok(fs.existsSync(tarball));
  t.diagnostic(`npm pack: ${info.filename}, ${(info.size / 1e6).toFixed(1)} MB (${(info.unpackedSize / 1e6).toFixed(1)} MB unpacked, ${info.entryCount} files, ${info.bundled.length} bundled packages) in ${pack.ms} ms`);
  const files = info.files.map((f) => f.path);
  const own = files.filter((f) => !f.startsWith('node_modules/'));
  const notRuntime = own.filter((f) => /^(dist\/)?(test|bench)\//.test(f) || /(^|\/)results\//.test(f) || /\.(ts|map)$/.test(f) || f.startsWith('src/') || f.startsWith('.'));
  assert.deepEqual(notRuntime, [], 'no tests, bench, results, sources or maps in the tarball');
  for (const must of ['package.json', 'README.md', 'dist/src/cli.js', 'dist/src/install/service.js', 'dist/src/hook/install.js', 'dist/native/cgwatchdog-hook', 'native/hook-client.c', 'systemd/cgwatchdog.service', 'config/default.yaml', 'proto/cri-runtime-v1.proto', 'proto/containerd-containers-v1.proto']) {
    assert.ok(own.includes(must), `${must} is in the tarball`);
  }
  // The same rule inside the bundled packages: what runs, not their tests, benchmarks, types or maps.
  const bundledDev = files.filter((f) => f.startsWith('node_modules/')).filter(
    (f) => /\/(tests?|__tests__|specs?|bench|benchmarks?)\//.test(f) || /\.(ts|mts|cts|map)$/.test(f) || /^node_modules\/(@types\/|undici-types\/)/.test(f),
  );
  assert.deepEqual(bundledDev, [], 'no tests, benchmarks, type declarations, TypeScript sources or maps in the bundled node_modules');
  assert.deepEqual(own.filter((f) => !/^(dist\/src\/.*\.js|dist\/COMMIT|dist\/native\/cgwatchdog-hook|native\/hook-client\.c|proto\/.*\.proto|systemd\/[^/]+|config\/[^/]+|README\.md|LICENSE|package\.json)$/.test(f)), [], 'only what runs');
  // Every production dependency bundled (a dependency added but not listed fails the offline install below).
  const unbundled = Object.keys(pkg.dependencies).filter((d) => !info.bundled.includes(d) || !files.includes(`node_modules/${d}/package.json`));
  assert.deepEqual(unbundled, [], 'every dependency is bundled');
  const dev = Object.keys(pkg.devDependencies).filter((d) => info.bundled.includes(d) && !isProductionDependency(d));
  assert.deepEqual(dev, [], 'no development-only package bundled');

  // --- npm install -g --offline --------------------------------------------------------------
  const prefix = path.join(tmp, 'prefix');
  // Empty npmrc files: no mirror or proxy from this machine's configuration.
  const userrc = path.join(tmp, 'npmrc-user');
  const globalrc = path.join(tmp, 'npmrc-global');
  fs.writeFileSync(userrc, '');
  fs.writeFileSync(globalrc, '');
  const env = { ...process.env, npm_config_registry: UNREACHABLE, npm_config_userconfig: userrc, npm_config_globalconfig: globalrc };
  const install = sh(npm!, ['install', '-g', '--offline', '--prefix', prefix, '--cache', path.join(tmp, 'cache'), '--registry', UNREACHABLE, '--no-audit', '--no-fund', '--loglevel=error', tarball], { cwd: tmp, env, timeout: 300_000 });
  assert.equal(install.code, 0, `${install.out}\n${install.err}`);
  t.diagnostic(`npm install -g --offline (registry ${UNREACHABLE}, empty cache): ${install.ms} ms`);
  const pkgDir = path.join(prefix, 'lib', 'node_modules', pkg.name);
  const bin = path.join(prefix, 'bin', 'cgwatchdog');
  assert.equal(fs.realpathSync(bin), path.join(pkgDir, 'dist', 'src', 'cli.js'));
  for (const d of Object.keys(pkg.dependencies)) assert.ok(fs.existsSync(path.join(pkgDir, 'node_modules', d, 'package.json')), `${d} installed`);

  // --- the installed command -----------------------------------------------------------------
  const runEnv = { ...process.env, PATH: `${path.join(prefix, 'bin')}:${process.env.PATH ?? ''}` };
  const help = sh(bin, ['--help'], { env: runEnv });
  assert.equal(help.code, 0, help.err);
  assert.match(help.out, /install-service/);
  const ver = sh(bin, ['--version'], { env: runEnv });
  assert.equal(ver.out.trim(), pkg.version);
  const config = path.join(tmp, 'etc', 'config.yaml');
  const dry = sh(bin, ['apply', '--dry-run', '--json'], { env: runEnv, timeout: 180_000 });
  assert.ok(dry.code === 0 || dry.code === 1, dry.err);
  const report = JSON.parse(dry.out) as Record<string, unknown>;
  t.diagnostic(`installed apply --dry-run: exit ${dry.code} in ${dry.ms} ms, ok=${String(report.ok)}`);
  assert.ok('ok' in report, dry.out.slice(0, 500));

  // --- install-service --no-start ------------------------------------------------------------
  const units = path.join(tmp, 'units');
  const hooksDir = path.join(tmp, 'hooks.d');
  fs.mkdirSync(units);
  const missing = sh(bin, ['install-service', '--no-start', '--unit-dir', path.join(tmp, 'nope'), '--config', config], { env: runEnv });
  assert.equal(missing.code, 1);
  assert.match(missing.err, /^cgwatchdog: install-service: the unit directory \S+\/nope does not exist[^\n]*\n$/);
  if (!fs.existsSync('/run/systemd/system')) {
    const noSystemd = sh(bin, ['install-service', '--unit-dir', units, '--config', config], { env: runEnv });
    assert.equal(noSystemd.code, 1);
    assert.match(noSystemd.err, /^cgwatchdog: install-service: systemd is not running as PID 1 here[^\n]*--no-start[^\n]*\n$/);
    assert.deepEqual(fs.readdirSync(units), [], 'nothing written before the error');
  }
  const badHooks = sh(bin, ['install-service', '--no-start', '--hooks', 'lxc'], { env: runEnv });
  assert.equal(badHooks.code, 2);
  assert.match(badHooks.err, /--hooks is "lxc": expected podman, crio, docker, none/);

  const inst = sh(bin, ['install-service', '--no-start', '--unit-dir', units, '--config', config, '--hooks', 'podman', '--hooks-dir', hooksDir], { env: runEnv });
  assert.equal(inst.code, 0, inst.err);
  t.diagnostic(`install-service --no-start: ${inst.out.trim().split('\n').join('; ')}`);
  const unitFile = path.join(units, 'cgwatchdog.service');
  const unit = fs.readFileSync(unitFile, 'utf8');
  const execStart = unit.split('\n').filter((l) => l.startsWith('ExecStart='));
  assert.deepEqual(execStart, [`ExecStart=${process.execPath} --max-semi-space-size=1 ${path.join(pkgDir, 'dist/src/cli.js')} run --config ${config}`]);
  assert.ok(unit.includes(`\nDocumentation=file:${path.join(pkgDir, 'README.md')}\n`));
  // Everything but those two lines is the package's unit: the sandbox measured is the one installed.
  const directives = (text: string) => text.split('\n').filter((l) => l && !l.startsWith('#') && !/^(ExecStart|Documentation)=/.test(l));
  assert.deepEqual(directives(unit), directives(fs.readFileSync(path.join(ROOT, 'systemd/cgwatchdog.service'), 'utf8')));
  // The config: the commented defaults, root-only; a second install keeps an edited one.
  const st = fs.statSync(config);
  assert.equal(st.mode & 0o777, 0o600);
  assert.ok(fs.readFileSync(config, 'utf8').endsWith(fs.readFileSync(path.join(ROOT, 'config/default.yaml'), 'utf8')));
  // The hooks it offered, pointing at the installed entry point and the config.
  const hookFile = path.join(hooksDir, 'cgwatchdog-precreate.json');
  const hook = JSON.parse(fs.readFileSync(hookFile, 'utf8')) as { hook: { path: string; args: string[] } };
  // The package ships the native client (built by prepack's npm run build): the hook is that binary, the Node hook its fallback.
  const native = path.join(pkgDir, 'dist/native/cgwatchdog-hook');
  assert.equal(hook.hook.path, native);
  assert.ok((fs.statSync(native).mode & 0o111) !== 0, 'the installed native client is executable');
  assert.deepEqual(hook.hook.args, ['cgwatchdog-hook', '--socket', '/run/cgwatchdog/hook.sock', '--node', process.execPath, '--cli', path.join(pkgDir, 'dist/src/cli.js'), '--config', config, 'hook', 'precreate']);
  fs.appendFileSync(config, '# edited by the operator\n');
  const again = sh(bin, ['install-service', '--no-start', '--unit-dir', units, '--config', config, '--hooks', 'podman', '--hooks-dir', hooksDir], { env: runEnv });
  assert.equal(again.code, 0, again.err);
  assert.match(again.out, /kept the existing/);
  assert.ok(fs.readFileSync(config, 'utf8').endsWith('# edited by the operator\n'), 'an existing config is never overwritten');
  // The sandbox hides /tmp from the service (PrivateTmp=): said, not refused.
  assert.match(inst.err, /PrivateTmp/);

  // --- systemd-analyze on the installed unit -------------------------------------------------
  const verify = sh('systemd-analyze', ['verify', '--man=no', unitFile], { timeout: 60_000 });
  const vout = (verify.out + verify.err).trim();
  t.diagnostic(`verify: ${vout || '(no output)'}`);
  assert.equal(verify.code, 0, vout);
  assert.deepEqual(vout.split('\n').filter((l) => l.includes('cgwatchdog.service')), [], 'no complaint about the unit');
  const sec = sh('systemd-analyze', ['security', '--offline=true', unitFile], { timeout: 60_000 });
  assert.equal(sec.code, 0, sec.err);
  const m = /Overall exposure level for cgwatchdog\.service: (\d+(?:\.\d+)?)/.exec(sec.out);
  assert.ok(m, sec.out);
  t.diagnostic(`security --offline: exposure ${m[1]} (threshold ${MAX_EXPOSURE})`);
  assert.ok(Number(m[1]) <= MAX_EXPOSURE, `exposure ${m[1]} > ${MAX_EXPOSURE}`);

  // --- --uninstall ---------------------------------------------------------------------------
  const un = sh(bin, ['install-service', '--no-start', '--uninstall', '--unit-dir', units, '--config', config], { env: runEnv });
  assert.equal(un.code, 0, un.err);
  t.diagnostic(`install-service --uninstall --no-start: ${un.out.trim().split('\n').join('; ')}`);
  assert.equal(fs.existsSync(unitFile), false, 'the unit is removed');
  assert.equal(fs.existsSync(hookFile), false, 'the hooks it installed are removed');
  assert.ok(fs.existsSync(config), 'the config is left');
  const twice = sh(bin, ['install-service', '--no-start', '--uninstall', '--unit-dir', units, '--config', config], { env: runEnv });
  assert.equal(twice.code, 0, twice.err);
  assert.match(twice.out, /nothing to remove/);
});

/** A devDependency may also be a production package's dependency (protobufjs needs @types/node). */
function isProductionDependency(name: string): boolean {
  const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
  return lock.packages[`node_modules/${name}`]?.dev !== true;
}
