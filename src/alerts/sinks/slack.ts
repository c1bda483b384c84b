import type { SinkConfig } from '../../config/schema';
import type { Alert } from '../alert';
import { formatBytes } from '../coalescer';
import { postBody, postOptionsFor, type SendOutcome, type Sink } from './http-post';

// Slack incoming webhook: `text` is the one-liner shown in notifications (and the fallback
// for clients without blocks); `blocks` add the details as fields.

/** Slack mrkdwn needs &, < and > escaped; nothing else. */
export function slackEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function slackText(a: Alert): string {
  const tag = a.state === 'resolved' ? 'RESOLVED' : a.severity.toUpperCase();
  const update = a.state === 'firing' && a.sequence > 1 ? ' (update)' : '';
  return `[${tag}] ${a.host}: ${a.summary}${update}`;
}

export interface SlackBody {
  text: string;
  blocks?: unknown[];
}

export function slackBody(a: Alert): SlackBody {
  const fields: [string, string][] = [
    ['Kind', a.kind],
    ['Severity', a.severity],
    ['Host', a.host],
  ];
  if (a.container.name) fields.push(['Container', a.container.name]);
  if (a.container.id) fields.push(['Container id', a.container.id.slice(0, 12)]);
  if (a.container.runtime) fields.push(['Runtime', a.container.runtime]);
  if (a.container.pod) fields.push(['Pod', `${a.container.namespace ? `${a.container.namespace}/` : ''}${a.container.pod}`]);
  if (a.container.image) fields.push(['Image', a.container.image]);
  fields.push(['Cgroup', a.container.cgroupPath]);
  if (a.counters.limit !== undefined) {
    const memKind = a.kind.startsWith('memory') || a.kind.startsWith('oom');
    const lim = memKind && typeof a.counters.limit === 'number' ? formatBytes(a.counters.limit) : String(a.counters.limit);
    fields.push(['Limit', a.counters.current !== undefined ? `${a.counters.current} / ${lim}` : lim]);
  }
  fields.push(['Events', `${a.counters.eventsSinceLast} since last message, ${a.counters.eventsTotal} in total`]);
  if (a.topCommands?.length) fields.push(['Top commands', a.topCommands.slice(0, 5).map((t) => `${t.comm} ${t.tasks}`).join(', ')]);
  if (a.victim) fields.push(['OOM victim', `${a.victim.comm} (pid ${a.victim.pid})`]);
  fields.push(['Since', a.startsAt]);
  if (a.endsAt) fields.push(['Ended', a.endsAt]);

  const text = slackText(a);
  // Slack allows at most 10 fields per section block.
  const sections: unknown[] = [];
  for (let i = 0; i < fields.length; i += 10) {
    sections.push({
      type: 'section',
      fields: fields.slice(i, i + 10).map(([k, v]) => ({ type: 'mrkdwn', text: `*${k}*\n${slackEscape(v)}` })),
    });
  }
  return {
    text,
    blocks: [{ type: 'section', text: { type: 'mrkdwn', text: slackEscape(text) } }, ...sections],
  };
}

export class SlackSink implements Sink {
  constructor(
    readonly name: string,
    readonly config: SinkConfig,
  ) {}

  send(alert: Alert, signal?: AbortSignal): Promise<SendOutcome> {
    const body = Buffer.from(JSON.stringify(slackBody(alert)), 'utf8');
    return postBody(postOptionsFor(this.config, this.config.url, body, { 'Content-Type': 'application/json' }, signal));
  }
}
