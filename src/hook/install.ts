import fs from 'node:fs';
import path from 'node:path';

export type HookRuntime = 'podman' | 'crio' | 'docker';
export const HOOK_RUNTIMES: readonly HookRuntime[] = ['podman', 'crio', 'docker'];

/** Where each runtime looks (podman and CRI-O: containers-common's hooks.d; Docker: a directory of ours). */
export const DEFAULT_INSTALL_DIR: Record<HookRuntime, string> = {
  podman: '/etc/containers/oci/hooks.d',
  crio: '/etc/containers/oci/hooks.d',
  docker: '/usr/local/lib/cgwatchdog',
};

const HOOK_FILE: Record<'podman' | 'crio', string> = { podman: 'cgwatchdog-precreate.json', crio: 'cgwatchdog-prestart.json' };
const WRAPPER_FILE = 'cgwatchdog-runc';
/** Marks what we wrote: --uninstall removes only files that carry it. */
const MARK = 'cgwatchdog install-hooks';

export interface InstallOptions {
  runtime: HookRuntime;
  dir?: string;
  configFile?: string;
  uninstall?: boolean;
  /** The node binary and the built CLI (the running ones by default). */
  nodePath?: string;
  cliPath?: string;
  /** The native client (default: dist/native/cgwatchdog-hook beside the CLI's dist/src, when built); null: the Node hook. */
  nativePath?: string | null;
}

export interface InstallResult {
  /** The file written or removed. */
  file: string;
  removed?: boolean;
  /** What the operator does next, for stdout. */
  instructions: string;
}

function checkPath(what: string, p: string): string {
  if (!path.isAbsolute(p) || /[\0\n]/.test(p)) throw new Error(`${what} must be an absolute path: ${JSON.stringify(p)}`);
  return path.normalize(p);
}

function writeAtomic(file: string, text: string, mode: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode });
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, file);
}

/**
 * The hooks file (schema 1.0.0 of containers/common's pkg/hooks, read by podman and CRI-O):
 * podman's own precreate stage edits the proposed config.json, so runc writes the limit with
 * the other resources; CRI-O has no precreate, so its file runs the prestart check, which
 * writes pids.max into the cgroup runc just made.
 */
export function hooksJson(runtime: 'podman' | 'crio', nodePath: string, cliPath: string, configFile?: string): string {
  const stage = runtime === 'podman' ? 'precreate' : 'prestart';
  const args = ['node', cliPath, 'hook', stage, ...(configFile ? ['--config', configFile] : [])];
  // The marker rides in the hook's environment (a field the schema has: unknown keys are not
  // promised to be ignored by every reader of the format).
  const env = [`CGWATCHDOG_INSTALLED_BY=${MARK} --runtime ${runtime}`];
  return `${JSON.stringify({ version: '1.0.0', hook: { path: nodePath, args, env }, when: { always: true }, stages: [stage] }, null, 2)}\n`;
}

/** The Docker wrapper: a Node script with an absolute interpreter (never /usr/bin/env: $PATH is not ours to trust). */
export function wrapperScript(nodePath: string, cliPath: string, configFile?: string): string {
  if (/\s/.test(nodePath)) throw new Error(`the node path has white space, unusable in a #! line: ${nodePath}`);
  const wrapper = path.join(path.dirname(cliPath), 'hook', 'runc-wrapper.js');
  return [
    `#!${nodePath}`,
    `// ${MARK} --runtime docker: the OCI runtime dockerd runs in place of runc; --uninstall removes it.`,
    `'use strict';`,
    `require(${JSON.stringify(wrapper)}).runcWrapperMain(process.argv.slice(2), { self: __filename${configFile ? `, configFile: ${JSON.stringify(configFile)}` : ''} }).catch((err) => {`,
    `  require('node:fs').writeSync(2, 'cgwatchdog runc wrapper: ' + (err && err.message) + '\\n');`,
    `  process.exit(1);`,
    `});`,
    '',
  ].join('\n');
}

/** The hook socket and the real runc, from the config the hooks will use (as the daemon and the Node hook read it). */
function socketAndRunc(configFile: string | undefined): { hookSocket: string; runcPath: string } {
  const { configFileFor } = require('./hook-config') as typeof import('./hook-config');
  const { loadConfig, validateConfig } = require('../config/load') as typeof import('../config/load');
  const file = configFileFor(configFile);
  const c = file ? loadConfig(file) : validateConfig({}, 'built-in defaults');
  return { hookSocket: c.paths.hookSocket, runcPath: c.hooks.runcPath };
}

interface NativeArgs {
  native: string;
  hookSocket: string;
  nodePath: string;
  cliPath: string;
  configFile?: string;
}

/** The native client's options, in the order native/hook-client.c reads them. */
function nativeOptions(n: NativeArgs): string[] {
  return ['--socket', n.hookSocket, '--node', n.nodePath, '--cli', n.cliPath, ...(n.configFile ? ['--config', n.configFile] : [])];
}

/**
 * The hooks file with the native client as the hook: it asks the daemon's hook socket and
 * execs `node CLI hook <stage>` (the same hook as hooksJson's) when nobody answers.
 */
export function nativeHooksJson(runtime: 'podman' | 'crio', n: NativeArgs): string {
  const stage = runtime === 'podman' ? 'precreate' : 'prestart';
  const args = [path.basename(n.native), ...nativeOptions(n), 'hook', stage];
  const env = [`CGWATCHDOG_INSTALLED_BY=${MARK} --runtime ${runtime} (native)`];
  return `${JSON.stringify({ version: '1.0.0', hook: { path: n.native, args, env }, when: { always: true }, stages: [stage] }, null, 2)}\n`;
}

/**
 * The native wrapper's options, beside its copy: Docker runs a runtime by its path with runc's
 * arguments only (dockerd --add-runtime NAME=PATH), so the copy reads `<itself>.conf`.
 */
export function nativeWrapperConf(n: NativeArgs, runcPath: string): string {
  const lines = [`# ${MARK} --runtime docker: the native runc wrapper's options; --uninstall removes it and the wrapper.`, `socket=${n.hookSocket}`, `node=${n.nodePath}`, `cli=${n.cliPath}`];
  if (n.configFile) lines.push(`config=${n.configFile}`);
  // hooks.runcPath as it is now: after changing it, run install-hooks again.
  if (runcPath) lines.push(`runc=${runcPath}`);
  return `${lines.join('\n')}\n`;
}

function copyAtomic(from: string, file: string, mode: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.copyFileSync(from, tmp);
  fs.chmodSync(tmp, mode);
  fs.renameSync(tmp, file);
}

/** Removes `file` if it carries our mark; throws if it exists without it. */
function removeOurs(file: string): boolean {
  let text: string;
  try {
    text = fs.readFileSync(file, 'latin1');
  } catch {
    return false;
  }
  if (!text.includes(MARK)) throw new Error(`${file} was not written by cgwatchdog: left alone`);
  fs.rmSync(file);
  return true;
}

export function targetFile(runtime: HookRuntime, dir?: string): string {
  const d = checkPath('--hooks-dir', dir ?? DEFAULT_INSTALL_DIR[runtime]);
  return path.join(d, runtime === 'docker' ? WRAPPER_FILE : HOOK_FILE[runtime]);
}

export function installHooks(o: InstallOptions): InstallResult {
  const file = targetFile(o.runtime, o.dir);
  if (o.uninstall) {
    // The native wrapper's .conf first: without its wrapper it would be a stray file of ours.
    if (o.runtime === 'docker' && fs.existsSync(file) && fs.readFileSync(file, 'latin1').includes(MARK)) removeOurs(`${file}.conf`);
    if (!removeOurs(file)) return { file, removed: false, instructions: `nothing to remove: ${file} does not exist` };
    const more = o.runtime === 'docker' ? '; remove "cgwatchdog" from "runtimes" and "default-runtime" in /etc/docker/daemon.json and restart dockerd' : '';
    return { file, removed: true, instructions: `removed ${file}${more}` };
  }
  const nodePath = checkPath('the node binary', o.nodePath ?? process.execPath);
  const cliPath = checkPath('the cgwatchdog CLI', o.cliPath ?? path.resolve(__dirname, '..', 'cli.js'));
  const configFile = o.configFile ? checkPath('--config', path.resolve(o.configFile)) : undefined;
  const candidate = o.nativePath === undefined ? path.join(path.dirname(cliPath), '..', 'native', 'cgwatchdog-hook') : o.nativePath;
  const native = candidate && fs.existsSync(candidate) ? checkPath('the native hook client', candidate) : null;
  const n = native ? { native, nodePath, cliPath, configFile, ...socketAndRunc(configFile) } : null;
  if (o.runtime === 'docker') {
    if (n) {
      writeAtomic(`${file}.conf`, nativeWrapperConf(n, n.runcPath), 0o644);
      copyAtomic(n.native, file, 0o755);
    } else {
      writeAtomic(file, wrapperScript(nodePath, cliPath, configFile), 0o755);
      // A native wrapper's options left beside a Node wrapper would mislead whoever reads them.
      if (fs.existsSync(`${file}.conf`)) removeOurs(`${file}.conf`);
    }
    const lines = JSON.stringify({ runtimes: { cgwatchdog: { path: file } }, 'default-runtime': 'cgwatchdog' }, null, 2);
    return { file, instructions: `installed ${file}${n ? ` (the native wrapper; its options in ${file}.conf)` : ''}\nadd to /etc/docker/daemon.json, then restart dockerd (running containers keep their runtime):\n${lines}\n` };
  }
  writeAtomic(file, n ? nativeHooksJson(o.runtime, n) : hooksJson(o.runtime, nodePath, cliPath, configFile), 0o644);
  const note = o.dir ? ` (pass --hooks-dir ${path.dirname(file)} to ${o.runtime === 'podman' ? 'podman' : 'crio, or set hooks_dir in crio.conf'} if it is not one of its hooks directories)` : '';
  return { file, instructions: `installed ${file}${n ? ` (the native client ${n.native}, asking the daemon at ${n.hookSocket})` : ''}: new ${o.runtime === 'podman' ? 'podman' : 'CRI-O'} containers get the policy value before their first process${note}\n` };
}
