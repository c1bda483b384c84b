import type { CpuQuota } from '../cgroup/types';

export type CoresSource = 'quota' | 'parent-quota' | 'cpuset' | 'host';

export interface CoresUsed {
  cores: number;
  source: CoresSource;
  /** What the number came from, for `apply` output and logs ("quota 150000/100000"). */
  detail: string;
}

/** An ancestor cgroup's CPU quota (a Kubernetes pod's, a `--cgroup-parent` slice's). */
export interface QuotaAt {
  path: string;
  quota: CpuQuota | null;
}

const coresOf = (q: CpuQuota | null): number | null =>
  q && q.quotaUs !== 'max' && q.quotaUs > 0 && q.periodUs > 0 ? Math.ceil(q.quotaUs / q.periodUs) : null;

/**
 * The container's cores: the tightest CPU quota on it or on an ancestor, rounded up (1.5 CPUs
 * count as 2; a Kubernetes pod-level limit caps a container that has none of its own), else
 * its cpuset counted when it is narrower than the host, else the host's cores. A quota can
 * only narrow what the cpuset allows, but runtimes set the quota from --cpus, which is what
 * operators size PIDs by.
 */
export function coresFor(quota: CpuQuota | null, cpusetCount: number | null, hostCores: number, ancestors: readonly QuotaAt[] = []): CoresUsed {
  let best: CoresUsed | null = null;
  const own = coresOf(quota);
  if (own !== null && quota && quota.quotaUs !== 'max') best = { cores: own, source: 'quota', detail: `quota ${quota.quotaUs}/${quota.periodUs}` };
  for (const a of ancestors) {
    const n = coresOf(a.quota);
    if (n === null || !a.quota || a.quota.quotaUs === 'max' || (best && best.cores <= n)) continue;
    best = { cores: n, source: 'parent-quota', detail: `quota ${a.quota.quotaUs}/${a.quota.periodUs} of ${a.path}` };
  }
  if (best) return best;
  if (cpusetCount !== null && cpusetCount > 0 && cpusetCount < hostCores) {
    return { cores: cpusetCount, source: 'cpuset', detail: `cpuset of ${cpusetCount}` };
  }
  return { cores: hostCores, source: 'host', detail: `host has ${hostCores}` };
}

/** The ancestors of a cgroup path, nearest first, without the root (it has no quota). Pure. */
export function ancestorsOf(rel: string): string[] {
  const out: string[] = [];
  for (let p = rel.slice(0, rel.lastIndexOf('/')); p.length > 0; p = p.slice(0, p.lastIndexOf('/'))) out.push(p);
  return out;
}
