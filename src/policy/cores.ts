import type { CpuQuota } from '../cgroup/types';

export type CoresSource = 'quota' | 'cpuset' | 'host';

export interface CoresUsed {
  cores: number;
  source: CoresSource;
  /** What the number came from, for `apply` output and logs ("quota 150000/100000"). */
  detail: string;
}

/**
 * The container's cores: its CPU quota rounded up (1.5 CPUs count as 2), else its cpuset
 * counted, else the host's cores. A quota can only narrow what the cpuset allows, but
 * runtimes set the quota from --cpus, which is what operators size PIDs by.
 */
export function coresFor(quota: CpuQuota | null, cpusetCount: number | null, hostCores: number): CoresUsed {
  if (quota && quota.quotaUs !== 'max' && quota.quotaUs > 0 && quota.periodUs > 0) {
    return { cores: Math.ceil(quota.quotaUs / quota.periodUs), source: 'quota', detail: `quota ${quota.quotaUs}/${quota.periodUs}` };
  }
  if (cpusetCount !== null && cpusetCount > 0) {
    return { cores: cpusetCount, source: 'cpuset', detail: `cpuset of ${cpusetCount}` };
  }
  return { cores: hostCores, source: 'host', detail: `host has ${hostCores}` };
}
