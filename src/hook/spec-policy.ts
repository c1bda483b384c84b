import { detectLayout, openCgroupFs } from '../cgroup/index';
import type { CgroupFs } from '../cgroup/types';
import { hostCores } from '../kernel/proc';
import { ancestorsOf } from '../policy/cores';
import { evaluatePolicy, type PolicyOutcome } from '../policy/evaluate';
import { parseJsonLossless, setSpecPidsLimit, specPolicyInputs } from '../policy/spec';
import { buildRecognisers, recognise } from '../runtimes/index';
import type { HookConfig } from './hook-config';
import type { HookRecord } from './records';

/** The host as a hook sees it: opened once per hook run. */
export interface HookHost {
  cgroups: CgroupFs;
  hostCores: number;
}

export function openHookHost(config: HookConfig): HookHost {
  const layout = detectLayout(config.paths.procRoot, config.paths.cgroupRoot);
  return { cgroups: openCgroupFs(layout, config.paths.cgroupRoot), hostCores: hostCores() };
}

/** The runtime the daemon would say the cgroup belongs to (overrides may name it). */
export function runtimeOf(config: HookConfig, cgroupPath: string): { runtime: string; id?: string } {
  const r = recognise(buildRecognisers(config.discovery.runtimes, config.discovery.extraPatterns, config.discovery), cgroupPath);
  return r ? { runtime: r.runtime, id: r.id } : { runtime: 'unknown' };
}

export interface SpecResult {
  /** The config.json to hand on: the input text itself when nothing changed. */
  text: string;
  changed: boolean;
  outcome: PolicyOutcome;
  record: HookRecord;
}

/**
 * The policy on a proposed config.json, before the runtime makes the cgroup: the spec's own
 * CPU quota and cpuset, the ancestors' quotas as they are on the host (a pod's, a slice's),
 * the spec's pids.limit as the existing limit (podman writes its default 2048 there; keep-lower
 * keeps it), no tasks yet. In enforce mode a `set` becomes linux.resources.pids.limit, which runc
 * writes with the other resources before anything runs in the container.
 */
export async function applyPolicyToSpec(text: string, config: HookConfig, host: HookHost, stage: string, idHint?: string): Promise<SpecResult> {
  const doc = parseJsonLossless(text);
  const inputs = specPolicyInputs(doc.value, idHint);
  if (!inputs.cgroupPath) throw new Error('the spec has no usable linux.cgroupsPath');
  const cgroupPath = inputs.cgroupPath;
  const { runtime, id } = runtimeOf(config, cgroupPath);
  const ancestors = await Promise.all(ancestorsOf(cgroupPath).map(async (p) => ({ path: p, quota: await host.cgroups.readCpuQuota(p, false).catch(() => null) })));
  const outcome = evaluatePolicy({
    policy: config.policy,
    quota: inputs.quota,
    cpusetCount: inputs.cpusetCount,
    hostCores: host.hostCores,
    ancestors,
    current: inputs.pidsLimit,
    cgroupPath,
    runtime,
    tasks: null,
  });
  const write = outcome.action === 'set' && outcome.policyValue !== null && config.mode === 'enforce';
  if (write) setSpecPidsLimit(doc.value as Record<string, unknown>, outcome.policyValue!);
  const record: HookRecord = {
    v: 1,
    stage,
    cgroupPath,
    id: id ?? idHint,
    runtime,
    at: Date.now(),
    action: outcome.action === 'set' && !write ? 'observe' : outcome.action,
    value: write ? outcome.policyValue! : inputs.pidsLimit,
    policyValue: outcome.policyValue,
    wrote: write,
    reason: outcome.reason,
  };
  return { text: write ? doc.stringify(doc.value) : text, changed: write, outcome, record };
}
