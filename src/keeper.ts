import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config/schema';
import type { Container, ContainerRecord } from './discovery/container';
import type { Inventory } from './discovery/inventory';
import { LiveDiscovery } from './discovery/live';
import { underRoots, walkCgroups, type Found } from './discovery/walk';
import type { HostSetup } from './host-setup';
import { watchHealth, watchPath } from './kernel/inotify';
import { readComm } from './kernel/proc';
import type { Logger } from './log';
import type { DaemonMetrics } from './metrics/registry';
import { limitOrigin, listRecords, readRecord, recordFileName, recordNames, removeRecord, type HookRecord } from './hook/records';
import { applyPolicy, type ApplyResult } from './policy/apply';
import { applyAll } from './policy/reconcile';
import { WrittenStore } from './policy/written-store';
import type { StateWriteHealth } from './state/write-health';

/**
 * Runtimes write the CPU quota and their own pids.max just after the mkdir we react to (runc:
 * ~10 ms later, measured with podman). For this long after a container appears, a change of
 * its pids.max prompts a re-apply (our own write changes nothing on re-apply, so no loop);
 * a last check at the end catches a quota written without a pids.max write.
 */
const SETTLE_MS = 3000;
/**
 * The window is extended, SETTLE_MS at a time up to this, while the runtime's own init still
 * runs in the cgroup: runc writes the CPU limits after it put `runc:[2:INIT]` there and before
 * that execs the container's command, and on a slow host that took longer than SETTLE_MS
 * (UML 6.12 under CI load: podman run 18.8 s, cpu.max written after the window, so the
 * container kept the host-cores value until the minute's reconcile).
 */
const SETTLE_CAP_MS = 30_000;

/**
 * Each reconcile checks this fraction of the containers for drift (a changed pids.max, CPU
 * quota or cpuset: raw file content against what it was at the last apply), so each is checked
 * every RECONCILE_SPREAD reconciles (5 minutes at the default schedule) on a host with more than
 * RECONCILE_ALL_UPTO of them, at every reconcile below. Measured at 5,000
 * containers on 6.18: re-applying all of them every minute cost ~1 s of CPU a minute (1.7 % of
 * a core), and even comparing their four files, opened each time, 0.6 %.
 */
const RECONCILE_SPREAD = 5;
/** Up to this many containers, every reconcile checks every one (the cost is bounded: ~70 ms a minute). */
const RECONCILE_ALL_UPTO = 1000;
/**
 * An initial reconcile that finds more containers than this logs them at debug and sums them
 * up in one line: 10,000 containers made 20,000 info lines at start, past journald's default
 * RateLimitBurst (10,000 per 30 s), which would then drop the lines that matter.
 */
const QUIET_START_ABOVE = 200;
/** A hook's record whose container never appeared (a create that failed later) is dropped after this. */
const ORPHAN_RECORD_MS = 10 * 60_000;

/** The comm of a runtime's init before it execs the container's command: runc's `runc:[2:INIT]` (and its earlier stages), crun, youki. */
export function isRuntimeInit(comm: string | null): boolean {
  return comm !== null && (comm.startsWith('runc:[') || comm === 'runc' || comm === 'crun' || comm === 'youki');
}

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
  /** Failed saves of written-pids-max.json are counted and shown here. */
  stateWrites?: StateWriteHealth;
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
  private reconciles = 0;
  /** The initial reconcile is logging per container at debug (QUIET_START_ABOVE); its tally. */
  private quietStart?: { runtimes: Record<string, number>; actions: Record<string, number> };
  /** Each container's raw policy inputs at its last apply that wrote nothing (drift check), and its spread slot. */
  private readonly inputs = new WeakMap<ContainerRecord, { slot: number; text?: string }>();
  private nextSlot = 0;
  /** The OCI hook's record of each known container (null: no hook ran for it, as far as seen). */
  private readonly hookRecords = new Map<string, HookRecord | null>();
  /** Failed hook runs already counted and logged (record file name and time). */
  private readonly hookFailuresSeen = new Set<string>();
  /** pids.max watches kept for a container's life: systemd scopes, whose TasksMax systemd re-applies. */
  private readonly ownerWatches = new Map<string, { close(): void }>();

  constructor(private readonly o: KeeperOptions) {
    this.written = new WrittenStore(o.config().paths.stateDir, (m) => o.log.warn(m), o.stateWrites);
  }

  get watchCount(): number {
    return this.live?.watchCount ?? 0;
  }

  /** Watch for new containers, then find and apply to every one there is. */
  async start(): Promise<void> {
    this.running = true;
    this.live = this.newLiveDiscovery();
    try {
      await this.reconcile();
    } finally {
      // Whatever ended the initial reconcile, later containers are logged at info again.
      this.quietStart = undefined;
    }
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
    for (const w of this.ownerWatches.values()) w.close();
    this.ownerWatches.clear();
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
    // One listing instead of an open that fails per new container (433 of 4,400 ms at start with 5,000).
    const records = recordNames(config.paths.stateDir);
    if (this.reconciles === 0 && found.length > QUIET_START_ABOVE) this.quietStart = { runtimes: {}, actions: {} };
    for (const f of found) {
      seen.add(f.cgroupPath);
      if (inventory.has(f.cgroupPath)) continue;
      if (!this.hookRecords.has(f.cgroupPath) && !records?.has(recordFileName(f.cgroupPath))) this.hookRecords.set(f.cgroupPath, null);
      this.add({ ...f, seenAt: now, seenHr: process.hrtime.bigint() });
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
    this.sweepHookRecords(seen);
    // One snapshot: applyAll yields, and the inventory may change before it returns.
    const round = this.reconciles++;
    const snapshots = new Map<ContainerRecord, string | undefined>();
    const all = inventory.size <= RECONCILE_ALL_UPTO;
    const containers = [...inventory.all()].filter((c) => {
      let e = this.inputs.get(c);
      if (!e) this.inputs.set(c, (e = { slot: this.nextSlot++ % RECONCILE_SPREAD }));
      if (e.text !== undefined && !all && (round + e.slot) % RECONCILE_SPREAD !== 0) return false;
      const now = round === 0 ? undefined : this.policyInputs(c);
      if (e.text !== undefined && now === e.text) return false;
      snapshots.set(c, now);
      return true;
    });
    const results = await applyAll(this.applyContext(), containers);
    for (const [i, c] of containers.entries()) {
      const r = results[i];
      if (!r || inventory.get(c.cgroupPath) !== c) continue;
      this.record(c, r, 'reconcile');
      // Nothing written: what was read is what the policy saw, the drift check's reference;
      // not for 'too-low', which hangs on the task count, no file of the reference.
      if (!r.written && r.action !== 'error' && r.action !== 'too-low') this.inputs.get(c)!.text = snapshots.get(c);
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const q = this.quietStart;
    if (q) {
      this.quietStart = undefined;
      log.info({ containers: inventory.size, runtimes: q.runtimes, actions: q.actions }, `${inventory.size} containers found at start, each logged at debug; pids.max results by action`);
    }
    log.debug({ containers: inventory.size, seconds }, 'reconcile done');
    this.o.metrics()?.reconcileDurationSeconds.observe(seconds);
    this.o.hooks.reconciled?.(seconds, results);
  }

  /** The raw content of a container's policy inputs and pids.max, one string. */
  private policyInputs(c: Container): string {
    const { cgroups } = this.o.host;
    let out = '';
    for (const f of [cgroups.pidsMaxFile(c.cgroupPath), ...cgroups.policyInputFiles(c.cgroupPath)]) {
      try {
        out += `${fs.readFileSync(f, 'latin1')}\0`;
      } catch (err) {
        // A container missing from one v1 hierarchy (no cpuset cgroup): absent is its state.
        out += `!${(err as NodeJS.ErrnoException).code}\0`;
      }
    }
    return out;
  }

  /** The one way a container becomes known. */
  private add(c: Container, applied?: ApplyResult): ContainerRecord | undefined {
    if (!this.hookRecords.has(c.cgroupPath)) this.readHookRecord(c.cgroupPath);
    const rec = this.o.inventory.add(c, applied);
    if (rec) {
      if (applied) this.noteOrigin(rec, applied);
      const q = this.quietStart;
      if (q) q.runtimes[c.runtime] = (q.runtimes[c.runtime] ?? 0) + 1;
      this.o.log[q ? 'debug' : 'info']({ id: c.id, runtime: c.runtime, cgroup: c.cgroupPath, pod: c.podUid, limitOrigin: rec.limitOrigin, hookStage: this.hookRecords.get(c.cgroupPath)?.stage }, 'container found');
      this.o.hooks.containerAdded?.(rec);
      if (rec.cgroupPath.endsWith('.scope')) this.watchOwner(rec);
    }
    return rec;
  }

  /**
   * systemd owns pids.max of the scopes it makes: it writes the unit's TasksMax (often its
   * DefaultTasksMax, 15 % of threads-max) back on every `systemctl daemon-reload` (systemd 252,
   * measured in UML: 8192 -> 78643 within 6 s of the reload). The reconcile repairs that only a
   * minute later, so a scope's pids.max stays watched for its life; our own write's IN_MODIFY
   * re-reads and finds nothing to do.
   */
  private watchOwner(c: ContainerRecord): void {
    let again: NodeJS.Timeout | undefined;
    const w = watchPath(this.o.host.cgroups.pidsMaxFile(c.cgroupPath), (ev) => {
      if (ev !== 'change' || again) return;
      again = setTimeout(() => {
        again = undefined;
        if (this.running && this.o.inventory.get(c.cgroupPath) === c) void this.applyNow(c, 'pids.max rewritten (systemd TasksMax)');
      }, 1);
      again.unref();
    });
    if (typeof w === 'object') this.ownerWatches.set(c.cgroupPath, w);
  }

  /** The one way a container stops being known (its record stays DEPARTED_MS for late events). */
  private remove(rel: string): void {
    const c = this.o.inventory.remove(rel);
    if (!c) return;
    this.ownerWatches.get(rel)?.close();
    this.ownerWatches.delete(rel);
    this.written.delete(rel);
    if (this.hookRecords.get(rel)) this.removeHookRecord(rel);
    this.hookRecords.delete(rel);
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
    this.readHookRecord(c.cgroupPath);
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
    // Monotonic: the settle cap is a duration (a clock step must not cut or stretch it).
    const started = performance.now();
    const end = (): void => {
      for (const w of watches) if (typeof w === 'object') w.close();
      for (const f of files) watchHealth.settled(f);
      if (!current()) return;
      // A prestart hook writes its record after runc made the cgroup we reacted to: look again.
      if (!this.hookRecords.get(c.cgroupPath)) this.readHookRecord(c.cgroupPath);
      void this.applyNow(c, 'settle');
    };
    const wait = (): void => {
      const t = setTimeout(() => {
        this.settleTimers.delete(t);
        if (!current()) return end();
        void this.runtimeStillStarting(c).then((starting) => {
          if (starting && current() && performance.now() - started + SETTLE_MS <= SETTLE_CAP_MS) wait();
          else end();
        });
      }, SETTLE_MS);
      t.unref();
      this.settleTimers.add(t);
    };
    wait();
  }

  /** A task of the cgroup is still the runtime's own init (runc, crun): its limits may not all be written yet. */
  private async runtimeStillStarting(c: ContainerRecord): Promise<boolean> {
    try {
      const tasks = await this.o.host.cgroups.readTasks(c.cgroupPath);
      const procRoot = this.o.config().paths.procRoot;
      return (tasks ?? []).some((t) => isRuntimeInit(readComm(procRoot, t)));
    } catch {
      return false;
    }
  }

  private onVanished(rel: string): void {
    const prefix = `${rel}/`;
    for (const c of [...this.o.inventory.all()]) if (c.cgroupPath === rel || c.cgroupPath.startsWith(prefix)) this.remove(c.cgroupPath);
  }

  private applyContext() {
    const { host } = this.o;
    const hookValue = (p: string): number | undefined => {
      const r = this.hookRecords.get(p);
      return r?.wrote && typeof r.value === 'number' ? r.value : undefined;
    };
    return { cgroups: host.cgroups, config: this.o.config(), hostCores: host.hostCores, written: this.written, hookValue };
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
    const q = this.quietStart;
    if (q) q.actions[r.action] = (q.actions[r.action] ?? 0) + 1;
    const level = r.written && !q ? 'info' : 'debug';
    log[level]({ id: c.id, cgroup: c.cgroupPath, cores: r.cores, coresSource: r.coresSource, coresDetail: r.coresDetail, policy: r.policyValue, old: r.oldPidsMax, new: r.newPidsMax, action: r.action, why }, r.written ? 'pids.max set' : r.reason);
    this.o.hooks.applied?.(c, r);
    // A container seen a moment ago gets its record after this first result (onAppeared).
    const rec = this.o.inventory.get(c.cgroupPath);
    if (!rec) return;
    rec.applied = r;
    // What the usage monitor reads only every few minutes: we just read (or wrote) it.
    if (rec.usage && r.newPidsMax !== undefined) rec.usage.pidsMax = r.newPidsMax;
    // A write changed the inputs: the next reconcile applies again and takes the new reference.
    if (r.written) {
      const e = this.inputs.get(rec);
      if (e) e.text = undefined;
    }
    this.noteOrigin(rec, r);
    this.tooLow(rec, r, why);
  }

  /** Where the container's limit came from, settled once (a hook's late record still upgrades "daemon" to "creation"). */
  private noteOrigin(rec: ContainerRecord, r: ApplyResult): void {
    if (rec.limitOrigin === 'creation') return;
    const origin = limitOrigin(this.hookRecords.get(rec.cgroupPath) ?? undefined, r, this.written.has(rec.cgroupPath));
    if (!origin || (rec.limitOrigin !== undefined && origin !== 'creation')) return;
    const hook = this.hookRecords.get(rec.cgroupPath);
    if (rec.limitOrigin !== undefined) this.o.log.info({ id: rec.id, cgroup: rec.cgroupPath, was: rec.limitOrigin, limitOrigin: origin }, 'limit origin: the hook set it at creation');
    else this.o.log.debug({ id: rec.id, cgroup: rec.cgroupPath, limitOrigin: origin, hookStage: hook?.stage }, 'limit origin');
    rec.limitOrigin = origin;
  }

  private readHookRecord(rel: string): void {
    const r = readRecord(this.o.config().paths.stateDir, rel) ?? null;
    this.hookRecords.set(rel, r);
    if (r?.failed) this.countHookFailure(recordFileName(rel), r);
  }

  private removeHookRecord(rel: string): void {
    try {
      removeRecord(this.o.config().paths.stateDir, recordFileName(rel));
    } catch (err) {
      this.o.log.warn({ cgroup: rel, err: (err as Error).message }, 'cannot remove the hook record of a removed container');
    }
  }

  /** A hook that failed (fail open: the container started without it; fail closed: refused) is logged and counted once. */
  private countHookFailure(name: string, r: HookRecord): void {
    const key = `${name}@${r.at}`;
    if (this.hookFailuresSeen.has(key)) return;
    this.hookFailuresSeen.add(key);
    this.o.metrics()?.hookFailuresTotal.inc({ stage: r.stage });
    this.o.log.warn({ stage: r.stage, cgroup: r.cgroupPath, id: r.id, refused: r.refused === true, at: new Date(r.at).toISOString() }, `OCI hook failed: ${r.reason}`);
  }

  /**
   * At each reconcile: count the failures of hooks whose container never showed (refused, or
   * gone), and drop records nobody needs: a container's goes with it, an orphan's after
   * ORPHAN_RECORD_MS. The directory holds one small file per container at most.
   */
  private sweepHookRecords(seen: Set<string>): void {
    const stateDir = this.o.config().paths.stateDir;
    const now = Date.now();
    const live = new Set<string>();
    for (const { name, rec } of listRecords(stateDir)) {
      live.add(`${name}@${rec.at}`);
      if (rec.failed) this.countHookFailure(name, rec);
      const known = rec.cgroupPath !== null && (seen.has(rec.cgroupPath) || this.o.inventory.has(rec.cgroupPath) || this.appearing.has(rec.cgroupPath));
      if (known || now - rec.at < ORPHAN_RECORD_MS) continue;
      try {
        removeRecord(stateDir, name);
      } catch {
        /* next time */
      }
    }
    for (const k of this.hookFailuresSeen) if (!live.has(k)) this.hookFailuresSeen.delete(k);
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
