import type { SinkConfig } from '../../config/schema';
import type { Alert } from '../alert';
import { formatBytes } from '../coalescer';
import { postBody, postOptionsFor, type SendOutcome, type Sink } from './http-post';

// Alertmanager's v2 API (POST /api/v2/alerts). Alertmanager identifies an alert by its label
// set, so labels hold only what identifies the condition (no counters); counters go into
// annotations. A firing alert gets endsAt = now + 4 x resendInterval, as Prometheus does
// (rules' resend delay), so Alertmanager forgets it if we die; a resolved one gets endsAt = now.

export interface AmAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
  generatorURL?: string;
}

export function alertName(kind: Alert['kind']): string {
  return `Cgwatchdog${kind
    .split('-')
    .map((w) => (w === 'oom' ? 'OOM' : w === 'pids' ? 'PIDs' : w[0]!.toUpperCase() + w.slice(1)))
    .join('')}`;
}

export function alertmanagerPayload(a: Alert, resendIntervalSeconds: number, now: number = Date.now(), generatorURL?: string): AmAlert[] {
  const c = a.container;
  const labels: Record<string, string> = {};
  const put = (k: string, v: string | undefined): void => {
    if (v !== undefined && v !== '') labels[k] = v;
  };
  put('alertname', alertName(a.kind));
  put('severity', a.severity);
  put('kind', a.kind);
  put('host', a.host);
  // The label set is the alert's identity in Alertmanager: only what was known at its first
  // message (a.identity), so a name learned later never splits it in two.
  put('container', a.identity?.name);
  put('container_id', c.id);
  put('limit_scope', a.limitScope);
  put('runtime', c.runtime);
  put('pod', a.identity?.pod);
  put('namespace', a.identity?.namespace);
  // Two cgroups without a container id (pod-level limits, plain cgroups) must stay two alerts.
  put('cgroup', c.cgroupPath);

  const annotations: Record<string, string> = {};
  const note = (k: string, v: string | undefined): void => {
    if (v !== undefined && v !== '') annotations[k] = v;
  };
  note('summary', a.summary);
  const lines = [
    // Names learned after the first message: here, never in the labels.
    c.name && c.name !== a.identity?.name ? `container: ${c.name}` : undefined,
    c.pod && c.pod !== a.identity?.pod ? `pod: ${c.namespace ? `${c.namespace}/` : ''}${c.pod}` : undefined,
    `cgroup: ${c.cgroupPath}`,
    c.image ? `image: ${c.image}` : undefined,
    a.counters.limit !== undefined ? `limit: ${a.counters.limit}` : undefined,
    a.counters.current !== undefined ? `current: ${a.counters.current}` : undefined,
    a.memory?.usageBytes !== undefined ? `memory usage: ${formatBytes(a.memory.usageBytes)}` : undefined,
    `events since last message: ${a.counters.eventsSinceLast}; total: ${a.counters.eventsTotal}`,
    `sources: ${a.sources.join(', ')}`,
    `fingerprint: ${a.fingerprint}`,
  ];
  note('description', lines.filter(Boolean).join('\n'));
  if (a.topCommands?.length) note('top_commands', a.topCommands.map((t) => `${t.comm}=${t.tasks}`).join(', '));
  if (a.victim) {
    const v = a.victim;
    note('victim', `${v.comm} (pid ${v.pid}${v.anonRssKb !== undefined ? `, anon-rss ${v.anonRssKb} kB` : ''}${v.fileRssKb !== undefined ? `, file-rss ${v.fileRssKb} kB` : ''})`);
  }

  const endsAt = a.state === 'resolved' ? now : now + 4 * resendIntervalSeconds * 1000;
  const out: AmAlert = { labels, annotations, startsAt: a.startsAt, endsAt: new Date(endsAt).toISOString() };
  if (generatorURL) out.generatorURL = generatorURL;
  return [out];
}

export class AlertmanagerSink implements Sink {
  private readonly endpoint: string;

  constructor(
    readonly name: string,
    readonly config: Extract<SinkConfig, { type: 'alertmanager' }>,
    private readonly now: () => number = Date.now,
  ) {
    this.endpoint = `${config.url.replace(/\/+$/, '')}/api/v2/alerts`;
  }

  get resendIntervalSeconds(): number {
    return this.config.resendIntervalSeconds;
  }

  send(alert: Alert, signal?: AbortSignal): Promise<SendOutcome> {
    // endsAt is computed at send time: an entry that waited in the outbox still gets a fresh one.
    const body = Buffer.from(JSON.stringify(alertmanagerPayload(alert, this.config.resendIntervalSeconds, this.now())), 'utf8');
    return postBody(postOptionsFor(this.config, this.endpoint, body, { 'Content-Type': 'application/json' }, signal));
  }
}
