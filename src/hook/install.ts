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

export function targetFile(runtime: HookRuntime, dir?: string): string {
  const d = checkPath('--hooks-dir', dir ?? DEFAULT_INSTALL_DIR[runtime]);
  return path.join(d, runtime === 'docker' ? WRAPPER_FILE : HOOK_FILE[runtime]);
}

export function installHooks(o: InstallOptions): InstallResult {
  const file = targetFile(o.runtime, o.dir);
  if (o.uninstall) {
    let text: string | null = null;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      return { file, removed: false, instructions: `nothing to remove: ${file} does not exist` };
    }
    if (!text.includes(MARK)) throw new Error(`${file} was not written by cgwatchdog: left alone`);
    fs.rmSync(file);
    const more = o.runtime === 'docker' ? '; remove "cgwatchdog" from "runtimes" and "default-runtime" in /etc/docker/daemon.json and restart dockerd' : '';
    return { file, removed: true, instructions: `removed ${file}${more}` };
  }
  const nodePath = checkPath('the node binary', o.nodePath ?? process.execPath);
  const cliPath = checkPath('the cgwatchdog CLI', o.cliPath ?? path.resolve(__dirname, '..', 'cli.js'));
  const configFile = o.configFile ? checkPath('--config', path.resolve(o.configFile)) : undefined;
  if (o.runtime === 'docker') {
    writeAtomic(file, wrapperScript(nodePath, cliPath, configFile), 0o755);
    const lines = JSON.stringify({ runtimes: { cgwatchdog: { path: file } }, 'default-runtime': 'cgwatchdog' }, null, 2);
    return { file, instructions: `installed ${file}\nadd to /etc/docker/daemon.json, then restart dockerd (running containers keep their runtime):\n${lines}\n` };
  }
  writeAtomic(file, hooksJson(o.runtime, nodePath, cliPath, configFile), 0o644);
  const note = o.dir ? ` (pass --hooks-dir ${path.dirname(file)} to ${o.runtime === 'podman' ? 'podman' : 'crio, or set hooks_dir in crio.conf'} if it is not one of its hooks directories)` : '';
  return { file, instructions: `installed ${file}: new ${o.runtime === 'podman' ? 'podman' : 'CRI-O'} containers get the policy value before their first process${note}\n` };
}
