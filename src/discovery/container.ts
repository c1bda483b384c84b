import type { RuntimeName } from '../runtimes/types';

/** A container as the inventory knows it. One definition, used by policy, detection, alerts and metrics. */
export interface Container {
  /** The runtime's id. */
  id: string;
  runtime: RuntimeName;
  /** Cgroup path relative to the hierarchy root, the same in every v1 controller on the runtimes we know. */
  cgroupPath: string;
  podUid?: string;
  podPath?: string;
  /** Filled in asynchronously by name lookups; never awaited on the detection path. */
  name?: string;
  image?: string;
  podName?: string;
  podNamespace?: string;
  /** The last usage and limits read (kept after removal: an alert about its last moments says them). */
  lastUsage?: { pidsCurrent?: number; pidsMax?: number | 'max'; memoryUsage?: number; memoryLimit?: number | 'max' };
  /** Its policy value was not written: it runs more tasks than the value allows (alert raised). */
  policyTooLow?: boolean;
  /** When discovery first saw it (ms since epoch) and the monotonic time (ns) for latency. */
  seenAt: number;
  seenHr: bigint;
}
