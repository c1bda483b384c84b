import type { Config, PolicyOverride } from '../config/schema';
import type { Limit } from '../cgroup/types';
import type { CoresUsed } from './cores';

export type Action =
  | 'set' // pids.max written (enforce) or would be (observe)
  | 'unchanged' // already at the policy value
  | 'kept-lower' // an existing lower limit kept (existing: keep-lower)
  | 'excluded' // an override excludes the container
  | 'too-low'; // the policy value is below the tasks running (plus headroom): not written

export interface Decision {
  policyValue: number | null;
  action: Action;
  reason: string;
}

export type PolicyConfig = Config['policy'];

/** First override that matches wins; overrides are in the order the operator wrote them. */
export function findOverride(policy: PolicyConfig, cgroupPath: string, runtime: string): PolicyOverride | undefined {
  return policy.overrides.find(
    (o) => (o.runtime === undefined || o.runtime === runtime) && (o.pathPattern === undefined || new RegExp(o.pathPattern).test(cgroupPath)),
  );
}

/** max(cores, minCores) x pidsPerCore, with the override's numbers where it has them. */
export function policyValue(policy: PolicyConfig, cores: number, override?: PolicyOverride): number {
  if (override?.pidsMax !== undefined) return override.pidsMax;
  const minCores = override?.minCores ?? policy.minCores;
  const perCore = override?.pidsPerCore ?? policy.pidsPerCore;
  return Math.max(cores, minCores) * perCore;
}

/**
 * The room a container keeps above the tasks it runs when its limit is written: a limit at
 * or below pids.current makes every fork fail at once (a live JVM with 9,000 threads capped
 * at 6144), which is the outage the watchdog exists to prevent. 10% lets a busy container
 * go on forking while its limit still caps a runaway.
 */
export function headroomFor(tasks: number): number {
  return Math.max(1, Math.ceil(tasks * 0.1));
}

/**
 * A write of `value` to a container running `tasks` tasks: null when safe, else why not.
 * Pure: the caller reads pids.current only when a write would lower the limit.
 */
export function tooLowForTasks(value: number, tasks: number | null): string | null {
  if (tasks === null) return null;
  const room = headroomFor(tasks);
  if (value >= tasks + room) return null;
  return `policy ${value} is below the ${tasks} tasks it runs plus ${room} headroom: not written (every fork would fail); raise it with an override`;
}

/**
 * What to do with a container whose pids.max is `current`. `ours` is the value cgwatchdog
 * itself last wrote there: keep-lower protects limits someone else set, not our own earlier
 * value (written before the runtime's CPU quota landed, say). Pure: the caller does the I/O.
 */
export function decide(policy: PolicyConfig, cores: CoresUsed, current: Limit, cgroupPath: string, runtime: string, ours?: number): Decision {
  const override = findOverride(policy, cgroupPath, runtime);
  if (override?.exclude) return { policyValue: null, action: 'excluded', reason: 'excluded by an override' };
  const value = policyValue(policy, cores.cores, override);
  const how = override?.pidsMax !== undefined ? `override pidsMax ${value}` : `max(${cores.cores} cores from ${cores.source}, ${override?.minCores ?? policy.minCores}) x ${override?.pidsPerCore ?? policy.pidsPerCore}`;
  if (current === value) return { policyValue: value, action: 'unchanged', reason: `already ${value} (${how})` };
  if (current === 'max') return { policyValue: value, action: 'set', reason: `unlimited; policy ${how}` };
  if (current < value && current === ours) {
    return { policyValue: value, action: 'set', reason: `our earlier ${current} -> policy ${how}` };
  }
  if (current < value && policy.existing === 'keep-lower') {
    return { policyValue: value, action: 'kept-lower', reason: `existing ${current} is lower than policy ${value}; kept (existing: keep-lower)` };
  }
  return { policyValue: value, action: 'set', reason: `${current} -> policy ${how}${current < value ? ' (existing: replace)' : ''}` };
}
