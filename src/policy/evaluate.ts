import type { CpuQuota, Limit } from '../cgroup/types';
import { coresFor, type CoresUsed, type QuotaAt } from './cores';
import { decide, tooLowForTasks, type Decision, type PolicyConfig } from './decide';

/**
 * Everything the policy looks at, as values: the daemon and `apply` read them from the cgroup
 * files, the OCI hook and the Docker wrapper from the proposed config.json (the spec's own CPU
 * quota and cpuset, its pids.limit as "current") plus the ancestors' quotas on the host.
 */
export interface PolicyInput {
  policy: PolicyConfig;
  quota: CpuQuota | null;
  cpusetCount: number | null;
  hostCores: number;
  ancestors: readonly QuotaAt[];
  current: Limit;
  cgroupPath: string;
  runtime: string;
  /** The value cgwatchdog itself put there last (a daemon write, or a hook's at creation). */
  ours?: number;
  /**
   * Tasks in the cgroup: undefined when not read yet (the result then says `lowers`, and the
   * caller reads pids.current and asks again); null when nothing runs yet (a spec at precreate).
   */
  tasks?: number | null;
}

export interface PolicyOutcome extends Decision {
  cores: CoresUsed;
  /** The decision is a write that lowers the limit (or limits an unlimited one): tasks matter. */
  lowers: boolean;
}

/**
 * The one policy: cores from the quota, cpuset and ancestors, the override, keep-lower, and
 * the headroom over the tasks already running. Pure: daemon, `apply` and the hooks call it.
 */
export function evaluatePolicy(input: PolicyInput): PolicyOutcome {
  const cores = coresFor(input.quota, input.cpusetCount, input.hostCores, input.ancestors);
  const d = decide(input.policy, cores, input.current, input.cgroupPath, input.runtime, input.ours);
  const lowers = d.action === 'set' && d.policyValue !== null && (input.current === 'max' || d.policyValue < input.current);
  if (lowers && input.tasks !== undefined && input.tasks !== null && d.policyValue !== null) {
    const unsafe = tooLowForTasks(d.policyValue, input.tasks);
    if (unsafe) return { ...d, action: 'too-low', reason: unsafe, cores, lowers };
  }
  return { ...d, cores, lowers };
}
