import fs from 'node:fs';
import path from 'node:path';
import type { Container } from '../discovery/container';
import { cgroupsPathToCgroup } from '../policy/spec';
import { brokenConfigFallback, loadHookConfig, type HookConfig } from './hook-config';
import { readRecord, writeRecord, type HookRecord } from './records';
import { applyPolicyToSpec, openHookHost, runtimeOf, type HookHost } from './spec-policy';

export const HOOK_STAGES = ['precreate', 'prestart', 'createRuntime'] as const;
export type HookStage = (typeof HOOK_STAGES)[number];

export interface HookRun {
  /** What the hook prints on stdout (precreate: the config.json; others: nothing). */
  stdout: string;
  exitCode: number;
  /** JSON log lines for stderr: runc shows a failed hook's stderr, podman and CRI-O log it. */
  log: string[];
}

/** One JSON line, the daemon's shape (pino's level names), without loading pino. */
export function logLine(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): string {
  return JSON.stringify({ level, time: Date.now(), name: 'cgwatchdog-hook', msg, ...fields });
}

/** The OCI state a prestart/createRuntime hook gets on stdin. */
interface OciState {
  id?: string;
  pid?: number;
  bundle?: string;
}

/** The container's cgroup from /proc/<pid>/cgroup: the pids hierarchy's line on v1, "0::" on v2. */
export function cgroupFromProc(text: string, version: 'v1' | 'v2'): string | null {
  const { parseProcCgroup } = require('../cgroup/namespace') as typeof import('../cgroup/namespace');
  const entries = parseProcCgroup(text);
  const e = version === 'v2' ? entries.find((x) => x.hierarchyId === 0) : entries.find((x) => x.controllers.includes('pids'));
  return e && !e.path.startsWith('/..') ? e.path : null;
}

/**
 * prestart / createRuntime: runc has made the cgroup and written the spec's resources, and
 * never writes them again before the container's process runs (runc 1.1.5, measured), so a
 * pids.max written here holds from the first instruction. The cgroup is read exactly as the
 * daemon reads it, through the same function.
 */
async function atCgroup(stateText: string, config: HookConfig, host: HookHost, stage: string): Promise<HookRecord> {
  const state = JSON.parse(stateText) as OciState;
  let cgroupPath: string | null = null;
  if (typeof state.pid === 'number' && Number.isInteger(state.pid) && state.pid > 0) {
    try {
      cgroupPath = cgroupFromProc(fs.readFileSync(path.join(config.paths.procRoot, String(state.pid), 'cgroup'), 'utf8'), host.cgroups.version);
    } catch {
      /* the process is gone: the spec says where its cgroup is */
    }
  }
  if (!cgroupPath && typeof state.bundle === 'string' && path.isAbsolute(state.bundle)) {
    const spec = JSON.parse(fs.readFileSync(path.join(state.bundle, 'config.json'), 'utf8')) as { linux?: { cgroupsPath?: string } };
    cgroupPath = cgroupsPathToCgroup(spec.linux?.cgroupsPath, state.id);
  }
  if (!cgroupPath) throw new Error(`no cgroup for container ${state.id ?? '?'} (pid ${state.pid ?? '?'})`);
  const { runtime, id } = runtimeOf(config, cgroupPath);
  const earlier = readRecord(config.paths.stateDir, cgroupPath);
  const c: Container = { id: id ?? state.id ?? cgroupPath, runtime, cgroupPath, seenAt: Date.now(), seenHr: process.hrtime.bigint() };
  const { applyPolicy } = require('../policy/apply') as typeof import('../policy/apply');
  const hookValue = earlier?.wrote && typeof earlier.value === 'number' ? earlier.value : undefined;
  const r = await applyPolicy({ cgroups: host.cgroups, config, hostCores: host.hostCores, hookValue: () => hookValue }, c);
  if (r.action === 'error' || r.action === 'gone') throw new Error(r.reason);
  return {
    v: 1,
    stage,
    cgroupPath,
    id: c.id,
    runtime,
    at: Date.now(),
    action: r.action === 'set' && !r.written ? 'observe' : r.action,
    value: r.newPidsMax,
    policyValue: r.policyValue,
    // A check that found the precreate's value in place keeps the precreate's claim.
    wrote: r.written || (earlier?.wrote === true && r.action === 'unchanged'),
    reason: r.reason,
  };
}

/** Where a hook run gets its config: loaded (may throw ConfigError), and what decides when it cannot be. */
export interface HookConfigSource {
  load(): HookConfig;
  /** hooks.failClosed and paths.stateDir when load() threw. */
  broken(): { failClosed: boolean; stateDir: string };
}

/** The Node hook's source: the file (or the daemon's default), through the hook's config cache. */
export function fileConfigSource(configFile: string | undefined, cacheDir?: string): HookConfigSource {
  return { load: () => loadHookConfig(configFile, cacheDir).config, broken: () => brokenConfigFallback(configFile, cacheDir) };
}

/**
 * `cgwatchdog hook <stage>`: never throws. Fails open (exit 0, the container starts, the daemon
 * applies the limit as without hooks) unless hooks.failClosed, which refuses the container
 * (exit 1). Either way the failure is logged and left for the daemon to count.
 */
export async function runHook(stage: string, stdin: string, opts: { configFile?: string; cacheDir?: string }): Promise<HookRun> {
  return runHookWith(stage, stdin, fileConfigSource(opts.configFile, opts.cacheDir));
}

/**
 * The hook's work with the config from anywhere: the Node hook's file, or the running daemon's
 * loaded config (src/hook/hook-server.ts, for the native client). Same records, same output.
 */
export async function runHookWith(stage: string, stdin: string, source: HookConfigSource): Promise<HookRun> {
  const log: string[] = [];
  let config: HookConfig | undefined;
  try {
    if (!(HOOK_STAGES as readonly string[]).includes(stage)) throw new Error(`unknown hook stage "${stage}" (expected ${HOOK_STAGES.join(', ')})`);
    config = source.load();
    const host = openHookHost(config);
    if (stage === 'precreate') {
      const r = await applyPolicyToSpec(stdin, config, host, stage);
      writeRecord(config.paths.stateDir, r.record);
      return { stdout: r.text, exitCode: 0, log };
    }
    writeRecord(config.paths.stateDir, await atCgroup(stdin, config, host, stage));
    return { stdout: '', exitCode: 0, log };
  } catch (err) {
    const message = (err as Error).message;
    const fallback = config ? { failClosed: config.hooks.failClosed, stateDir: config.paths.stateDir } : source.broken();
    const { failClosed } = fallback;
    log.push(logLine('error', `hook ${stage}: the PID limit could not be set: ${message}; ${failClosed ? 'container refused (hooks.failClosed)' : 'container starts, the daemon applies the limit (fail open)'}`, { stage }));
    try {
      writeRecord(fallback.stateDir, { v: 1, stage, cgroupPath: cgroupOfInput(stage, stdin), at: Date.now(), action: 'error', wrote: false, reason: message, failed: true, refused: failClosed });
    } catch (e) {
      log.push(logLine('error', `hook ${stage}: cannot record the failure: ${(e as Error).message}`));
    }
    // precreate must print a config either way: the one it was given.
    return { stdout: stage === 'precreate' && !failClosed ? stdin : '', exitCode: failClosed ? 1 : 0, log };
  }
}

/** Best effort: the cgroup a failed hook was about, so the daemon counts the failure on the container. */
function cgroupOfInput(stage: string, stdin: string): string | null {
  try {
    const j = JSON.parse(stdin) as { linux?: { cgroupsPath?: string } };
    return stage === 'precreate' ? cgroupsPathToCgroup(j.linux?.cgroupsPath) : null;
  } catch {
    return null;
  }
}
