import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config/schema';
import type { Container, ContainerRecord } from './discovery/container';
import type { Inventory } from './discovery/inventory';
import { LiveDiscovery } from './discovery/live';
import { underRoots, walkCgroups, type Found } from './discovery/walk';
import type { HostSetup } from './host-setup';
import { watchHealth, watchPath } from './kernel/inotify';
import type { Logger } from './log';
import type { DaemonMetrics } from './metrics/registry';
import { applyPolicy, type ApplyResult } from './policy/apply';
import { applyAll } from './policy/reconcile';
import { WrittenStore } from './policy/written-store';

/**
 * Runtimes write the CPU quota and their own pids.max just after the mkdir we react to (runc:
 * ~10 ms later, measured with podman). For this long after a container appears, a change of
 * its pids.max prompts a re-apply (our own write changes nothing on re-apply, so no loop);
 * a last check at the end catches a quota written without a pids.max write.
 */
const SETTLE_MS = 3000;

export interface KeeperHooks {
  /** Called after each policy application. */
  applied?(c: Container, r: ApplyResult): void;
  containerAdded?(c: ContainerRecord): void;
  containerRemoved?(c: ContainerRecord): void;
  /** Creation seen -> pids.max written, in seconds. */
  applyLatency?(seconds: number): void;
  reconciled?(seconds: number, results: ApplyResult[]): void;
}

export interface KeeperOptions {
  inventory: Inventory;
  host: HostSetup;
  config: () => Config;
  log: Logger;
  metrics: () => DaemonMetrics | undefined;
  /** The policy value was not written because the container runs more tasks (or no longer). */
  policyTooLow(c: ContainerRecord, tooLow: { tasks?: number; policy: number } | null): void;
  hooks: KeeperHooks;
}

/**
 * Finds the containers (a walk of the tree, and inotify on the directories for the moment
 * one appears), registers and removes their records in the inventory, and keeps each one's
 * pids.max at the policy value: at once when it appears, while its runtime settles it, and
 * at every reconcile (drift).
 */
export class ContainerKeeper {
  live?: LiveDiscovery;
  /** What we wrote to each container's pids.max (see decide(): our own value is not "existing"). */
  readonly written: WrittenStore;
  private running = false;
  private reconciling?: Promise<void>;
  private readonly settleTimers = new Set<NodeJS.Timeout>();
  /** Discovery roots that did not exist at the last reconcile (logged once each). */
  private readonly missingRoots = new Set<string>();
  /** Cgroups seen by inotify whose first apply runs (not yet records). */
  private readonly appearing = new Set<string>();
  private readonly applying = new Map<string, { run: Promise<ApplyResult>; again?: Promise<ApplyResult> }>();

  constructor(private readonly o: KeeperOptions) {
    this.written = new WrittenStore(o.config().paths.stateDir, (m) => o.log.warn(m));
  }

  get watchCount(): number {
    return this.live?.watchCount ?? 0;
  }

  /** Watch for new containers, then find and apply to every one there is. */
  async start(): Promise<void> {
    this.running = true;
    this.live = this.newLiveDiscovery();
    await this.reconcile();
  }

  /** A reload changed the roots or recognisers: watch again from them. */
  rediscover(): void {
    this.live?.close();
    this.live = this.newLiveDiscovery();
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const t of this.settleTimers) clearTimeout(t);
    this.settleTimers.clear();
    await this.reconciling;
    this.written.flush();
    this.live?.close();
  }

  private newLiveDiscovery(): LiveDiscovery {
    const { discovery } = this.o.config();
    const { host } = this.o;
    return new LiveDiscovery(host.cgroups.discoveryRoot, discovery.maxDepth, host.recognisers, {
      appeared: (found, seenHr) => this.onAppeared(found, seenHr),
      vanished: (rel) => this.onVanished(rel),
    }, this.o.log, discovery.roots);
  }

  /** Rescan everything and repair drift: new or removed containers missed, limits rewritten, watches lost. */
  reconcile(): Promise<void> {
    this.reconciling ??= this.doReconcile().finally(() => (this.reconciling = undefined));
    return this.reconciling;
  }

  private async doReconcile(): Promise<void> {
    if (!this.running || !this.live) return;
    const { inventory, log } = this.o;
    const config = this.o.config();
    const t0 = process.hrtime.bigint();
    const walkStart = Date.now();
    const { cgroups, recognisers } = this.o.host;
    const seen = new Set<string>();
    const found: Found[] = [];
    for (const root of config.discovery.roots) {
      try {
        const r = await walkCgroups(cgroups.discoveryRoot, [root], config.discovery.maxDepth, recognisers, (d) => this.live?.watch(d));
        found.push(...r.containers);
      } catch (err) {
        log.error({ err: (err as Error).message, root }, 'scanning the cgroup tree failed');
        return; // a partial scan must not be taken as "containers gone"
      }
    }
    for (const root of config.discovery.roots) {
      if (fs.existsSync(path.join(cgroups.discoveryRoot, root))) {
        this.missingRoots.delete(root);
        continue;
      }
      const ancestor = this.live.watchForRoot(root);
      if (!this.missingRoots.has(root)) log.warn({ root, watching: ancestor }, 'discovery root does not exist yet: watching its nearest existing ancestor, containers under it are found when it appears');
      this.missingRoots.add(root);
    }
    const now = Date.now();
    for (const f of found) {
      seen.add(f.cgroupPath);
      if (!inventory.has(f.cgroupPath)) this.add({ ...f, seenAt: now, seenHr: process.hrtime.bigint() });
    }
    // A container inotify found while the walk ran is not in it; and one the walk missed is
    // only gone if its directory is.
    for (const k of [...this.written.keys()]) if (!seen.has(k) && !inventory.has(k)) this.written.delete(k);
    for (const c of [...inventory.all()]) {
      if (seen.has(c.cgroupPath) || c.seenAt >= walkStart) continue;
      // Still there and still ours (a reload may have narrowed the roots): keep it.
      if (underRoots(config.discovery.roots, c.cgroupPath) && fs.existsSync(cgroups.dir('pids', c.cgroupPath))) continue;
      this.remove(c.cgroupPath);
    }
    // One snapshot: applyAll yields, and the inventory may change before it returns.
    const containers = [...inventory.all()];
    const results = await applyAll(this.applyContext(), containers);
    for (const [i, c] of containers.entries()) if (results[i] && inventory.get(c.cgroupPath) === c) this.record(c, results[i]!, 'reconcile');
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    log.debug({ containers: inventory.size, seconds }, 'reconcile done');
    this.o.metrics()?.reconcileDurationSeconds.observe(seconds);
    this.o.hooks.reconciled?.(seconds, results);
  }

  /** The one way a container becomes known. */
  private add(c: Container, applied?: ApplyResult): ContainerRecord | undefined {
    const rec = this.o.inventory.add(c, applied);
    if (rec) {
      this.o.log.info({ id: c.id, runtime: c.runtime, cgroup: c.cgroupPath, pod: c.podUid }, 'container found');
      this.o.hooks.containerAdded?.(rec);
    }
    return rec;
  }

  /** The one way a container stops being known (its record stays DEPARTED_MS for late events). */
  private remove(rel: string): void {
    const c = this.o.inventory.remove(rel);
    if (!c) return;
    this.written.delete(rel);
    this.o.log.info({ id: c.id, runtime: c.runtime, cgroup: c.cgroupPath }, 'container gone');
    this.o.hooks.containerRemoved?.(c);
  }

  private onAppeared(found: Found, seenHr: bigint): void {
    const { inventory } = this.o;
    if (!this.running || inventory.has(found.cgroupPath) || this.appearing.has(found.cgroupPath)) return;
    const c: Container = { ...found, seenAt: Date.now(), seenHr };
    // The limit first: registering the container (detection baseline, a name lookup that may
    // spawn `podman inspect`) costs milliseconds the new container would spend unlimited.
    this.appearing.add(c.cgroupPath);
    void this.applyNow(c, 'appeared').then((r) => {
      this.appearing.delete(c.cgroupPath);
      if (r.written) {
        const seconds = Number(process.hrtime.bigint() - seenHr) / 1e9;
        this.o.log.debug({ id: c.id, cgroup: c.cgroupPath, latencyMs: Math.round(seconds * 1e6) / 1e3 }, 'creation to pids.max written');
        this.o.metrics()?.limitApplyLatencySeconds.observe(seconds);
        this.o.hooks.applyLatency?.(seconds);
      }
      if (r.action === 'gone' || !this.running) return;
      const rec = this.add(c, r.action === 'error' ? undefined : r);
      if (!rec) return;
      if (r.action === 'too-low') this.tooLow(rec, r, 'appeared');
      this.settle(rec);
    });
  }

  /**
   * While a new container settles, a runtime's write of pids.max, the CPU quota or the cpuset
   * (a write through the VFS is an inotify IN_MODIFY on any cgroup file) re-evaluates the
   * policy at once: runc writes podman's 2048 ~10 ms after the mkdir, Docker its CPU quota
   * after the pids cgroup appears.
   */
  private settle(c: ContainerRecord): void {
    const { cgroups } = this.o.host;
    const current = () => this.running && this.o.inventory.get(c.cgroupPath) === c;
    let again: NodeJS.Timeout | undefined;
    const pidsMaxFile = cgroups.pidsMaxFile(c.cgroupPath);
    const files = [pidsMaxFile, ...cgroups.policyInputFiles(c.cgroupPath)];
    const watches = files.map((file) =>
      watchPath(file, (ev) => {
        if (ev !== 'change' || again || !current()) return;
        // Coalesce a burst of writes into one re-apply.
        again = setTimeout(() => {
          again = undefined;
          if (current()) void this.applyNow(c, file === pidsMaxFile ? 'runtime wrote pids.max' : 'runtime wrote the CPU limits');
        }, 1);
      }),
    );
    // A runtime write between our first write and this watch would otherwise wait for the timer.
    void this.applyNow(c, 'settle');
    const t = setTimeout(() => {
      this.settleTimers.delete(t);
      for (const w of watches) if (typeof w === 'object') w.close();
      for (const f of files) watchHealth.settled(f);
      if (current()) void this.applyNow(c, 'settle');
    }, SETTLE_MS);
    t.unref();
    this.settleTimers.add(t);
  }

  private onVanished(rel: string): void {
    const prefix = `${rel}/`;
    for (const c of [...this.o.inventory.all()]) if (c.cgroupPath === rel || c.cgroupPath.startsWith(prefix)) this.remove(c.cgroupPath);
  }

  private applyContext() {
    const { host } = this.o;
    return { cgroups: host.cgroups, config: this.o.config(), hostCores: host.hostCores, written: this.written };
  }

  /** One apply in flight per container, at most one more queued: a burst of prompts is one re-read. */
  private applyNow(c: Container, why: string): Promise<ApplyResult> {
    const slot = this.applying.get(c.cgroupPath);
    if (slot) return (slot.again ??= slot.run.then(() => this.applyNow(c, why)));
    const run = applyPolicy(this.applyContext(), c).then((r) => {
      this.applying.delete(c.cgroupPath);
      this.record(c, r, why);
      return r;
    });
    this.applying.set(c.cgroupPath, { run });
    return run;
  }

  /** A policy result: logged, counted, and kept in the container's record (when it has one yet). */
  private record(c: Container, r: ApplyResult, why: string): void {
    const { log } = this.o;
    if (r.written || r.action === 'gone' || r.action === 'error') this.o.metrics()?.pidsMaxWritesTotal.inc({ result: r.written ? 'ok' : r.action });
    if (r.action === 'gone') {
      log.debug({ id: c.id, cgroup: c.cgroupPath, why }, r.reason);
      this.remove(c.cgroupPath);
      return;
    }
    if (r.action === 'error') {
      log.error({ id: c.id, cgroup: c.cgroupPath, why }, `applying the PID policy failed: ${r.reason}`);
      return;
    }
    const level = r.written ? 'info' : 'debug';
    log[level]({ id: c.id, cgroup: c.cgroupPath, cores: r.cores, coresSource: r.coresSource, coresDetail: r.coresDetail, policy: r.policyValue, old: r.oldPidsMax, new: r.newPidsMax, action: r.action, why }, r.written ? 'pids.max set' : r.reason);
    this.o.hooks.applied?.(c, r);
    // A container seen a moment ago gets its record after this first result (onAppeared).
    const rec = this.o.inventory.get(c.cgroupPath);
    if (!rec) return;
    rec.applied = r;
    this.tooLow(rec, r, why);
  }

  private tooLow(rec: ContainerRecord, r: ApplyResult, why: string): void {
    if (r.action === 'too-low' && r.policyValue != null) {
      if (!rec.policyTooLow) this.o.log.warn({ id: rec.id, cgroup: rec.cgroupPath, tasks: r.tasks, policy: r.policyValue, why }, r.reason);
      rec.policyTooLow = true;
      this.o.policyTooLow(rec, { tasks: r.tasks, policy: r.policyValue });
    } else if (rec.policyTooLow) {
      rec.policyTooLow = false;
      this.o.policyTooLow(rec, null);
    }
  }
}
