/**
 * Issue 11's tests: configs, hook files and state of a test's own, in a temp directory each,
 * removed afterwards (also on failure) together with the hook's config cache entry on /run.
 */
import type { TestContext } from 'node:test';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { hookCacheFile } from '../../src/hook/hook-config';
import { listRecords, readRecord, type HookRecord } from '../../src/hook/records';
import { runCli, startDaemon, type DaemonHandle } from './daemon';

export interface HookSetup {
  dir: string;
  configFile: string;
  stateDir: string;
  /** The hooks directory install-hooks wrote into (podman --hooks-dir). */
  hooksDir: string;
  /** An empty hooks directory: the same run without the hook. */
  noHooksDir: string;
  /** paths.hookSocket of the config (object configs): where the native client asks; see startHookDaemon. */
  hookSocket: string;
  record(cgroupPath: string): HookRecord | undefined;
  records(): HookRecord[];
}

/** A config (an object, or YAML text for a broken one) and a temp dir for it; `install-hooks` is run by the caller. */
export function hookSetup(t: Pick<TestContext, 'after'>, tag: string, config: Record<string, unknown> | string): HookSetup {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `cgwd-test-hooks-${tag}-`));
  const stateDir = path.join(dir, 'state');
  const hooksDir = path.join(dir, 'hooks.d');
  const noHooksDir = path.join(dir, 'no-hooks.d');
  fs.mkdirSync(noHooksDir);
  const configFile = path.join(dir, 'config.yaml');
  const hookSocket = path.join(dir, 'hook.sock');
  const text = typeof config === 'string' ? config : YAML.stringify({ kernel: { manage: false }, metrics: { listen: '127.0.0.1:0' }, ...config, paths: { stateDir, hookSocket, ...((config.paths as object) ?? {}) } });
  fs.writeFileSync(configFile, text);
  t.after(() => {
    fs.rmSync(hookCacheFile(configFile), { force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir,
    configFile,
    stateDir,
    hooksDir,
    noHooksDir,
    hookSocket,
    record: (p) => readRecord(stateDir, p),
    records: () => listRecords(stateDir).map((r) => r.rec),
  };
}

/** `cgwatchdog install-hooks ...`, asserting it worked; returns its stdout. */
export async function installHooks(args: string[]): Promise<string> {
  const r = await runCli(['install-hooks', ...args]);
  if (r.code !== 0) throw new Error(`install-hooks ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** `cgwatchdog apply --dry-run --json` with the config: the report's entry for the cgroup. */
export async function applyEntry(configFile: string, cgroupPath: string): Promise<Record<string, any>> {
  const r = await runCli(['apply', '--dry-run', '--json', '--config', configFile]);
  if (r.code !== 0) throw new Error(`apply exited ${r.code}: ${r.stderr}`);
  const report = JSON.parse(r.stdout) as { containers: Record<string, any>[] };
  const mine = report.containers.find((c) => c.cgroupPath === cgroupPath);
  if (!mine) throw new Error(`${cgroupPath} not in apply's report: ${report.containers.map((c) => c.cgroupPath).join(', ')}`);
  return mine;
}

export interface HookDaemon {
  d: DaemonHandle;
  /**
   * 'hook request served' lines (the native client's answers through the socket), by stage,
   * after the daemon's output has been read (a spawnSync in the test holds it in the pipe).
   */
  served(stage?: string): Promise<number>;
}

/**
 * A daemon that serves the hook socket of `s` and touches nothing else: observe mode, its own
 * state, status socket and an empty discovery root (this host's other containers are not its
 * business); the hooks' own configs are read per request as the Node hook reads them. Stopped
 * in t.after (also on failure).
 */
export async function startHookDaemon(t: Pick<TestContext, 'after'>, s: HookSetup): Promise<HookDaemon> {
  // Its own dir, removed after it stopped (t.after hooks run in order: s.dir may be gone first).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-test-hooks-daemon-'));
  const d = startDaemon({
    mode: 'observe',
    logLevel: 'debug',
    kernel: { manage: false },
    metrics: { enabled: false },
    detection: { kmsg: false },
    discovery: { roots: ['/cgwd-test-hooks-daemon-none'] },
    paths: { stateDir: path.join(dir, 'state'), statusSocket: path.join(dir, 'status.sock'), hookSocket: s.hookSocket },
  }, { configPath: path.join(dir, 'config.yaml') });
  t.after(async () => {
    await d.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await d.waitForLog((l) => l.msg === 'hook socket listening', 15_000);
  return {
    d,
    served: async (stage) => {
      await new Promise((r) => setTimeout(r, 300));
      return d.logs.filter((l) => l.msg === 'hook request served' && (stage === undefined || l.stage === stage)).length;
    },
  };
}
