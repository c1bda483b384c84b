import type { CgroupFs, Limit } from '../cgroup/types';
import { CgroupError } from '../cgroup/types';
import { countCpuList } from '../cgroup/parsers';
import type { Config } from '../config/schema';
import type { Container } from '../discovery/container';
import type { CpuQuota } from '../cgroup/types';
import { ancestorsOf, type CoresSource } from './cores';
import type { Action } from './decide';
import { evaluatePolicy, type PolicyInput } from './evaluate';

/** One container's reconcile outcome: what `apply` prints and the daemon logs. */
export interface ApplyResult {
  id: string;
  runtime: string;
  cgroupPath: string;
  cores?: number;
  coresSource?: CoresSource;
  coresDetail?: string;
  policyValue?: number | null;
  oldPidsMax?: Limit;
  newPidsMax?: Limit;
  action: Action | 'gone' | 'error';
  /** True when pids.max was written. */
  written: boolean;
  /** pids.current, when it was read (to check a lowering write is safe). */
  tasks?: number;
  reason: string;
}

export interface ApplyContext {
  cgroups: CgroupFs;
  config: Pick<Config, 'mode' | 'policy'>;
  hostCores: number;
  /** The value cgwatchdog last wrote to each cgroup, so keep-lower does not protect it. */
  written?: Map<string, number>;
  /** The value an OCI hook put in place at the container's creation (also ours, for keep-lower). */
  hookValue?: (cgroupPath: string) => number | undefined;
  /** Why nothing is written ("dry run"), when the caller computes only. Default: observe mode. */
  noWriteReason?: string;
  /** Ancestors' quotas read in this batch: the containers of one pod share them. */
  ancestorQuotas?: Map<string, Promise<CpuQuota | null>>;
}

/** An ancestor that is gone, or unreadable, has no say. */
function ancestorQuota(ctx: ApplyContext, rel: string): Promise<CpuQuota | null> {
  let p = ctx.ancestorQuotas?.get(rel);
  if (!p) {
    p = ctx.cgroups.readCpuQuota(rel, false).catch(() => null);
    ctx.ancestorQuotas?.set(rel, p);
  }
  return p;
}

const gone = (c: Container, reason: string): ApplyResult => ({ id: c.id, runtime: c.runtime, cgroupPath: c.cgroupPath, action: 'gone', written: false, reason });

/**
 * Compute the container's policy value and, in enforce mode, write it. A container that
 * vanishes on the way is reported as 'gone' (normal life); other errors as 'error' with the path.
 */
export async function applyPolicy(ctx: ApplyContext, c: Container): Promise<ApplyResult> {
  const { cgroups, config } = ctx;
  try {
    const up = ancestorsOf(c.cgroupPath);
    const [quota, cpuset, current, ...upQuotas] = await Promise.all([
      cgroups.readCpuQuota(c.cgroupPath),
      cgroups.readCpuset(c.cgroupPath),
      cgroups.readPidsMax(c.cgroupPath),
      ...up.map((a) => ancestorQuota(ctx, a)),
    ]);
    if (current === null) return gone(c, 'cgroup removed before pids.max could be read');
    const ancestors = up.map((path, i) => ({ path, quota: upQuotas[i] ?? null }));
    const input: PolicyInput = {
      policy: config.policy,
      quota,
      cpusetCount: cpuset ? countCpuList(cpuset) : null,
      hostCores: ctx.hostCores,
      ancestors,
      current,
      cgroupPath: c.cgroupPath,
      runtime: c.runtime,
      ours: ctx.written?.get(c.cgroupPath) ?? ctx.hookValue?.(c.cgroupPath),
    };
    let d = evaluatePolicy(input);
    const { cores } = d;
    const base = {
      id: c.id,
      runtime: c.runtime,
      cgroupPath: c.cgroupPath,
      cores: cores.cores,
      coresSource: cores.source,
      coresDetail: cores.detail,
      policyValue: d.policyValue,
      oldPidsMax: current,
    };
    // Lowering (or first limiting) a running container: never below what it already runs.
    let tasks: number | null | undefined;
    if (d.lowers) {
      tasks = await cgroups.readPidsCurrent(c.cgroupPath);
      d = evaluatePolicy({ ...input, tasks });
    }
    if (d.action !== 'set' || d.policyValue === null) return { ...base, newPidsMax: current, action: d.action, written: false, reason: d.reason, ...(tasks != null && d.action === 'too-low' ? { tasks } : {}) };
    if (config.mode === 'observe') return { ...base, newPidsMax: d.policyValue, action: 'set', written: false, reason: `${ctx.noWriteReason ?? 'observe mode'}, would set: ${d.reason}` };
    const w = await cgroups.writePidsMax(c.cgroupPath, d.policyValue);
    if (w === 'gone') return gone(c, 'cgroup removed before pids.max could be written');
    ctx.written?.set(c.cgroupPath, d.policyValue);
    return { ...base, newPidsMax: d.policyValue, action: 'set', written: true, reason: d.reason };
  } catch (err) {
    const path = err instanceof CgroupError ? err.path : c.cgroupPath;
    return { id: c.id, runtime: c.runtime, cgroupPath: c.cgroupPath, action: 'error', written: false, reason: `${path}: ${(err as Error).message}` };
  }
}
