import fs from 'node:fs';
import path from 'node:path';
import cron, { type ScheduledTask } from 'node-cron';
import os from 'node:os';
import si from 'systeminformation';
import { readDistro } from './kernel/os-release';
import { checkSecrets, loadConfig } from './config/load';
import type { Config } from './config/schema';
import type { Container } from './discovery/container';
import { Inventory } from './discovery/inventory';
import { LiveDiscovery } from './discovery/live';
import { underRoots, walkCgroups, type Found } from './discovery/walk';
import { setupHost, type HostSetup } from './host-setup';
import { hostPidsReport } from './kernel/host-report';
import { raisePidMax } from './kernel/sysctl';
import type { Logger } from './log';
import { applyPolicy, type ApplyResult } from './policy/apply';
import { buildRecognisers } from './runtimes/index';
import { applyAll } from './policy/reconcile';
import { WrittenStore } from './policy/written-store';
import { watchHealth, watchPath } from './kernel/inotify';
import { AlertPipeline } from './alerts/pipeline';
import { DetectionEngine } from './detect/engine';
import type { LimitEvent } from './detect/event';
import { UsageMonitor } from './detect/usage-monitor';
import { DaemonMetricsState, serveMetrics } from './metrics/daemon-metrics';
import type { MetricsServer } from './metrics/server';

/**
 * Runtimes write the CPU quota and their own pids.max just after the mkdir we react to (runc:
 * ~10 ms later, measured with podman). For this long after a container appears, a change of
 * its pids.max prompts a re-apply (our own write changes nothing on re-apply, so no loop);
 * a last check at the end catches a quota written without a pids.max write.
 */
const SETTLE_MS = 3000;

/**
 * What a reload cannot change in place: where the cgroup and proc filesystems and the state
 * live (everything is built on them). The daemon refuses such a reload and says to restart.
 */
const RESTART_ONLY: [string, (c: Config) => unknown][] = [
  ['paths', (c) => c.paths],
  ['alerts.outbox', (c) => c.alerts.outbox],
  ['names', (c) => c.names],
];

export interface DaemonHooks {
  /** Called after each policy application (metrics, detection state). */
  applied?(c: Container, r: ApplyResult): void;
  containerAdded?(c: Container): void;
  containerRemoved?(c: Container): void;
  /** Creation seen -> pids.max written, in seconds. */
  applyLatency?(seconds: number): void;
  reconciled?(seconds: number, results: ApplyResult[]): void;
  /** Each detected limit hit, once. */
  event?(e: LimitEvent): void;
}

/**
 * Wires the parts together. Owns the inventory; everything else (detection, alerts,
 * metrics) listens to it.
 */
export class Daemon {
  readonly inventory = new Inventory();
  host!: HostSetup;
  live?: LiveDiscovery;
  engine?: DetectionEngine;
  usage?: UsageMonitor;
  alerts?: AlertPipeline;
  readonly metrics = new DaemonMetricsState(this);
  metricsServer?: MetricsServer;
  private kmsgSeen = { parsed: 0, unparsed: 0, wrapped: 0 };
  private kmsgRestartsSeen = 0;
  /** Last applied result per cgroup path (pids.max, policy value, cores) for metrics and alerts. */
  readonly applied = new Map<string, ApplyResult>();
  /** What we wrote to each container's pids.max (see decide(): our own value is not "existing"). */
  private written!: WrittenStore;
  private task?: ScheduledTask;
  private settleTimers = new Set<NodeJS.Timeout>();
  private running = false;
  private reconciling?: Promise<void>;
  /** Discovery roots that did not exist at the last reconcile (logged once each). */
  private readonly missingRoots = new Set<string>();
  private lifecycle: Promise<unknown> = Promise.resolve();

  constructor(
    public config: Config,
    private readonly configFile: string | null,
    readonly log: Logger,
    private readonly hooks: DaemonHooks = {},
  ) {}

  start(): Promise<void> {
    return this.serialized(() => this.doStart());
  }

  private async doStart(): Promise<void> {
    const config = this.config;
    this.host = await setupHost(config);
    const { cgroups } = this.host;
    if (this.host.problems.length > 0) {
      if (config.mode === 'enforce') throw new Error(`${this.host.problems.join('; ')}; run as root with the cgroup filesystem writable, or set mode: observe`);
      for (const p of this.host.problems) this.log.warn(p);
    }
    this.running = true;
    this.written = new WrittenStore(config.paths.stateDir, (m) => this.log.warn(m));
    this.log.info(await this.facts(), 'starting');

    await this.raisePidMax();
    this.startDetection();
    await this.alerts!.start();
    this.watchOutbox();
    await this.serveMetrics();
    this.live = this.newLiveDiscovery();

    const t0 = process.hrtime.bigint();
    await this.reconcile();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    // Alerts restored from an earlier run whose container went while we were down end now.
    this.alerts!.resolveRestored((p) => this.inventory.owner(p) !== undefined || this.inventory.isPod(p));
    // In observe mode the limits stay as they are: report what is, not what would be.
    const report = await hostPidsReport(config.paths.procRoot, [...this.applied.values()].map((r) => (r.written ? r.newPidsMax : r.oldPidsMax)));
    this.log.info({ containers: this.inventory.size, watches: this.live.watchCount, startMs: Math.round(ms), ...report }, 'initial reconcile done');
    if (report.overcommit !== null && report.overcommit > 1) {
      this.log.warn({ sumContainersPidsMax: report.sumContainersPidsMax, pidMax: report.pidMax }, 'containers together may use more PIDs than kernel.pid_max allows');
    }

    await this.schedule();
    this.engine!.start();
    this.usage!.start();
    // The kmsg follower replays the ring buffer up to "now" first (~1 s in user-mode Linux):
    // "detection running" means a hit from here on is seen.
    if (config.detection.kmsg && !(await this.engine!.kmsgReady(5000))) this.log.warn({ path: config.paths.kmsg }, 'the kmsg reader has not caught up with the kernel log after 5 s; the sweep covers meanwhile');
    this.log.info({ inotify: config.detection.inotify && cgroups.version === 'v2', kmsg: config.detection.kmsg, sweepIntervalMs: config.detection.sweepIntervalMs, sinks: config.alerts.sinks.length }, 'detection running');
  }

  /** Disk trouble on the state dir: logged when it starts and when it ends, counted. */
  private watchOutbox(): void {
    const ob = this.alerts!.outbox;
    let failing = ob.lastWriteError !== undefined;
    ob.on('write-failed', (err: NodeJS.ErrnoException) => {
      this.metrics.daemon?.outboxWriteFailuresTotal.inc();
      if (failing) return;
      failing = true;
      this.log.error({ code: err.code, err: err.message, dir: this.config.alerts.outbox.dir ?? path.join(this.config.paths.stateDir, 'outbox') }, 'the alert outbox cannot write to the state directory: alerts are delivered from memory (they would not survive a restart)');
    });
    ob.on('enqueued', () => {
      if (!failing || ob.lastWriteError !== undefined) return;
      failing = false;
      this.log.info('the alert outbox writes to disk again');
    });
  }

  private async raisePidMax(): Promise<void> {
    const { kernel, mode, paths } = this.config;
    if (!kernel.manage || mode !== 'enforce') return;
    try {
      const r = await raisePidMax({ procRoot: paths.procRoot, target: kernel.pidMax, persist: kernel.persist, dropInPath: kernel.dropInPath });
      this.log.info({ before: r.before, after: r.after, target: kernel.pidMax, persisted: r.persisted }, r.changed ? 'raised kernel.pid_max' : 'kernel.pid_max already at or above target');
      if (r.note) this.log.warn(r.note);
    } catch (err) {
      // The host can still be protected container by container: log and go on.
      this.log.error({ err: (err as Error).message }, 'cannot raise kernel.pid_max');
    }
  }

  private async serveMetrics(): Promise<void> {
    const { metrics } = this.config;
    if (!metrics.enabled) return;
    this.metricsServer = await serveMetrics(this, this.metrics, metrics.listen, this.log);
    this.log.info({ listen: metrics.listen, port: this.metricsServer.port }, 'metrics listening');
  }

  private newLiveDiscovery(): LiveDiscovery {
    const { discovery } = this.config;
    return new LiveDiscovery(this.host.cgroups.discoveryRoot, discovery.maxDepth, this.host.recognisers, {
      appeared: (found, seenHr) => this.onAppeared(found, seenHr),
      vanished: (rel) => this.onVanished(rel),
    }, this.log, discovery.roots);
  }

  private async schedule(): Promise<void> {
    await this.task?.stop();
    this.task = cron.schedule(this.config.discovery.reconcileSchedule, () => void this.reconcile(), { noOverlap: true });
  }

  /** Detection and alerts follow the inventory: containers are watched from the moment they are known. */
  private startDetection(): void {
    const { config, log } = this;
    const { cgroups } = this.host;
    const engine = new DetectionEngine({
      cgroups,
      log,
      // v1 kernels do not notify pids.events / memory.oom_control (see README): no watches there.
      inotify: config.detection.inotify && cgroups.version === 'v2',
      kmsg: config.detection.kmsg,
      kmsgPath: config.paths.kmsg,
      sweepIntervalMs: config.detection.sweepIntervalMs,
      memoryUnlimited: (path) => this.usage?.usage.get(path)?.memoryLimit === 'max',
      ownerOf: (path) => this.inventory.owner(path),
    });
    cgroups.attachReader(engine.reader);
    const usage = new UsageMonitor({
      cgroups,
      reader: engine.reader,
      procRoot: config.paths.procRoot,
      intervalMs: config.detection.warnings.intervalMs,
      thresholds: config.detection.warnings,
      containers: () => this.inventory.all(),
      log,
    });
    const m = () => this.metrics.daemon;
    const alerts = new AlertPipeline({
      config,
      log,
      inventory: this.inventory,
      usage,
      cgroups,
      onOutcome: (sink, outcome) => {
        m()?.alertsTotal.inc({ sink, outcome });
        if (outcome === 'dropped') m()?.outboxDroppedTotal.inc();
      },
    });
    engine.on('event', (e: LimitEvent) => {
      log.debug({ event: e }, 'limit event');
      this.metrics.onEvent(e);
      this.hooks.event?.(e);
      alerts.event(e);
    });
    engine.on('sweep', (seconds: number) => {
      const dm = m();
      if (!dm) return;
      dm.sweepDurationSeconds.observe(seconds);
      const w = engine.watchCount;
      dm.watchesActive.set({ type: 'inotify-files' }, w.inotify);
      dm.watchesActive.set({ type: 'cgroup-dirs' }, this.live?.watchCount ?? 0);
      dm.watchesActive.set({ type: 'open-counter-files' }, w.openFiles);
      dm.outboxDepth.set(alerts.outbox?.depth() ?? 0);
      for (const [source, up] of Object.entries(engine.sourcesUp())) dm.sourceUp.set({ source }, up ? 1 : 0);
      if (engine.stats.kmsgRestarts > this.kmsgRestartsSeen) dm.kmsgRestartsTotal.inc(engine.stats.kmsgRestarts - this.kmsgRestartsSeen);
      this.kmsgRestartsSeen = engine.stats.kmsgRestarts;
      const k = engine.stats.kmsgRecords;
      for (const result of ['parsed', 'unparsed', 'wrapped'] as const) {
        if (k[result] > this.kmsgSeen[result]) dm.kmsgRecordsTotal.inc({ result }, k[result] - this.kmsgSeen[result]);
      }
      this.kmsgSeen = { ...k };
    });
    usage.on('transition', (t, c) => alerts.warning(t, c));
    this.inventory.on('added', (c: Container) => {
      engine.add(c);
      alerts.containerAdded(c);
    });
    this.inventory.on('expired', (c: Container) => this.metrics.forget(c.cgroupPath));
    this.inventory.on('removed', (c: Container) => {
      engine.remove(c);
      usage.forget(c);
      alerts.containerRemoved(c);
    });
    this.engine = engine;
    this.usage = usage;
    this.alerts = alerts;
    watchHealth.removeAllListeners();
    watchHealth.on('failure', (f: { path: string; code: string; first: boolean }) => {
      m()?.watchFailuresTotal.inc({ code: f.code });
      // Once per code until every watch is back: at the watch limit each new cgroup fails.
      if (f.first) log.warn({ code: f.code, path: f.path, hint: f.code === 'ENOSPC' ? 'fs.inotify.max_user_watches is reached' : undefined }, 'cannot watch a cgroup path: rescanning it instead (logged once per error until watching recovers)');
    });
    watchHealth.on('recovered', () => log.info('every cgroup path is watched again'));
  }

  /** Host facts for the start-up line. Nothing here runs a program: files and syscalls only. */
  private async facts(): Promise<Record<string, unknown>> {
    // si.mem() reads /proc/meminfo (no shell); bounded anyway, it is only a log line.
    const mem = await Promise.race([si.mem().catch(() => null), new Promise<null>((r) => setTimeout(() => r(null), 1000).unref())]);
    return {
      mode: this.config.mode,
      configFile: this.configFile,
      cgroup: this.host.cgroups.version,
      layout: this.host.cgroups.layout.mode,
      discoveryRoot: this.host.cgroups.discoveryRoot,
      hostCores: this.host.hostCores,
      kernel: os.release(),
      distro: readDistro(),
      memTotalBytes: mem?.total,
    };
  }

  /** Rescan everything and repair drift: new or removed containers missed, limits rewritten, watches lost. */
  reconcile(): Promise<void> {
    this.reconciling ??= this.doReconcile().finally(() => (this.reconciling = undefined));
    return this.reconciling;
  }

  private async doReconcile(): Promise<void> {
    if (!this.running || !this.live) return;
    const t0 = process.hrtime.bigint();
    const walkStart = Date.now();
    const { cgroups, recognisers } = this.host;
    const seen = new Set<string>();
    const dirs: string[] = [];
    const found: Found[] = [];
    for (const root of this.config.discovery.roots) {
      try {
        const r = await walkCgroups(cgroups.discoveryRoot, [root], this.config.discovery.maxDepth, recognisers);
        found.push(...r.containers);
        dirs.push(...r.dirs);
      } catch (err) {
        this.log.error({ err: (err as Error).message, root }, 'scanning the cgroup tree failed');
        return; // a partial scan must not be taken as "containers gone"
      }
    }
    for (const d of dirs) this.live.watch(d);
    for (const root of this.config.discovery.roots) {
      if (fs.existsSync(path.join(cgroups.discoveryRoot, root))) {
        this.missingRoots.delete(root);
        continue;
      }
      const ancestor = this.live.watchForRoot(root);
      if (!this.missingRoots.has(root)) this.log.warn({ root, watching: ancestor }, 'discovery root does not exist yet: watching its nearest existing ancestor, containers under it are found when it appears');
      this.missingRoots.add(root);
    }
    const now = Date.now();
    for (const f of found) {
      seen.add(f.cgroupPath);
      if (!this.inventory.has(f.cgroupPath)) this.addContainer({ ...f, seenAt: now, seenHr: process.hrtime.bigint() });
    }
    // A container inotify found while the walk ran is not in it; and one the walk missed is
    // only gone if its directory is.
    for (const k of [...this.written.keys()]) if (!seen.has(k) && !this.inventory.has(k)) this.written.delete(k);
    const roots = this.config.discovery.roots;
    for (const c of [...this.inventory.all()]) {
      if (seen.has(c.cgroupPath) || c.seenAt >= walkStart) continue;
      // Still there and still ours (a reload may have narrowed the roots): keep it.
      if (underRoots(roots, c.cgroupPath) && fs.existsSync(cgroups.dir('pids', c.cgroupPath))) continue;
      this.removeContainer(c.cgroupPath);
    }
    // One snapshot: applyAll yields, and the inventory may change before it returns.
    const containers = [...this.inventory.all()];
    const results = await applyAll(this.applyContext(), containers);
    for (const [i, c] of containers.entries()) if (results[i] && this.inventory.get(c.cgroupPath) === c) this.record(c, results[i]!, 'reconcile');
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    this.log.debug({ containers: this.inventory.size, seconds }, 'reconcile done');
    this.metrics.daemon?.reconcileDurationSeconds.observe(seconds);
    this.hooks.reconciled?.(seconds, results);
  }

  private addContainer(c: Container): void {
    if (this.inventory.add(c)) {
      this.log.info({ id: c.id, runtime: c.runtime, cgroup: c.cgroupPath, pod: c.podUid }, 'container found');
      this.hooks.containerAdded?.(c);
    }
  }

  private removeContainer(rel: string): void {
    const c = this.inventory.remove(rel);
    if (!c) return;
    this.applied.delete(rel);
    this.written.delete(rel);
    this.log.info({ id: c.id, runtime: c.runtime, cgroup: c.cgroupPath }, 'container gone');
    this.hooks.containerRemoved?.(c);
  }

  private readonly appearing = new Set<string>();

  private onAppeared(found: Found, seenHr: bigint): void {
    if (!this.running || this.inventory.has(found.cgroupPath) || this.appearing.has(found.cgroupPath)) return;
    const c: Container = { ...found, seenAt: Date.now(), seenHr };
    // The limit first: registering the container (detection baseline, a name lookup that may
    // spawn `podman inspect`) costs milliseconds the new container would spend unlimited.
    this.appearing.add(c.cgroupPath);
    void this.applyNow(c, 'appeared').then((r) => {
      this.appearing.delete(c.cgroupPath);
      if (r.written) {
        const seconds = Number(process.hrtime.bigint() - seenHr) / 1e9;
        this.log.debug({ id: c.id, cgroup: c.cgroupPath, latencyMs: Math.round(seconds * 1e6) / 1e3 }, 'creation to pids.max written');
        this.metrics.daemon?.limitApplyLatencySeconds.observe(seconds);
        this.hooks.applyLatency?.(seconds);
      }
      if (r.action !== 'gone' && this.running) {
        this.addContainer(c);
        this.settle(c);
      }
    });
  }

  /**
   * While a new container settles, a runtime's write of pids.max, the CPU quota or the cpuset
   * (a write through the VFS is an inotify IN_MODIFY on any cgroup file) re-evaluates the
   * policy at once: runc writes podman's 2048 ~10 ms after the mkdir, Docker its CPU quota
   * after the pids cgroup appears.
   */
  private settle(c: Container): void {
    const current = () => this.running && this.inventory.get(c.cgroupPath) === c;
    let again: NodeJS.Timeout | undefined;
    const pidsMaxFile = this.host.cgroups.pidsMaxFile(c.cgroupPath);
    const files = [pidsMaxFile, ...this.host.cgroups.policyInputFiles(c.cgroupPath)];
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
    for (const c of [...this.inventory.all()]) if (c.cgroupPath === rel || c.cgroupPath.startsWith(prefix)) this.removeContainer(c.cgroupPath);
  }

  private applyContext() {
    return { cgroups: this.host.cgroups, config: this.config, hostCores: this.host.hostCores, written: this.written };
  }

  private readonly applying = new Map<string, { run: Promise<ApplyResult>; again?: Promise<ApplyResult> }>();

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

  private record(c: Container, r: ApplyResult, why: string): void {
    if (r.written || r.action === 'gone' || r.action === 'error') this.metrics.daemon?.pidsMaxWritesTotal.inc({ result: r.written ? 'ok' : r.action });
    if (r.action === 'gone') {
      this.log.debug({ id: c.id, cgroup: c.cgroupPath, why }, r.reason);
      this.removeContainer(c.cgroupPath);
      return;
    }
    if (r.action === 'error') {
      this.log.error({ id: c.id, cgroup: c.cgroupPath, why }, `applying the PID policy failed: ${r.reason}`);
      return;
    }
    this.applied.set(c.cgroupPath, r);
    if (r.action === 'too-low' && r.policyValue != null) {
      if (!c.policyTooLow) this.log.warn({ id: c.id, cgroup: c.cgroupPath, tasks: r.tasks, policy: r.policyValue, why }, r.reason);
      c.policyTooLow = true;
      this.alerts?.policyTooLow(c, { tasks: r.tasks, policy: r.policyValue });
    } else if (c.policyTooLow) {
      c.policyTooLow = false;
      this.alerts?.policyTooLow(c, null);
    }
    const level = r.written ? 'info' : 'debug';
    this.log[level]({ id: c.id, cgroup: c.cgroupPath, cores: r.cores, coresSource: r.coresSource, policy: r.policyValue, old: r.oldPidsMax, new: r.newPidsMax, action: r.action, why }, r.written ? 'pids.max set' : r.reason);
    this.hooks.applied?.(c, r);
  }

  /** Start, reload and stop run one at a time, in the order asked (a SIGHUP storm is a queue). */
  private serialized<T>(f: () => Promise<T>): Promise<T> {
    const p = this.lifecycle.then(f);
    this.lifecycle = p.catch(() => undefined);
    return p;
  }

  /**
   * SIGHUP: load the config again and apply it as a diff, without stopping detection and
   * without forgetting any alert. An invalid one keeps the running config.
   */
  reload(): Promise<boolean> {
    return this.serialized(() => this.applyReload());
  }

  private async applyReload(): Promise<boolean> {
    if (!this.running) return false;
    if (!this.configFile) {
      this.log.warn('reload asked, but the daemon runs on built-in defaults (no --config file): nothing to reload');
      return false;
    }
    let next: Config;
    try {
      next = loadConfig(this.configFile);
      checkSecrets(next, `config ${this.configFile}`);
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'reload failed: keeping the running config');
      return false;
    }
    const prev = this.config;
    const same = (get: (c: Config) => unknown): boolean => JSON.stringify(get(prev)) === JSON.stringify(get(next));
    const fixed = RESTART_ONLY.filter(([, get]) => !same(get)).map(([key]) => key);
    if (fixed.length > 0) {
      this.log.error({ keys: fixed }, `reload refused: ${fixed.join(', ')} take effect only at a restart; keeping the running config`);
      return false;
    }
    this.log.info({ configFile: this.configFile }, 'reloading');
    this.config = next;
    if (!same((c) => [c.kernel, c.mode])) await this.raisePidMax();
    const { cgroups } = this.host;
    this.engine!.reconfigure({ sweepIntervalMs: next.detection.sweepIntervalMs, kmsg: next.detection.kmsg, kmsgPath: next.paths.kmsg, inotify: next.detection.inotify && cgroups.version === 'v2' });
    this.usage!.reconfigure(next.detection.warnings.intervalMs, next.detection.warnings);
    await this.alerts!.reconfigure(next);
    if (!same((c) => [c.discovery.roots, c.discovery.maxDepth, c.discovery.runtimes, c.discovery.extraPatterns])) {
      this.host.recognisers = buildRecognisers(next.discovery.runtimes, next.discovery.extraPatterns);
      this.live?.close();
      this.live = this.newLiveDiscovery();
    }
    if (!same((c) => c.discovery.reconcileSchedule)) await this.schedule();
    if (!same((c) => c.metrics)) {
      await this.metricsServer?.close();
      this.metricsServer = undefined;
      await this.serveMetrics();
    }
    await this.reconcile();
    this.log.info({ containers: this.inventory.size, sinks: next.alerts.sinks.length, firing: this.alerts!.coalescer.size }, 'reloaded');
    return true;
  }

  stop(): Promise<void> {
    return this.serialized(() => this.doStop());
  }

  private async doStop(): Promise<void> {
    this.running = false;
    await this.task?.stop();
    this.task = undefined;
    for (const t of this.settleTimers) clearTimeout(t);
    this.settleTimers.clear();
    await this.reconciling;
    this.written?.flush();
    this.live?.close();
    this.engine?.stop();
    this.usage?.stop();
    await this.alerts?.stop();
    await this.metricsServer?.close();
    this.metricsServer = undefined;
  }
}
