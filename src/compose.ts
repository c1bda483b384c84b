import { AlertPipeline } from './alerts/pipeline';
import type { Config } from './config/schema';
import { DetectionEngine } from './detect/engine';
import type { LimitEvent } from './detect/event';
import { UsageMonitor } from './detect/usage-monitor';
import type { ContainerRecord } from './discovery/container';
import { Inventory } from './discovery/inventory';
import type { HostSetup } from './host-setup';
import { inotifyFor, sweepCoverage, type KernelCapabilities } from './kernel/capabilities';
import { watchHealth } from './kernel/inotify';
import { ContainerKeeper, type KeeperHooks } from './keeper';
import type { Logger } from './log';
import { DaemonMetricsState } from './metrics/daemon-metrics';
import { StateWriteHealth } from './state/write-health';

export interface DaemonHooks extends KeeperHooks {
  /** Each detected limit hit, once. */
  event?(e: LimitEvent): void;
}

/** The daemon's parts, built and wired; nothing runs until the lifecycle starts them. */
export interface Parts {
  inventory: Inventory;
  keeper: ContainerKeeper;
  engine: DetectionEngine;
  usage: UsageMonitor;
  alerts: AlertPipeline;
  metrics: DaemonMetricsState;
}

/**
 * The composition root: makes every part and connects them, and does nothing else. The
 * inventory's records are the one per-container state; detection, usage, alerts and metrics
 * follow its 'added', 'removed' and 'expired'.
 */
export function compose(config: () => Config, host: HostSetup, caps: KernelCapabilities, log: Logger, hooks: DaemonHooks = {}): Parts {
  const cfg = config();
  const { cgroups } = host;
  const inventory = new Inventory();
  const stateWrites = new StateWriteHealth();
  const engine = new DetectionEngine({
    cgroups,
    log,
    // What this kernel was measured to notify (6.18 on v1: nothing; 6.1 on v1: pids.events).
    inotify: inotifyFor(caps, cgroups.version, cfg.detection.inotify),
    kmsg: cfg.detection.kmsg,
    kmsgPath: cfg.paths.kmsg,
    sweepIntervalMs: cfg.detection.sweepIntervalMs,
    // Only what no source reports is swept every interval (v1 on 6.18: a cgroup's PID-limit hits after its first).
    coverage: coverageFor(cfg, caps, cgroups.version),
    memoryUnlimited: (path) => inventory.get(path)?.usage?.memoryLimit === 'max',
    ownerOf: (path) => inventory.owner(path),
  });
  cgroups.attachReader(engine.reader);
  const usage = new UsageMonitor({
    cgroups,
    reader: engine.reader,
    procRoot: cfg.paths.procRoot,
    intervalMs: cfg.detection.warnings.intervalMs,
    thresholds: cfg.detection.warnings,
    containers: () => inventory.all(),
    log,
  });
  let alerts: AlertPipeline | undefined = undefined;
  const metrics = new DaemonMetricsState({
    all: () => inventory.all(),
    departedAll: () => inventory.departedAll(),
    owner: (p) => inventory.owner(p),
    hostUsage: () => usage.host,
    health: () => {
      const h = engine.health();
      const ob = alerts?.outbox;
      const disk = [...(ob?.lastWriteError ? [`alert outbox cannot write to disk (${ob.lastWriteError}): ${ob.inMemory} alerts held in memory`] : []), ...stateWrites.degraded()];
      if (disk.length === 0) return h;
      return { ...h, degraded: [...(h.degraded ?? []), ...disk] };
    },
  });
  const m = () => metrics.daemon;
  alerts = new AlertPipeline({
    config: cfg,
    log,
    inventory,
    usage,
    cgroups,
    stateWrites,
    onOutcome: (sink, outcome) => {
      m()?.alertsTotal.inc({ sink, outcome });
      if (outcome === 'dropped') m()?.outboxDroppedTotal.inc();
    },
  });
  const pipeline = alerts;
  const keeper = new ContainerKeeper({ inventory, host, config, log, metrics: m, hooks, stateWrites, policyTooLow: (c, tooLow) => pipeline.policyTooLow(c, tooLow) });
  stateWrites.on('failure', (f: { file: string; code: string; message: string; first: boolean }) => {
    m()?.stateWriteFailuresTotal.inc({ file: f.file });
    // Once until a save of that file succeeds: an alert storm saves every 100 ms.
    if (f.first) log.error({ file: f.file, code: f.code, err: f.message }, 'cannot save a state file: its data is kept in memory (logged once until a save succeeds)');
  });
  stateWrites.on('recovered', (file: string) => log.info({ file }, 'the state file is saved again'));

  engine.on('event', (e: LimitEvent) => {
    log.debug({ event: e }, 'limit event');
    metrics.onEvent(e);
    hooks.event?.(e);
    pipeline.event(e);
  });
  engine.on('sweep', sweepObserver(metrics, engine, keeper, pipeline, inventory));
  usage.on('transition', (t, c) => pipeline.warning(t, c));
  inventory.on('added', (c: ContainerRecord) => {
    engine.add(c);
    pipeline.containerAdded(c);
  });
  inventory.on('removed', (c: ContainerRecord) => {
    engine.remove(c);
    usage.forget(c);
    pipeline.containerRemoved(c);
  });
  watchHealth.removeAllListeners();
  watchHealth.on('failure', (f: { path: string; code: string; first: boolean }) => {
    m()?.watchFailuresTotal.inc({ code: f.code });
    // Once per code until every watch is back: at the watch limit each new cgroup fails.
    if (f.first) log.warn({ code: f.code, path: f.path, hint: f.code === 'ENOSPC' ? 'fs.inotify.max_user_watches is reached' : undefined }, 'cannot watch a cgroup path: rescanning it instead (logged once per error until watching recovers)');
  });
  watchHealth.on('recovered', () => log.info('every cgroup path is watched again'));
  return { inventory, keeper, engine, usage, alerts: pipeline, metrics };
}

/** What the measured kernel and this config report without a read (the sweep reads the rest fast). */
export function coverageFor(cfg: Config, caps: KernelCapabilities, version: 'v1' | 'v2') {
  return sweepCoverage(caps, version, { inotify: cfg.detection.inotify, kmsg: cfg.detection.kmsg, alerted: (k) => !cfg.alerts.metricOnlyKinds.includes(k) });
}

/** After each sweep: the gauges of the sources, and the engine's totals as counter increments. */
function sweepObserver(metrics: DaemonMetricsState, engine: DetectionEngine, keeper: ContainerKeeper, alerts: AlertPipeline, inventory: Inventory): (seconds: number) => void {
  let last = { parsed: 0, unparsed: 0, wrapped: 0, restarts: 0 };
  return (seconds) => {
    const dm = metrics.daemon;
    if (!dm) return;
    dm.sweepDurationSeconds.observe(seconds);
    const w = engine.watchCount;
    dm.watchesActive.set({ type: 'inotify-files' }, w.inotify);
    dm.watchesActive.set({ type: 'cgroup-dirs' }, keeper.watchCount);
    dm.watchesActive.set({ type: 'open-counter-files' }, w.openFiles);
    const st = engine.stats;
    dm.watchesActive.set({ type: 'fast-swept-cgroups' }, st.fastSwept);
    dm.watchesActive.set({ type: 'net-swept-cgroups' }, st.netSwept);
    const entries: Record<string, number> = { containers: inventory.size, departed: inventory.departedCount, 'watched-cgroups': w.cgroups, 'counter-baselines': engine.tracker.size, 'open-fds': w.openFiles, 'pinned-files': engine.reader.pinnedCount, 'fast-swept': st.fastSwept, 'safety-net': st.netSwept, 'inotify-watches': w.inotify + keeper.watchCount };
    for (const [map, n] of Object.entries(entries)) dm.stateEntries.set({ map }, n);
    dm.outboxDepth.set(alerts.outbox?.depth() ?? 0);
    for (const [source, up] of Object.entries(engine.sourcesUp())) dm.sourceUp.set({ source }, up ? 1 : 0);
    const { kmsgRestarts, kmsgRecords: k } = engine.stats;
    if (kmsgRestarts > last.restarts) dm.kmsgRestartsTotal.inc(kmsgRestarts - last.restarts);
    for (const result of ['parsed', 'unparsed', 'wrapped'] as const) if (k[result] > last[result]) dm.kmsgRecordsTotal.inc({ result }, k[result] - last[result]);
    last = { ...k, restarts: kmsgRestarts };
  };
}
