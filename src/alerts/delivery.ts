import { sinkName, type SinkConfig } from '../config/schema';
import type { Logger } from '../log';
import type { Alert } from './alert';
import { severityAtLeast } from './coalescer';
import { sinkDirName, type Outbox, type OutboxEntry } from './outbox';
import { AlertmanagerSink } from './sinks/alertmanager';
import type { SendOutcome, Sink } from './sinks/http-post';
import { SlackSink } from './sinks/slack';
import { WebhookSink } from './sinks/webhook';

// One worker per sink drains that sink's outbox queue strictly in order. A retryable failure
// keeps the entry at the head and waits (exponential backoff, full jitter); the entry stays
// until delivered, rejected, or dropped by the outbox bound, so nothing is lost silently.

export type DeliveryOutcome = 'delivered' | 'retried' | 'rejected' | 'dropped' | 'expired';

export interface SinkStats {
  delivered: number;
  retried: number;
  rejected: number;
  dropped: number;
  /** Entries waiting in the outbox. */
  depth: number;
  lastError?: string;
  lastDeliveredAt?: number;
}

/**
 * Throws for two sinks of one name or the reserved name, before anything is changed. The
 * config schema refuses both with the key named; this guards a list made in code.
 */
export function checkSinkNames(sinks: readonly SinkConfig[]): void {
  const names = new Set<string>();
  for (const cfg of sinks) {
    const n = sinkName(cfg);
    if (names.has(n)) throw new Error(`two sinks are named "${n}"; give each a distinct name`);
    sinkDirName(n); // throws for the reserved name
    names.add(n);
  }
}

export function createSink(cfg: SinkConfig): Sink {
  const name = sinkName(cfg);
  switch (cfg.type) {
    case 'webhook':
      return new WebhookSink(name, cfg);
    case 'slack':
      return new SlackSink(name, cfg);
    case 'alertmanager':
      return new AlertmanagerSink(name, cfg);
  }
}

/** Whether a sink wants this alert: its `kinds` (absent: all) and `minSeverity`. */
export function sinkAccepts(cfg: SinkConfig, alert: Alert): boolean {
  if (cfg.kinds && !cfg.kinds.includes(alert.kind)) return false;
  return severityAtLeast(alert.severity, cfg.minSeverity);
}

/** Full jitter: uniform in [0, min(max, initial x 2^attempt)]. */
export function backoffDelay(attempt: number, initialDelayMs: number, maxDelayMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxDelayMs, initialDelayMs * 2 ** Math.min(attempt, 52));
  return Math.floor(random() * cap);
}

export interface DeliveryOptions {
  outbox: Outbox;
  sinks: SinkConfig[];
  log: Logger;
  now?: () => number;
  /** A monotonic clock (ms) for re-send schedules and ages; default performance.now(), or `now` when that is injected. */
  mono?: () => number;
  random?: () => number;
  /** For tests: build sinks differently. */
  createSink?: (cfg: SinkConfig) => Sink;
  /** Called after each outcome, e.g. to update metrics. */
  onOutcome?: (sink: string, outcome: DeliveryOutcome, entry: OutboxEntry) => void;
  /** An entry its sink has not taken after this long is dropped ('expired'). Default: a day. */
  ttlMs?: number;
}

interface Worker {
  sink: Sink;
  stopped: boolean;
  /** Aborts the in-flight request. */
  inflight?: AbortController;
  /** Wakes the worker from an idle wait or a backoff sleep. */
  wake?: () => void;
  /** Waiting for an enqueue (not backing off): only then does an enqueue wake it. */
  idle: boolean;
  done: Promise<void>;
}

export class Delivery {
  private readonly workers = new Map<string, Worker>();
  private readonly statsBySink = new Map<string, Omit<SinkStats, 'depth' | 'dropped'>>();
  /** Alertmanager re-sends: fingerprint -> last firing alert and when it was last enqueued, per sink. */
  private readonly firing = new Map<string, Map<string, { alert: Alert; lastAt: number }>>();
  private configs: SinkConfig[] = [];
  private readonly now: () => number;
  private readonly mono: () => number;
  /**
   * When this process first saw each waiting entry: the monotonic time, and its age by the
   * wall clock then (entries outlive the process, so their enqueue time is wall-clock). An
   * NTP step afterwards neither drops an entry early nor keeps it past its TTL.
   */
  private readonly firstSeen = new WeakMap<OutboxEntry, { mono: number; wallAgeMs: number }>();
  private readonly random: () => number;
  private readonly make: (cfg: SinkConfig) => Sink;
  private started = false;
  private readonly onEnqueued = (sink: string): void => {
    const w = this.workers.get(sink);
    if (w?.idle) w.wake?.();
  };
  private readonly onDropped = (e: OutboxEntry): void => this.opts.onOutcome?.(e.sink, 'dropped', e);

  constructor(private readonly opts: DeliveryOptions) {
    this.now = opts.now ?? Date.now;
    this.mono = opts.mono ?? opts.now ?? (() => performance.now());
    this.random = opts.random ?? Math.random;
    this.make = opts.createSink ?? createSink;
    this.configs = opts.sinks;
    checkSinkNames(opts.sinks);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.opts.outbox.on('enqueued', this.onEnqueued);
    this.opts.outbox.on('dropped', this.onDropped);
    for (const cfg of this.configs) this.startWorker(cfg);
    this.reportOrphans();
  }

  /**
   * Queues the alert for every sink that wants it (or, `only`, for these sinks: one a reload
   * added gets what is firing). Resolves once it is on disk.
   */
  async enqueue(alert: Alert, only?: ReadonlySet<string>): Promise<void> {
    const now = this.now();
    const mono = this.mono();
    const jobs: Promise<unknown>[] = [];
    for (const cfg of this.configs) {
      if (!sinkAccepts(cfg, alert) || (only && !only.has(sinkName(cfg)))) continue;
      const name = sinkName(cfg);
      if (cfg.type === 'alertmanager') {
        let m = this.firing.get(name);
        if (!m) this.firing.set(name, (m = new Map()));
        if (alert.state === 'firing') m.set(alert.fingerprint, { alert, lastAt: mono });
        else m.delete(alert.fingerprint);
      }
      jobs.push(this.opts.outbox.enqueue(name, alert, now));
    }
    await Promise.all(jobs);
  }

  /**
   * Called on the caller's tick: re-sends every firing alert to Alertmanager sinks once its
   * resendIntervalSeconds passed, so Alertmanager does not let it expire. Through the outbox.
   */
  async resendFiring(): Promise<number> {
    const now = this.now();
    const mono = this.mono();
    const jobs: Promise<unknown>[] = [];
    for (const cfg of this.configs) {
      if (cfg.type !== 'alertmanager') continue;
      const name = sinkName(cfg);
      const m = this.firing.get(name);
      if (!m) continue;
      for (const rec of m.values()) {
        if (mono - rec.lastAt < cfg.resendIntervalSeconds * 1000) continue;
        rec.lastAt = mono;
        // Alertmanager de-duplicates by labels; the webhook-style key is irrelevant there.
        jobs.push(this.opts.outbox.enqueue(name, rec.alert, now));
      }
    }
    await Promise.all(jobs);
    return jobs.length;
  }

  private ageOf(entry: OutboxEntry): number {
    let f = this.firstSeen.get(entry);
    if (!f) this.firstSeen.set(entry, (f = { mono: this.mono(), wallAgeMs: Math.max(0, this.now() - entry.enqueuedAt) }));
    return f.wallAgeMs + (this.mono() - f.mono);
  }

  /**
   * New sink list (a reload): workers of changed sinks restart with their queue; removed
   * sinks' waiting entries are dropped and counted (they can never be delivered); new sinks
   * start. Returns the names of the sinks that were added.
   */
  async reload(sinks: SinkConfig[]): Promise<string[]> {
    checkSinkNames(sinks);
    const next = new Map(sinks.map((c) => [sinkName(c), c]));
    const before = new Set(this.configs.map(sinkName));
    const stopping: Promise<void>[] = [];
    for (const [name, w] of this.workers) {
      const cfg = next.get(name);
      if (cfg && JSON.stringify(cfg) === JSON.stringify(w.sink.config)) continue;
      stopping.push(this.stopWorker(name, 5000));
      if (!cfg) this.firing.delete(name);
    }
    await Promise.all(stopping);
    for (const name of before) {
      if (next.has(name)) continue;
      const n = await this.opts.outbox.discard(name);
      if (n > 0) this.opts.log.warn({ sink: name, dropped: n }, 'sink removed by a reload: its undelivered entries were dropped');
    }
    this.configs = sinks;
    if (this.started) {
      for (const cfg of sinks) if (!this.workers.has(sinkName(cfg))) this.startWorker(cfg);
    }
    return [...next.keys()].filter((n) => !before.has(n));
  }


  stats(): Record<string, SinkStats> {
    const out: Record<string, SinkStats> = {};
    const names = new Set([...this.configs.map(sinkName), ...this.statsBySink.keys()]);
    for (const n of names) {
      const s = this.statsBySink.get(n) ?? { delivered: 0, retried: 0, rejected: 0 };
      out[n] = { ...s, dropped: this.opts.outbox.dropped(n), depth: this.opts.outbox.depth(n) };
    }
    return out;
  }

  /**
   * Stops the workers. In-flight requests get `graceMs` to finish (their outcome is recorded);
   * after that they are aborted and the entry stays in the outbox for the next start.
   */
  async stop(graceMs = 2000): Promise<void> {
    this.opts.outbox.off('enqueued', this.onEnqueued);
    this.opts.outbox.off('dropped', this.onDropped);
    await Promise.all([...this.workers.keys()].map((n) => this.stopWorker(n, graceMs)));
    this.started = false;
  }

  private reportOrphans(): void {
    const configured = new Set(this.configs.map(sinkName));
    for (const s of this.opts.outbox.sinks()) {
      if (!configured.has(s)) {
        this.opts.log.warn({ sink: s, entries: this.opts.outbox.depth(s) }, 'outbox has entries for a sink that is not configured; kept on disk');
      }
    }
  }

  private stat(name: string): Omit<SinkStats, 'depth' | 'dropped'> {
    let s = this.statsBySink.get(name);
    if (!s) this.statsBySink.set(name, (s = { delivered: 0, retried: 0, rejected: 0 }));
    return s;
  }

  private startWorker(cfg: SinkConfig): void {
    const sink = this.make(cfg);
    const w: Worker = { sink, stopped: false, idle: false, done: Promise.resolve() };
    this.workers.set(sink.name, w);
    this.stat(sink.name);
    w.done = this.run(w).catch((err: Error) => {
      this.opts.log.error({ sink: sink.name, err: err.message }, 'delivery worker failed');
    });
  }

  private async stopWorker(name: string, graceMs: number): Promise<void> {
    const w = this.workers.get(name);
    if (!w) return;
    w.stopped = true;
    w.wake?.();
    const timer = setTimeout(() => w.inflight?.abort(), graceMs);
    try {
      await w.done;
    } finally {
      clearTimeout(timer);
      this.workers.delete(name);
    }
  }

  /** Sleeps until woken or `ms` passed (Infinity: until woken). */
  private wait(w: Worker, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      w.wake = (): void => {
        if (timer) clearTimeout(timer);
        w.wake = undefined;
        resolve();
      };
      if (Number.isFinite(ms)) timer = setTimeout(() => w.wake?.(), ms);
    });
  }

  private async run(w: Worker): Promise<void> {
    const { log, outbox } = this.opts;
    const name = w.sink.name;
    const retry = w.sink.config.retry;
    let attempt = 0;
    let lastSeq = -1;
    while (!w.stopped) {
      const entry = outbox.peek(name);
      if (!entry) {
        w.idle = true;
        await this.wait(w, Infinity);
        w.idle = false;
        continue;
      }
      if (entry.seq !== lastSeq) {
        attempt = 0;
        lastSeq = entry.seq;
      }
      const ageMs = this.ageOf(entry);
      if (ageMs > (this.opts.ttlMs ?? 86_400_000)) {
        await outbox.ack(entry);
        log.error({ sink: name, seq: entry.seq, kind: entry.alert.kind, state: entry.alert.state, idempotencyKey: entry.alert.idempotencyKey, ageMs: Math.round(ageMs) }, 'alert not delivered within the outbox TTL; dropped');
        this.opts.onOutcome?.(name, 'expired', entry);
        continue;
      }
      const ac = new AbortController();
      w.inflight = ac;
      let outcome: SendOutcome;
      try {
        outcome = await w.sink.send(entry.alert, ac.signal);
      } catch (err) {
        outcome = { result: 'retry', error: (err as Error).message };
      } finally {
        w.inflight = undefined;
      }
      const s = this.stat(name);
      const ctx = { sink: name, seq: entry.seq, kind: entry.alert.kind, state: entry.alert.state, idempotencyKey: entry.alert.idempotencyKey };
      if (outcome.result === 'delivered') {
        s.delivered++;
        s.lastDeliveredAt = this.now();
        await outbox.ack(entry);
        if (attempt > 0) log.info({ ...ctx, attempts: attempt + 1 }, 'alert delivered after retries');
        else log.debug({ ...ctx, status: outcome.status }, 'alert delivered');
        this.opts.onOutcome?.(name, 'delivered', entry);
        attempt = 0;
      } else if (outcome.result === 'rejected') {
        s.rejected++;
        s.lastError = outcome.error;
        await outbox.ack(entry);
        log.error({ ...ctx, status: outcome.status, error: outcome.error }, 'sink rejected the alert; dropped it (not retried)');
        this.opts.onOutcome?.(name, 'rejected', entry);
        attempt = 0;
      } else {
        if (w.stopped && ac.signal.aborted) break; // aborted by stop(): the entry stays for the next start
        s.retried++;
        s.lastError = outcome.error;
        const delay = backoffDelay(attempt, retry.initialDelayMs, retry.maxDelayMs, this.random);
        const level = attempt === 0 || attempt % 10 === 0 ? 'warn' : 'debug';
        log[level]({ ...ctx, status: outcome.status, error: outcome.error, attempt: attempt + 1, retryInMs: delay }, 'alert delivery failed; will retry');
        this.opts.onOutcome?.(name, 'retried', entry);
        attempt++;
        await this.wait(w, delay); // only stop() cuts it short: new entries do not hurry a failing sink
      }
    }
  }
}
