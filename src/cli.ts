#!/usr/bin/env -S node --max-semi-space-size=1
// Asynchronous cgroup and /proc reads (thousands at start on a busy host) go through libuv's
// threadpool, 4 threads by default. Must be set before the first asynchronous fs call.
process.env.UV_THREADPOOL_SIZE ??= '8';

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { checkSecrets, ConfigError, loadConfig, validateConfig } from './config/load';
import type { Config } from './config/schema';
import { createLogger } from './log';
import { runApply, formatApply } from './apply-command';
import { Daemon } from './daemon';

const USAGE = `Usage: cgwatchdog <command> [options]

Commands:
  run      run the daemon: enforce the PID policy, raise kernel.pid_max, detect limit hits
  apply    one reconcile pass, print what was found and done, then exit

Options:
  --config FILE   config file (default /etc/cgwatchdog/config.yaml if present, else built-in defaults)
  --dry-run       apply: compute and report, write nothing
  --json          apply: print JSON instead of a table
  -h, --help      this text
  -v, --version   the version
`;

const DEFAULT_CONFIG = '/etc/cgwatchdog/config.yaml';

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
  if (positionals.length > 1) fail(`unexpected argument "${positionals[1]}"; see cgwatchdog --help`);
  if (command !== 'run' && command !== 'apply') fail(`unknown command "${command}"; see cgwatchdog --help`);
  if (command === 'run' && (values['dry-run'] || values.json)) fail('--dry-run and --json go with "apply", not "run"');

  let loaded;
  try {
    loaded = readConfig(values.config);
    if (command === 'run') checkSecrets(loaded.config, loaded.file ? `config ${loaded.file}` : 'built-in defaults');
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }

  if (command === 'apply') {
    const report = await runApply(loaded.config, { dryRun: values['dry-run'] === true });
    process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatApply(report));
    return report.ok ? 0 : 1;
  }

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

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err) => fail((err as Error).message, 1),
);
