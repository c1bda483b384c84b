import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type { Config, SinkConfig } from '../config/schema';
import type { Alert } from './alert';
import { fingerprintOf, severityAtLeast, severityOf, summarize } from './coalescer';
import { createSink, sinkAccepts } from './delivery';
import { sinkName } from '../config/schema';

export interface TestAlertResult {
  sink: string;
  type: SinkConfig['type'];
  outcome: 'delivered' | 'failed' | 'skipped';
  /** HTTP status, when a response came. */
  status?: number;
  /** Why it failed, or why the sink's filter skips it. */
  detail?: string;
}

/** A test alert: kind "test", severity info, on the host, a fingerprint and key of its own every run. */
export function makeTestAlert(config: Config, now = new Date()): Alert {
  const host = config.alerts.host ?? os.hostname();
  const run = randomUUID();
  const at = now.toISOString();
  const alert: Alert = {
    fingerprint: fingerprintOf(host, 'test', `/cgwatchdog-test-alert/${run}`),
    idempotencyKey: `test-${run}`,
    sequence: 1,
    state: 'firing',
    kind: 'test',
    severity: severityOf('test'),
    limitScope: 'node',
    host,
    summary: '',
    container: { cgroupPath: '/' },
    counters: { eventsSinceLast: 0, eventsTotal: 0 },
    startsAt: at,
    updatedAt: at,
    sources: ['test-alert'],
    identity: {},
  };
  alert.summary = summarize(alert);
  return alert;
}

/** Why a sink's `kinds` or `minSeverity` leaves the alert out (undefined: it takes it). */
export function filteredOut(cfg: SinkConfig, alert: Alert): string | undefined {
  if (sinkAccepts(cfg, alert)) return undefined;
  if (cfg.kinds && !cfg.kinds.includes(alert.kind)) return `its kinds [${cfg.kinds.join(', ')}] leave out "${alert.kind}" (add "${alert.kind}" to test this sink)`;
  if (!severityAtLeast(alert.severity, cfg.minSeverity)) return `its minSeverity ${cfg.minSeverity} is above the test alert's ${alert.severity}`;
  return 'its filter leaves it out';
}

/**
 * One attempt per sink, all at once, straight to the sink (no outbox, no state directory):
 * the running daemon's queue and alert states are not touched, and a failure is reported
 * now instead of retried. Each sink's own filter is respected and a skip says why.
 */
export async function sendTestAlert(config: Config, alert: Alert = makeTestAlert(config)): Promise<TestAlertResult[]> {
  return Promise.all(
    config.alerts.sinks.map(async (cfg): Promise<TestAlertResult> => {
      const base = { sink: sinkName(cfg), type: cfg.type };
      const why = filteredOut(cfg, alert);
      if (why) return { ...base, outcome: 'skipped', detail: why };
      try {
        const r = await createSink(cfg).send(alert);
        if (r.result === 'delivered') return { ...base, outcome: 'delivered', status: r.status };
        return { ...base, outcome: 'failed', status: r.status, detail: r.error ?? (r.status !== undefined ? `HTTP ${r.status}` : 'no answer') };
      } catch (err) {
        return { ...base, outcome: 'failed', detail: (err as Error).message };
      }
    }),
  );
}

/** One line per sink, for the terminal. */
export function formatTestAlert(alert: Alert, results: TestAlertResult[]): string {
  const lines = [`test alert ${alert.idempotencyKey} (kind ${alert.kind}, severity ${alert.severity}) to ${results.length} sink${results.length === 1 ? '' : 's'}:`];
  for (const r of results) {
    const what = r.outcome === 'delivered' ? `delivered${r.status ? ` (HTTP ${r.status})` : ''}` : r.outcome === 'failed' ? `FAILED: ${r.detail}` : `skipped: ${r.detail}`;
    lines.push(`  ${r.sink} (${r.type}): ${what}`);
  }
  return `${lines.join('\n')}\n`;
}
