import type { AlertKind, Severity } from '../config/schema';

export type AlertState = 'firing' | 'resolved';

/**
 * Whose limit was hit: a container's own, its pod's, one a container set on a cgroup inside
 * it (its own systemd's TasksMax, an LXC guest's), or the host's (kernel.pid_max).
 */
export type LimitScope = 'container' | 'pod' | 'sub-cgroup' | 'node';

/**
 * The alert as it leaves cgwatchdog: the JSON body of the generic webhook (documented in
 * README.md), and the source of the Slack text and the Alertmanager payload.
 */
export interface Alert {
  /** Stable across updates of the same condition: host/kind/cgroup. */
  fingerprint: string;
  /** Unique per delivery: consumers de-duplicate on it (at-least-once delivery). */
  idempotencyKey: string;
  /** 1 for the first message of a condition, then 2, 3, ... for updates and the resolution. */
  sequence: number;
  state: AlertState;
  kind: AlertKind;
  severity: Severity;
  limitScope: LimitScope;
  host: string;
  summary: string;
  container: {
    id?: string;
    name?: string;
    runtime?: string;
    image?: string;
    pod?: string;
    namespace?: string;
    podUid?: string;
    cgroupPath: string;
  };
  counters: {
    current?: number;
    limit?: number | 'max';
    /** Rejections or kills since the previous message of this alert. */
    eventsSinceLast: number;
    /** Since the alert started firing. */
    eventsTotal: number;
  };
  /** PID limit: top commands by task count. */
  topCommands?: { comm: string; tasks: number }[];
  /** OOM kill: the victim, from kmsg. */
  victim?: { pid: number; comm: string; anonRssKb?: number; fileRssKb?: number; totalVmKb?: number };
  memory?: { usageBytes?: number; limitBytes?: number | 'max' };
  startsAt: string;
  updatedAt: string;
  endsAt?: string;
  /** Which detection sources contributed. */
  sources: string[];
  /**
   * What identifies the alert in Alertmanager, fixed at its first message for its whole life
   * (a name learned later would make it a second alert there): known names only.
   */
  identity: { name?: string; pod?: string; namespace?: string };
}
