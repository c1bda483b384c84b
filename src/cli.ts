#!/usr/bin/env -S node --max-semi-space-size=1
// Asynchronous cgroup and /proc reads (thousands at start on a busy host) go through libuv's
// threadpool, 4 threads by default. Must be set before the first asynchronous fs call.
process.env.UV_THREADPOOL_SIZE ??= '8';

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Config } from './config/schema';
import { DEFAULT_CONFIG } from './hook/hook-config';

// The other modules are loaded by the command that needs them: `hook` runs at every container
// start and must not pay for zod, yaml, pino and prom-client (~100 ms under load here).

const USAGE = `Usage: cgwatchdog <command> [options]

Commands:
  run      run the daemon: enforce the PID policy, raise kernel.pid_max, detect limit hits
  apply    one reconcile pass, print what was found and done, then exit
  status [--json] [--watch [--interval SECONDS]]
           ask the running daemon (as root): containers closest to their PID or memory
           limit first, with limit hits, OOM kills and the last event; detection and
           alert health; --watch redraws every 2 s
  test-alert [--json]
           send one test alert (kind test, severity info) to every configured sink now,
           one attempt each, and say per sink what happened; exit 1 if any failed
  hook <precreate|prestart|createRuntime>
           the OCI hook (podman, CRI-O): the policy value in place before the first process
  install-hooks --runtime podman|crio|docker [--hooks-dir DIR] [--config FILE]
                [--print-runtime-path] [--uninstall]
           podman/CRI-O: the hooks JSON in DIR (default /etc/containers/oci/hooks.d);
           docker: the runtime wrapper in DIR (default /usr/local/lib/cgwatchdog) and the
           daemon.json lines to add; the native client (dist/native/cgwatchdog-hook, asking
           the daemon at paths.hookSocket) when built, else the Node hook
  install-service [--unit-dir DIR] [--config FILE] [--hooks podman|crio|docker|none]
                  [--hooks-dir DIR] [--no-start] [--uninstall]
           the systemd unit for this installed package (in DIR, default /etc/systemd/system),
           the config FILE (default /etc/cgwatchdog/config.yaml) if absent, the OCI hooks,
           then systemctl daemon-reload and enable --now; --uninstall stops and removes the
           unit and its hooks, and leaves the config

Options:
  --config FILE   config file (default /etc/cgwatchdog/config.yaml if present, else built-in defaults)
  --dry-run       apply: compute and report, write nothing
  --json          apply, status, test-alert: print JSON instead of a table
  --watch, -w     status: redraw until interrupted
  --interval S    status --watch: seconds between frames (default 2)
  -h, --help      this text
  -v, --version   the version
`;


function version(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** Errors for people go to stderr in one plain sentence. */
function fail(message: string, code = 2): never {
  process.stderr.write(`cgwatchdog: ${message}\n`);
  process.exit(code);
}

function readConfig(file: string | undefined): { config: Config; file: string | null } {
  const { loadConfig, validateConfig } = require('./config/load') as typeof import('./config/load');
  if (file) return { config: loadConfig(file), file };
  if (fs.existsSync(DEFAULT_CONFIG)) return { config: loadConfig(DEFAULT_CONFIG), file: DEFAULT_CONFIG };
  return { config: validateConfig({}, 'built-in defaults'), file: null };
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        'dry-run': { type: 'boolean' },
        json: { type: 'boolean' },
        watch: { type: 'boolean', short: 'w' },
        interval: { type: 'string' },
        runtime: { type: 'string' },
        'hooks-dir': { type: 'string' },
        'print-runtime-path': { type: 'boolean' },
        uninstall: { type: 'boolean' },
        'unit-dir': { type: 'string' },
        hooks: { type: 'string' },
        'no-start': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
    });
  } catch (err) {
    fail(`${(err as Error).message.replace(/\.$/, '')}; see cgwatchdog --help`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`${version()}\n`);
    return 0;
  }
  const command = positionals[0];
  if (!command) fail('no command given; see cgwatchdog --help');
  if (command === 'hook') return hook(positionals, values.config);
  if (command === 'install-service') return installServiceCommand(positionals, values);
  const serviceOptions = ['unit-dir', 'hooks', 'no-start'] as const;
  const strayService = serviceOptions.find((k) => values[k] !== undefined);
  if (strayService) fail(`--${strayService} goes with "install-service", not "${command}"`);
  if (positionals.length > 1) fail(`unexpected argument "${positionals[1]}"; see cgwatchdog --help`);
  if (command !== 'status' && (values.watch || values.interval !== undefined)) fail(`--${values.watch ? 'watch' : 'interval'} goes with "status", not "${command}"`);
  if (command === 'status' || command === 'test-alert') return statusOrTestAlert(command, values);
  if (command !== 'run' && command !== 'apply' && command !== 'install-hooks') fail(`unknown command "${command}"; see cgwatchdog --help`);
  if (command === 'run' && (values['dry-run'] || values.json)) fail('--dry-run and --json go with "apply", not "run"');
  const hookOptions = ['runtime', 'hooks-dir', 'print-runtime-path', 'uninstall'] as const;
  if (command !== 'install-hooks') {
    const stray = hookOptions.find((k) => values[k] !== undefined);
    if (stray) fail(`--${stray} goes with "install-hooks", not "${command}"`);
  } else return installHooksCommand(values);

  const { checkSecrets, ConfigError } = await import('./config/load');

  let loaded;
  try {
    loaded = readConfig(values.config);
    if (command === 'run') checkSecrets(loaded.config, loaded.file ? `config ${loaded.file}` : 'built-in defaults');
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }

  if (command === 'apply') {
    const { runApply, formatApply } = await import('./apply-command');
    const report = await runApply(loaded.config, { dryRun: values['dry-run'] === true });
    process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatApply(report));
    return report.ok ? 0 : 1;
  }

  const { createLogger } = await import('./log');
  const { Daemon } = await import('./daemon');
  const log = createLogger(loaded.config.logLevel);
  // Every callback from the outside handles its own errors; what still escapes is a bug. A
  // rejected promise is logged and survived (detection goes on); an exception thrown out of a
  // callback leaves state unknown: log it and exit non-zero, for systemd to restart us.
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled promise rejection (a bug): logged, the daemon goes on'));
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception (a bug): exiting for a clean restart');
    process.exit(70);
  });
  const daemon = new Daemon(loaded.config, loaded.file, log);
  // Before start: the default action of SIGHUP, SIGTERM and SIGINT ends the process at once.
  // A SIGHUP sent the moment the daemon says it runs must reload it, and a SIGTERM during a
  // long start (thousands of containers) must still save what was written: both queue behind
  // the start (the daemon serializes start, reload and stop).
  process.on('SIGHUP', () => void daemon.reload());
  let stopping = false;
  const stop = (signal: string) => {
    log.info({ signal }, 'stopping');
    if (stopping) return;
    stopping = true;
    daemon.stop().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    await daemon.start();
  } catch (err) {
    log.fatal({ err }, 'cannot start');
    fail((err as Error).message, 1);
  }
  return -1; // keep running
}

/** `cgwatchdog hook <stage>`: the OCI state or config.json on stdin; precreate prints the config. */
async function hook(positionals: string[], configFile: string | undefined): Promise<number> {
  const stage = positionals[1];
  if (!stage) fail('hook: no stage given (precreate, prestart or createRuntime)');
  if (positionals.length > 2) fail(`hook: unexpected argument "${positionals[2]}"`);
  const { runHook } = await import('./hook/oci-hook');
  const r = await runHook(stage, fs.readFileSync(0, 'utf8'), { configFile });
  for (const line of r.log) process.stderr.write(`${line}\n`);
  if (r.stdout) await new Promise<void>((resolve) => process.stdout.write(r.stdout, () => resolve()));
  return r.exitCode;
}

async function installServiceCommand(positionals: string[], values: { config?: string; 'unit-dir'?: string; hooks?: string; 'no-start'?: boolean; uninstall?: boolean; runtime?: string; 'hooks-dir'?: string; 'print-runtime-path'?: boolean; 'dry-run'?: boolean; json?: boolean; watch?: boolean; interval?: string }): Promise<number> {
  if (positionals.length > 1) fail(`install-service: unexpected argument "${positionals[1]}"`);
  const stray = (['runtime', 'print-runtime-path', 'dry-run', 'json', 'watch', 'interval'] as const).find((k) => values[k] !== undefined);
  if (stray) fail(`--${stray} does not go with "install-service"`);
  const { HOOKS_CHOICES, installService, ServiceError } = require('./install/service') as typeof import('./install/service');
  if (values.hooks !== undefined && !(HOOKS_CHOICES as readonly string[]).includes(values.hooks)) fail(`install-service: --hooks is "${values.hooks}": expected ${HOOKS_CHOICES.join(', ')}`);
  if (values['hooks-dir'] !== undefined && (values.hooks === undefined || values.hooks === 'none')) fail('install-service: --hooks-dir goes with --hooks podman, crio or docker');
  if (values.uninstall && values.hooks !== undefined) fail('install-service: --uninstall removes the hooks the install put in place; --hooks does not go with it');
  // A config the daemon could not read is refused now, not at its first start (a unit that
  // fails at once and is restarted every RestartSec=).
  const configFile = values.config ?? DEFAULT_CONFIG;
  if (!values.uninstall && fs.existsSync(configFile)) {
    try {
      readConfig(configFile);
    } catch (err) {
      fail((err as Error).message);
    }
  }
  try {
    const r = await installService({
      unitDir: values['unit-dir'],
      configFile: values.config,
      hooks: values.hooks as import('./install/service').HooksChoice | undefined,
      hooksDir: values['hooks-dir'],
      noStart: values['no-start'],
      uninstall: values.uninstall,
    });
    for (const s of r.steps) process.stdout.write(`${s.step}: ${s.detail} (${s.ms} ms)\n`);
    for (const w of r.warnings) process.stderr.write(`cgwatchdog: warning: ${w}\n`);
    return 0;
  } catch (err) {
    if (err instanceof ServiceError) fail(`install-service: ${err.message}`, 1);
    throw err;
  }
}

function installHooksCommand(values: { runtime?: string; 'hooks-dir'?: string; config?: string; 'print-runtime-path'?: boolean; uninstall?: boolean; 'dry-run'?: boolean; json?: boolean }): number {
  if (values['dry-run'] || values.json) fail('--dry-run and --json go with "apply", not "install-hooks"');
  const { HOOK_RUNTIMES, installHooks } = require('./hook/install') as typeof import('./hook/install');
  const runtime = values.runtime;
  if (!runtime) fail(`install-hooks: --runtime is required (${HOOK_RUNTIMES.join(', ')})`);
  if (!(HOOK_RUNTIMES as readonly string[]).includes(runtime)) fail(`install-hooks: --runtime is "${runtime}": expected ${HOOK_RUNTIMES.join(', ')}`);
  if (values['print-runtime-path'] && runtime !== 'docker') fail('install-hooks: --print-runtime-path goes with --runtime docker');
  // A config the hooks could not read is refused now, not at the first container.
  if (values.config && !values.uninstall) {
    try {
      readConfig(values.config);
    } catch (err) {
      fail((err as Error).message);
    }
  }
  try {
    const r = installHooks({ runtime: runtime as 'podman' | 'crio' | 'docker', dir: values['hooks-dir'], configFile: values.config, uninstall: values.uninstall });
    process.stdout.write(values['print-runtime-path'] && !values.uninstall ? `${r.file}\n` : `${r.instructions.replace(/\n?$/, '\n')}`);
    return 0;
  } catch (err) {
    fail(`install-hooks: ${(err as Error).message}`, 1);
  }
}

/** `status` and `test-alert`: both read the config, neither changes anything. */
async function statusOrTestAlert(command: 'status' | 'test-alert', values: { config?: string; json?: boolean; watch?: boolean; interval?: string; 'dry-run'?: boolean; runtime?: string; 'hooks-dir'?: string; 'print-runtime-path'?: boolean; uninstall?: boolean }): Promise<number> {
  const stray = (['dry-run', 'runtime', 'hooks-dir', 'print-runtime-path', 'uninstall'] as const).find((k) => values[k] !== undefined);
  if (stray) fail(`--${stray} does not go with "${command}"`);
  let intervalMs = 2000;
  if (values.interval !== undefined) {
    if (!values.watch) fail('--interval goes with --watch');
    const n = Number(values.interval);
    if (!Number.isFinite(n) || n < 0.1 || n > 3600) fail(`--interval is "${values.interval}": expected seconds between 0.1 and 3600`);
    intervalMs = Math.round(n * 1000);
  }
  let config: Config;
  try {
    config = readConfig(values.config).config;
  } catch (err) {
    const message = (err as Error).message;
    // The config of a root daemon is often root's only: say what to do, not EACCES.
    if (command === 'status' && /EACCES|permission denied/i.test(message)) fail(`permission denied reading the config (${message}): status is root's only, run: sudo cgwatchdog status`);
    fail(message);
  }
  if (command === 'status') {
    const { statusCommand } = await import('./status/command');
    const { StatusError } = await import('./status/client');
    try {
      return await statusCommand(config.paths.statusSocket, { json: values.json === true, watch: values.watch === true, intervalMs });
    } catch (err) {
      if (err instanceof StatusError) fail(err.message, 1);
      throw err;
    }
  }
  const { makeTestAlert, sendTestAlert, formatTestAlert } = await import('./alerts/test-alert');
  if (config.alerts.sinks.length === 0) fail('test-alert: no alert sinks are configured (alerts.sinks is empty): nothing to send to', 1);
  const alert = makeTestAlert(config);
  const results = await sendTestAlert(config, alert);
  process.stdout.write(values.json ? `${JSON.stringify({ alert, results }, null, 2)}\n` : formatTestAlert(alert, results));
  return results.some((r) => r.outcome === 'failed') ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err) => fail((err as Error).message, 1),
);
