import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { HOOK_RUNTIMES, installHooks, targetFile, type HookRuntime } from '../hook/install';
import { findOnPath } from '../find-on-path';

// `cgwatchdog install-service`: the unit, a config if there is none, optionally the OCI hooks,
// then systemctl. The unit file written is the package's systemd/cgwatchdog.service with only
// the install-specific lines changed (ExecStart, Documentation, the layout comment), so the
// sandbox that test/unit/systemd-unit.test.ts measures is the one installed.

export const UNIT_NAME = 'cgwatchdog.service';
export const DEFAULT_UNIT_DIR = '/etc/systemd/system';
export const DEFAULT_CONFIG_FILE = '/etc/cgwatchdog/config.yaml';
export type HooksChoice = HookRuntime | 'none';
export const HOOKS_CHOICES: readonly HooksChoice[] = [...HOOK_RUNTIMES, 'none'];

/** First line of every unit we write; --uninstall reads the hooks record from the second. */
const MARK = '# Written by cgwatchdog install-service';
const HOOKS_RECORD = '# cgwatchdog install-service hooks:';

/** The package's own ExecStart (the /opt/cgwatchdog layout), replaced as a whole line. */
const PACKAGE_EXEC = /^ExecStart=\/usr\/bin\/node (--max-semi-space-size=1) \/opt\/cgwatchdog\/dist\/src\/cli\.js run --config \/etc\/cgwatchdog\/config\.yaml$/m;
const PACKAGE_DOC = /^Documentation=file:\/opt\/cgwatchdog\/README\.md$/m;

export interface ServiceOptions {
  unitDir?: string;
  configFile?: string;
  hooks?: HooksChoice;
  /** Where the hooks go (install-hooks' --hooks-dir); the runtime's own directory by default. */
  hooksDir?: string;
  /** Write the files and daemon-reload nothing: no systemctl at all. */
  noStart?: boolean;
  uninstall?: boolean;
  /** The node binary and the installed package root (the running ones by default). */
  nodePath?: string;
  packageRoot?: string;
  /** systemctl to run; found on PATH by default. */
  systemctl?: string;
  /** Is systemd running as PID 1 here (/run/systemd/system exists)? Overridable for tests. */
  systemdRunning?: boolean;
}

export interface ServiceStep {
  step: string;
  ms: number;
  detail: string;
}

export interface ServiceResult {
  unitFile: string;
  configFile: string;
  steps: ServiceStep[];
  /** Things the operator should know (a path the sandbox hides, a runtime found without --hooks). */
  warnings: string[];
}

/** An error meant for a person: one sentence, no stack. */
export class ServiceError extends Error {
  override name = 'ServiceError';
}

/** Characters that need no quoting or %-escaping in a unit file's ExecStart. */
const PLAIN_PATH = /^\/[A-Za-z0-9._+@:/-]*$/;

function checkPath(what: string, p: string): string {
  if (!path.isAbsolute(p)) throw new ServiceError(`${what} must be an absolute path, not "${p}"`);
  const n = path.normalize(p);
  if (!PLAIN_PATH.test(n)) throw new ServiceError(`${what} "${n}" has characters a unit file would have to quote or escape (white space, %, $, quotes): install to a plain path`);
  return n;
}

function defaultPackageRoot(): string {
  // dist/src/install -> the package root
  return path.resolve(__dirname, '..', '..', '..');
}


/**
 * The unit for this install: the package's unit with ExecStart naming this node and this
 * package's entry point, the config file given, and a header saying where it came from.
 * Pure (text in, text out).
 */
export function renderUnit(packageUnit: string, o: { nodePath: string; cliPath: string; configFile: string; source: string; readme: string; version: string; hooks: { runtime: HookRuntime; file: string }[] }): string {
  if (!PACKAGE_EXEC.test(packageUnit)) throw new ServiceError(`${o.source} has no ExecStart line of the expected form: the package is damaged`);
  let text = packageUnit.replace(PACKAGE_EXEC, `ExecStart=${o.nodePath} $1 ${o.cliPath} run --config ${o.configFile}`);
  text = text.replace(PACKAGE_DOC, `Documentation=file:${o.readme}`);
  // The package's header describes the /opt/cgwatchdog layout; this install's is in the header below.
  const body = text.replace(/^# Install layout \(this unit expects it\):\n(?:#.*\n)*?# Reload the configuration:/m, '# Reload the configuration:');
  const header = [
    `${MARK} ${o.version} from ${o.source}; --uninstall removes it.`,
    `${HOOKS_RECORD} ${o.hooks.length ? o.hooks.map((h) => `${h.runtime}=${h.file}`).join(' ') : 'none'}`,
    `#   node ${o.nodePath}, entry point ${o.cliPath}, config ${o.configFile}`,
    '',
  ].join('\n');
  return header + body;
}

/** The hooks an installed unit says install-service put in place. Pure. */
export function recordedHooks(unitText: string): { runtime: HookRuntime; file: string }[] {
  const line = unitText.split('\n').find((l) => l.startsWith(HOOKS_RECORD));
  if (!line) return [];
  const out: { runtime: HookRuntime; file: string }[] = [];
  for (const word of line.slice(HOOKS_RECORD.length).trim().split(/\s+/)) {
    const eq = word.indexOf('=');
    const runtime = word.slice(0, eq) as HookRuntime;
    if (eq > 0 && HOOK_RUNTIMES.includes(runtime)) out.push({ runtime, file: word.slice(eq + 1) });
  }
  return out;
}

function writeAtomic(file: string, text: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode });
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, file);
}

function run(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: 120_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const why = (stderr || stdout || err.message).trim().split('\n').slice(-1)[0] ?? err.message;
        reject(new ServiceError(`${path.basename(file)} ${args.join(' ')} failed: ${why}`));
      } else resolve(`${stdout}${stderr}`.trim());
    });
  });
}

/** Paths the unit's own sandbox hides from the daemon (ProtectHome=true, PrivateTmp=true). */
function hiddenBySandbox(p: string): boolean {
  return /^\/(home|root|run\/user|tmp|var\/tmp)(\/|$)/.test(p);
}

export async function installService(o: ServiceOptions = {}): Promise<ServiceResult> {
  const unitDir = checkPath('--unit-dir', o.unitDir ?? DEFAULT_UNIT_DIR);
  const configFile = checkPath('--config', path.resolve(o.configFile ?? DEFAULT_CONFIG_FILE));
  const unitFile = path.join(unitDir, UNIT_NAME);
  const steps: ServiceStep[] = [];
  const warnings: string[] = [];
  const step = async <T>(name: string, f: () => T | Promise<T>, detail: (r: T) => string): Promise<T> => {
    const t0 = process.hrtime.bigint();
    const r = await f();
    steps.push({ step: name, ms: Math.round(Number(process.hrtime.bigint() - t0) / 1e5) / 10, detail: detail(r) });
    return r;
  };

  const useSystemctl = !o.noStart;
  if (useSystemctl && process.getuid?.() !== 0) throw new ServiceError(`install-service must run as root (it writes ${unitFile} and runs systemctl): run it with sudo, or pass --no-start to only write the files`);
  if (!fs.existsSync(unitDir) || !fs.statSync(unitDir).isDirectory()) throw new ServiceError(`the unit directory ${unitDir} does not exist (is this a systemd host? else pass --unit-dir)`);
  let systemctl = '';
  if (useSystemctl) {
    systemctl = o.systemctl ?? findOnPath('systemctl') ?? '';
    if (!systemctl) throw new ServiceError('there is no systemctl on this machine (is it a systemd host?): pass --no-start to only write the files');
    if (!(o.systemdRunning ?? fs.existsSync('/run/systemd/system'))) throw new ServiceError('systemd is not running as PID 1 here (no /run/systemd/system): pass --no-start to only write the files');
  }

  if (o.uninstall) {
    let text: string | null = null;
    try {
      text = fs.readFileSync(unitFile, 'utf8');
    } catch {
      /* not installed: stop/disable anyway, a unit elsewhere may be loaded */
    }
    if (useSystemctl) await step('systemctl disable --now', () => run(systemctl, ['disable', '--now', UNIT_NAME]).catch((e: Error) => `(${e.message})`), (r) => r || 'stopped and disabled');
    const hooks = text ? recordedHooks(text) : [];
    await step('remove unit', () => {
      if (text === null) return false;
      fs.rmSync(unitFile);
      return true;
    }, (removed) => (removed ? `removed ${unitFile}` : `nothing to remove: ${unitFile} does not exist`));
    for (const h of hooks) {
      await step(`remove ${h.runtime} hooks`, () => installHooks({ runtime: h.runtime, dir: path.dirname(h.file), uninstall: true }), (r) => r.instructions.trim());
    }
    if (useSystemctl) await step('systemctl daemon-reload', () => run(systemctl, ['daemon-reload']), () => 'done');
    steps.push({ step: 'config', ms: 0, detail: `left ${configFile} in place` });
    return { unitFile, configFile, steps, warnings };
  }

  const root = o.packageRoot ?? defaultPackageRoot();
  const nodePath = checkPath('the node binary', o.nodePath ?? process.execPath);
  const cliPath = checkPath('the cgwatchdog entry point', path.join(root, 'dist', 'src', 'cli.js'));
  if (!fs.existsSync(cliPath)) throw new ServiceError(`the entry point ${cliPath} does not exist: run install-service from an installed package (npm install -g)`);
  const source = path.join(root, 'systemd', UNIT_NAME);
  const version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  for (const [what, p] of [['node', nodePath], ['the entry point', cliPath], ['the config', configFile]] as const) {
    if (hiddenBySandbox(p)) warnings.push(`${what} ${p} is under a path the unit's sandbox hides (ProtectHome=, PrivateTmp=): the service would not find it there (npm install -g puts the package under /usr/local by default)`);
  }

  // The config first: a unit without it would fail at its first start.
  await step('config', () => {
    if (fs.existsSync(configFile)) return false;
    fs.mkdirSync(path.dirname(configFile), { recursive: true, mode: 0o755 });
    const defaults = fs.readFileSync(path.join(root, 'config', 'default.yaml'), 'utf8');
    // 0600: alert sinks' URLs and tokens are added here.
    writeAtomic(configFile, `# Written by cgwatchdog install-service ${version}; edit it, then: systemctl reload cgwatchdog\n${defaults}`, 0o600);
    return true;
  }, (wrote) => (wrote ? `wrote ${configFile} (the defaults, commented)` : `kept the existing ${configFile}`));

  const hooks: { runtime: HookRuntime; file: string }[] = [];
  const choice = o.hooks ?? 'none';
  if (!HOOKS_CHOICES.includes(choice)) throw new ServiceError(`--hooks is "${String(choice)}": expected ${HOOKS_CHOICES.join(', ')}`);
  if (choice !== 'none') {
    const r = await step(`${choice} hooks`, () => installHooks({ runtime: choice, dir: o.hooksDir, configFile, nodePath, cliPath }), (x) => x.instructions.trim());
    hooks.push({ runtime: choice, file: r.file });
  } else {
    const found = (['podman', 'crio', 'docker'] as const).filter((b) => findOnPath(b) !== null && !fs.existsSync(targetFile(b)));
    if (found.length) warnings.push(`found ${found.join(', ')}: --hooks ${found[0]} also puts the policy in place before a new container's first process`);
  }

  await step('unit', () => {
    const unit = renderUnit(fs.readFileSync(source, 'utf8'), { nodePath, cliPath, configFile, source, readme: path.join(root, 'README.md'), version, hooks });
    writeAtomic(unitFile, unit, 0o644);
  }, () => `wrote ${unitFile} (ExecStart=${nodePath} ... ${cliPath})`);

  if (useSystemctl) {
    await step('systemctl daemon-reload', () => run(systemctl, ['daemon-reload']), () => 'done');
    await step('systemctl enable --now', () => run(systemctl, ['enable', '--now', UNIT_NAME]), (r) => r.split('\n').filter(Boolean).slice(-1)[0] ?? 'enabled and started');
  }
  return { unitFile, configFile, steps, warnings };
}
