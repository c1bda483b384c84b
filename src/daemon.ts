import path from 'node:path';
import type { ScheduledTask } from 'node-cron';
import os from 'node:os';
import si from 'systeminformation';
import { readDistro } from './kernel/os-release';
import { checkSecrets, loadConfig, loadWebConfig } from './config/load';
import type { Config } from './config/schema';
import { compose, coverageFor, type DaemonHooks, type Parts } from './compose';
import type { Inventory } from './discovery/inventory';
import { setupHost, type HostSetup } from './host-setup';
import { hostPidsReport } from './kernel/host-report';
import { raisePidMax } from './kernel/sysctl';
import { inotifyFor, probeCapabilities, signalValue, type KernelCapabilities } from './kernel/capabilities';
import { checkSinkNames } from './alerts/delivery';
import type { Logger } from './log';
import { buildRecognisers } from './runtimes/index';
import { serveMetrics } from './metrics/daemon-metrics';
import type { MetricsServer } from './metrics/server';
import { buildInfo } from './build-info';
import { scheduleReconcile } from './reconcile-schedule';
import { gatherStatus } from './status/gather';
import { serveStatus, type StatusServer } from './status/server';
import { configIdentity } from './hook/hook-config';
import { serveHooks, type HookServer } from './hook/hook-server';
import type { LoadedWebConfig } from './metrics/web-config-file';

export type { DaemonHooks } from './compose';

/**
 * What a reload cannot change in place: where the cgroup and proc filesystems and the state
 * live (everything is built on them). The daemon refuses such a reload and says to restart.
 */
const RESTART_ONLY: [string, (c: Config) => unknown][] = [
  ['paths', (c) => c.paths],
  ['alerts.outbox', (c) => c.alerts.outbox],
  ['names', (c) => c.names],
];

/**
 * The lifecycle: start, reload (a diff) and stop, one at a time in the order asked. The
 * parts are made by compose(); what each container is lives in the inventory's records.
 */
export class Daemon {
  host!: HostSetup;
  /** What this kernel was measured to notify, at start. */
  caps!: KernelCapabilities;
  parts?: Parts;
  metricsServer?: MetricsServer;
  statusServer?: StatusServer;
  hookServer?: HookServer;
  /** The config file's identity when it was read: the hook socket answers with this.config only while the file is unchanged. */
  private configIdentity: string | null;
  private readonly startedAt = Date.now();
  /** metrics.webConfigFile as read at start or the last reload. */
  private web?: LoadedWebConfig;
  private task?: ScheduledTask;
  private running = false;
  private lifecycle: Promise<unknown> = Promise.resolve();

  constructor(
    public config: Config,
    private readonly configFile: string | null,
    readonly log: Logger,
    private readonly hooks: DaemonHooks = {},
  ) {
    this.configIdentity = identityOf(configFile);
  }

  start(): Promise<void> {
    return this.serialized(() => this.doStart());
  }

  private async doStart(): Promise<void> {
    const config = this.config;
    // Before anything is touched: a bad web config must stop the start, not a half-started daemon.
    this.web = loadWebConfig(config, this.configFile ? `config ${this.configFile}` : 'config');
    this.host = await setupHost(config);
    const { cgroups } = this.host;
    if (this.host.problems.length > 0) {
      if (config.mode === 'enforce') throw new Error(`${this.host.problems.join('; ')}; run as root with the cgroup filesystem writable, or set mode: observe`);
      for (const p of this.host.problems) this.log.warn(p);
    }
    this.running = true;
    this.caps = await probeCapabilities({ cgroups, procRoot: config.paths.procRoot, kmsgPath: config.paths.kmsg, canWrite: config.mode === 'enforce' && this.host.problems.length === 0 });
    const parts = compose(() => this.config, this.host, this.caps, this.log, this.hooks);
    this.parts = parts;
    this.log.info(await this.facts(), 'starting');
    this.log.info({ capabilities: this.caps }, 'kernel signals measured: the sources follow them');
    if (this.host.cgroupNamespace.kind === 'translated') {
      const roots = Object.fromEntries(this.host.cgroupNamespace.hierarchies.map((h) => [h.mountPoint, h.nsRoot]));
      this.log.info({ nsRoots: roots }, 'running in a private cgroup namespace: the host hierarchies are mounted whole, and the namespace root was found in them');
    }

    await this.raisePidMax();
    await parts.alerts.start();
    this.watchOutbox(parts);
    await this.serveMetrics(parts);
    this.hookServer = await serveHooks(config.paths.hookSocket, () => ({ config: this.config, file: this.configFile, identity: this.configIdentity }), this.log);
    this.statusServer = await serveStatus(config.paths.statusSocket, () => gatherStatus(parts, { version: buildInfo().version, startedAt: this.startedAt, config: this.config, cgroup: cgroups.version }), this.log);

    const t0 = process.hrtime.bigint();
    await parts.keeper.start();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const { inventory } = parts;
    // Alerts restored from an earlier run whose container went while we were down end now.
    parts.alerts.resolveRestored((p) => inventory.owner(p) !== undefined || inventory.isPod(p));
    // In observe mode the limits stay as they are: report what is, not what would be.
    const limits = [...inventory.all()].map((c) => (c.applied?.written ? c.applied.newPidsMax : c.applied?.oldPidsMax));
    const report = await hostPidsReport(config.paths.procRoot, limits);
    this.log.info({ containers: inventory.size, watches: parts.keeper.watchCount, startMs: Math.round(ms), ...report }, 'initial reconcile done');
    if (report.overcommit !== null && report.overcommit > 1) {
      this.log.warn({ sumContainersPidsMax: report.sumContainersPidsMax, pidMax: report.pidMax }, 'containers together may use more PIDs than kernel.pid_max allows');
    }

    await this.schedule();
    parts.engine.start();
    parts.usage.start();
    // The kmsg follower replays the ring buffer up to "now" first (~1 s in user-mode Linux):
    // "detection running" means a hit from here on is seen.
    if (config.detection.kmsg && !(await parts.engine.kmsgReady(5000))) this.log.warn({ path: config.paths.kmsg }, 'the kmsg reader has not caught up with the kernel log after 5 s; the sweep covers meanwhile');
    this.log.info({ inotify: inotifyFor(this.caps, cgroups.version, config.detection.inotify), kmsg: config.detection.kmsg, sweepIntervalMs: config.detection.sweepIntervalMs, sinks: config.alerts.sinks.length }, 'detection running');
  }

  /** The records of the containers known and lately gone (after start). */
  get inventory(): Inventory {
    if (!this.parts) throw new Error('the daemon has not started');
    return this.parts.inventory;
  }

  /** Rescan and repair drift now (the schedule calls it too). */
  reconcile(): Promise<void> {
    return this.parts?.keeper.reconcile() ?? Promise.resolve();
  }

  /** Disk trouble on the state dir: logged when it starts and when it ends, counted. */
  private watchOutbox(parts: Parts): void {
    const ob = parts.alerts.outbox;
    let failing = ob.lastWriteError !== undefined;
    ob.on('write-failed', (err: NodeJS.ErrnoException) => {
      parts.metrics.daemon?.outboxWriteFailuresTotal.inc();
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

  private async serveMetrics(parts: Parts): Promise<void> {
    const { metrics } = this.config;
    if (!metrics.enabled) return;
    this.metricsServer = await serveMetrics(parts.metrics, metrics.listen, this.log, this.web);
    const c = this.caps;
    const signals = { pids_events_inotify: c.pidsInotify, pids_kmsg: c.pidsKmsg, memory_events_inotify: c.memoryInotify, pids_events_local: c.pidsEventsLocal, memory_events_local: c.memoryEventsLocal, pids_localevents_mount: c.pidsLocaleventsMount, memory_localevents_mount: c.memoryLocaleventsMount, host_cgroup_namespace: this.host.cgroupNamespace.kind === 'host' };
    for (const [capability, v] of Object.entries(signals)) parts.metrics.daemon.kernelCapability.set({ capability }, signalValue(v));
    this.log.info({ listen: metrics.listen, port: this.metricsServer.port }, 'metrics listening');
  }

  private async schedule(): Promise<void> {
    await this.task?.stop();
    this.task = scheduleReconcile(this.config.discovery.reconcileSchedule, () => void this.reconcile(), this.log);
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
      cgroupNamespace: this.host.cgroupNamespace,
      hostCores: this.host.hostCores,
      kernel: os.release(),
      distro: readDistro(),
      memTotalBytes: mem?.total,
    };
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
    const parts = this.parts;
    if (!this.running || !parts) return false;
    if (!this.configFile) {
      this.log.warn('reload asked, but the daemon runs on built-in defaults (no --config file): nothing to reload');
      return false;
    }
    let next: Config;
    let nextWeb: LoadedWebConfig | undefined;
    // Before the read: an edit during it then shows as a changed file to the hook socket.
    const nextIdentity = identityOf(this.configFile);
    try {
      next = loadConfig(this.configFile);
      checkSecrets(next, `config ${this.configFile}`);
      // The schema refuses these with the key named; checked again here, where it matters: everything is checked before anything is changed.
      checkSinkNames(next.alerts.sinks);
      // Read again even when the path is the same: a reload is how a renewed certificate or a changed user list is taken in.
      nextWeb = loadWebConfig(next, `config ${this.configFile}`);
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
    try {
      await this.applyChecked(parts, prev, next, nextIdentity, nextWeb);
    } catch (err) {
      // Past the checks only the host can fail (a metrics port taken, a pid_max write refused):
      // said here, with what was applied, never an unhandled rejection.
      this.log.error({ err: (err as Error).message }, 'reload failed while applying: the parts before the failure run the new config');
      return false;
    }
    return true;
  }

  /** A reload's changes, once every check has passed. */
  private async applyChecked(parts: Parts, prev: Config, next: Config, nextIdentity: ReturnType<typeof identityOf>, nextWeb: LoadedWebConfig | undefined): Promise<void> {
    const same = (get: (c: Config) => unknown): boolean => JSON.stringify(get(prev)) === JSON.stringify(get(next));
    this.config = next;
    this.configIdentity = nextIdentity;
    if (!same((c) => [c.kernel, c.mode])) await this.raisePidMax();
    const { cgroups } = this.host;
    parts.engine.reconfigure({ sweepIntervalMs: next.detection.sweepIntervalMs, kmsg: next.detection.kmsg, kmsgPath: next.paths.kmsg, inotify: inotifyFor(this.caps, cgroups.version, next.detection.inotify), coverage: coverageFor(next, this.caps, cgroups.version) });
    parts.usage.reconfigure(next.detection.warnings.intervalMs, next.detection.warnings);
    await parts.alerts.reconfigure(next);
    if (!same((c) => [c.discovery.roots, c.discovery.maxDepth, c.discovery.runtimes, c.discovery.extraPatterns, c.discovery.containerdNamespaces, c.discovery.dockerCgroupParents])) {
      this.host.recognisers = buildRecognisers(next.discovery.runtimes, next.discovery.extraPatterns, next.discovery);
      parts.keeper.rediscover();
    }
    if (!same((c) => c.discovery.reconcileSchedule)) await this.schedule();
    const webChanged = this.web?.fingerprint !== nextWeb?.fingerprint;
    this.web = nextWeb;
    if (!same((c) => c.metrics) || webChanged) {
      await this.metricsServer?.close();
      this.metricsServer = undefined;
      await this.serveMetrics(parts);
    }
    await this.reconcile();
    this.log.info({ containers: parts.inventory.size, sinks: next.alerts.sinks.length, firing: parts.alerts.coalescer.size }, 'reloaded');
  }

  stop(): Promise<void> {
    return this.serialized(() => this.doStop());
  }

  private async doStop(): Promise<void> {
    this.running = false;
    // First: from here on the hooks run the Node hook, which needs no daemon.
    await this.hookServer?.close();
    this.hookServer = undefined;
    await this.task?.stop();
    this.task = undefined;
    const p = this.parts;
    await p?.keeper.stop();
    p?.engine.stop();
    p?.usage.stop();
    await p?.alerts.stop();
    await this.metricsServer?.close();
    this.metricsServer = undefined;
    await this.statusServer?.close();
    this.statusServer = undefined;
  }
}

function identityOf(file: string | null): string | null {
  if (!file) return null;
  try {
    return configIdentity(path.resolve(file));
  } catch {
    return null;
  }
}
