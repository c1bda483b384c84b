import type { AlertKind } from '../config/schema';

export type EventSource = 'inotify' | 'kmsg' | 'sweep';

/** Detail kmsg gives about an OOM victim. */
export interface OomVictim {
  pid: number;
  comm: string;
  uid?: number;
  anonRssKb?: number;
  fileRssKb?: number;
  shmemRssKb?: number;
  totalVmKb?: number;
  /** The cgroup whose limit triggered the OOM (kmsg oom_memcg). */
  oomMemcg?: string;
  /** The victim's own cgroup (kmsg task_memcg). */
  taskMemcg?: string;
  /** The node ran out of memory (constraint=CONSTRAINT_NONE, "global_oom"): no cgroup's limit was hit. */
  global?: boolean;
}

/** One detected limit hit, counted once whatever the sources that saw it. */
export interface LimitEvent {
  kind: AlertKind;
  /** The cgroup whose limit was hit (a container's, or a pod's for pod-level limits). */
  cgroupPath: string;
  /** Container id, where the cgroup is a container's. */
  containerId?: string;
  /** How many times the counter went up (counters are the truth for how many). */
  count: number;
  /** The counter's value after the increase. */
  counter?: number;
  source: EventSource;
  /** When we emitted it (ms since epoch). */
  at: number;
  /** Kernel to handler, in ms: from the kmsg timestamp, or from the inotify wake-up. */
  latencyMs?: number;
  victim?: OomVictim;
}
