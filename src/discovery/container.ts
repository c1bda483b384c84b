import type { Usage } from '../detect/usage-monitor';
import type { LimitOrigin } from '../hook/records';
import type { ApplyResult } from '../policy/apply';
import type { RuntimeName } from '../runtimes/types';

/** A container as discovery finds it: what the cgroup path says, and when it was seen. */
export interface Container {
  /** The runtime's id. */
  id: string;
  runtime: RuntimeName;
  /** Cgroup path relative to the hierarchy root, the same in every v1 controller on the runtimes we know. */
  cgroupPath: string;
  podUid?: string;
  podPath?: string;
  /** containerd alone: its namespace (the cgroup is /<namespace>/<id>). */
  namespace?: string;
  /** When discovery first saw it (ms since epoch) and the monotonic time (ns) for latency. */
  seenAt: number;
  seenHr: bigint;
}

/** Limit hits counted for a container (its sub-cgroups' included) since cgwatchdog first saw it. */
export interface Hits {
  pidsLimitHits: number;
  oomEvents: number;
  oomKills: number;
  /** memory.events max (v2) / failcnt (v1): reclaims at the memory limit; a metric, not an alert by default. */
  memoryMaxEvents: number;
}

/**
 * Everything the daemon keeps about one container, in one object: made only by
 * Inventory.add, dropped only by the Inventory (DEPARTED_MS after its removal), so there is
 * no per-container map elsewhere to clean up. Detection state stays per cgroup (the engine
 * also watches pod cgroups and sub-cgroups, which are no container's record).
 */
export interface ContainerRecord extends Container {
  /** Learned by the name lookup, never awaited on the detection path; kept after removal. */
  name?: string;
  image?: string;
  podName?: string;
  podNamespace?: string;
  /** The name lookup while it runs (a first alert waits for it briefly). */
  naming?: Promise<unknown>;
  /** The last policy application (what pids.max is, the policy value, the cores counted). */
  applied?: ApplyResult;
  /**
   * Where its limit came from: an OCI hook or the Docker wrapper before its first process
   * ("creation"), the daemon after it started ("daemon"), or the runtime's own kept ("runtime").
   */
  limitOrigin?: LimitOrigin;
  /** Its policy value was not written: it runs more tasks than the value allows (alert raised). */
  policyTooLow: boolean;
  /** The last usage and limits read (kept after removal: an alert about its last moments says them). */
  usage?: Usage;
  hits: Hits;
  /** The last limit event counted in `hits` (kind, ms since epoch): what `cgwatchdog status` shows. */
  lastEvent?: { kind: string; at: number };
  /** Set when the container is gone (monotonic ms, performance.now(): the grace is a duration, an NTP step must not end or stretch it); the record stays DEPARTED_MS more. */
  removedAt?: number;
}
