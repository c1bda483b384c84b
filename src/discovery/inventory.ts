import { EventEmitter } from 'node:events';
import type { ApplyResult } from '../policy/apply';
import type { Container, ContainerRecord } from './container';

/**
 * How long a removed container stays findable by `owner()` and in /metrics: events of its
 * last moments (an OOM kill whose cgroup the runtime removes at once) arrive after the
 * removal, through kmsg's hold and the victim wait, and must still name it; and Prometheus
 * must get to scrape its final counts (several scrape intervals).
 */
export const DEPARTED_MS = 5 * 60_000;

/**
 * A removed container with no hit is kept only this long: long enough for the late events of
 * its last moments (kmsg's hold, the OOM victim wait, the 3 s resolve), and it has no count for
 * Prometheus to scrape. Keeping every one for DEPARTED_MS held 30,000 records under a churn of
 * 100 containers a second. One that gets a hit meanwhile stays the full DEPARTED_MS.
 */
export const DEPARTED_QUIET_MS = 30_000;

/**
 * The records of the containers known right now, by cgroup path, and of those removed in the
 * last DEPARTED_MS. The one place a record is made (add) and dropped (DEPARTED_MS after
 * remove). Emits 'added', 'removed', and 'expired' when a removed one is dropped.
 */
export class Inventory extends EventEmitter {
  private readonly byPath = new Map<string, ContainerRecord>();
  private readonly departed = new Map<string, { c: ContainerRecord; timer: NodeJS.Timeout }>();
  /** Pod cgroup -> how many known containers lie in it. */
  private readonly pods = new Map<string, number>();

  get size(): number {
    return this.byPath.size;
  }

  get(cgroupPath: string): ContainerRecord | undefined {
    return this.byPath.get(cgroupPath);
  }

  has(cgroupPath: string): boolean {
    return this.byPath.has(cgroupPath);
  }

  all(): IterableIterator<ContainerRecord> {
    return this.byPath.values();
  }

  /**
   * The container a cgroup belongs to: its own, or the nearest container above it (a
   * sub-cgroup: systemd's init.scope in a container, an LXC guest's, podman --cgroups=split).
   * Containers removed a moment ago count too. A pod's cgroup belongs to none.
   */
  owner(cgroupPath: string): ContainerRecord | undefined {
    const find = (p: string): ContainerRecord | undefined => this.byPath.get(p) ?? this.departed.get(p)?.c;
    for (let p = cgroupPath; p.length > 0; p = p.slice(0, p.lastIndexOf('/'))) {
      const c = find(p);
      if (c) return c;
    }
    return undefined;
  }

  get departedCount(): number {
    return this.departed.size;
  }

  /** Containers removed in the last DEPARTED_MS. */
  *departedAll(): IterableIterator<ContainerRecord> {
    for (const d of this.departed.values()) yield d.c;
  }

  /** Whether the cgroup is the pod cgroup of a known container. */
  isPod(cgroupPath: string): boolean {
    return this.pods.has(cgroupPath);
  }

  /** Who a pod is, from one of its containers' records (pod-level alerts name the pod). */
  podOf(podPath: string): { podUid?: string; podName?: string; podNamespace?: string } | undefined {
    if (!this.pods.has(podPath)) return undefined;
    for (const r of this.all()) if (r.podPath === podPath) return { podUid: r.podUid, podName: r.podName, podNamespace: r.podNamespace };
    return undefined;
  }

  /**
   * Makes the container's record (with the policy result, when it was applied before the
   * container was registered). Returns undefined if it was already known.
   */
  add(c: Container, applied?: ApplyResult): ContainerRecord | undefined {
    if (this.byPath.has(c.cgroupPath)) return undefined;
    this.forgetDeparted(c.cgroupPath);
    const rec: ContainerRecord = {
      id: c.id,
      runtime: c.runtime,
      cgroupPath: c.cgroupPath,
      podUid: c.podUid,
      podPath: c.podPath,
      namespace: c.namespace,
      seenAt: c.seenAt,
      seenHr: c.seenHr,
      applied,
      policyTooLow: false,
      hits: { pidsLimitHits: 0, oomEvents: 0, oomKills: 0, memoryMaxEvents: 0 },
    };
    this.byPath.set(rec.cgroupPath, rec);
    if (rec.podPath) this.pods.set(rec.podPath, (this.pods.get(rec.podPath) ?? 0) + 1);
    this.emit('added', rec);
    return rec;
  }

  remove(cgroupPath: string): ContainerRecord | undefined {
    const c = this.byPath.get(cgroupPath);
    if (!c) return undefined;
    this.byPath.delete(cgroupPath);
    if (c.podPath) {
      const n = (this.pods.get(c.podPath) ?? 1) - 1;
      if (n > 0) this.pods.set(c.podPath, n);
      else this.pods.delete(c.podPath);
    }
    c.removedAt = performance.now();
    const expire = (): void => {
      const h = c.hits;
      const left = DEPARTED_MS - (performance.now() - c.removedAt!);
      if (left > 0 && h.pidsLimitHits + h.oomEvents + h.oomKills + h.memoryMaxEvents > 0) {
        const t = setTimeout(expire, left);
        t.unref();
        this.departed.set(cgroupPath, { c, timer: t });
        return;
      }
      this.departed.delete(cgroupPath);
      this.emit('expired', c);
    };
    const timer = setTimeout(expire, DEPARTED_QUIET_MS);
    timer.unref();
    this.departed.set(cgroupPath, { c, timer });
    this.emit('removed', c);
    return c;
  }

  private forgetDeparted(cgroupPath: string): void {
    const d = this.departed.get(cgroupPath);
    if (!d) return;
    clearTimeout(d.timer);
    this.departed.delete(cgroupPath);
    this.emit('expired', d.c);
  }
}
