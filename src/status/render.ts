import type { Limit } from '../cgroup/types';
import type { ContainerStatus, StatusReport } from './report';

// `cgwatchdog status` as text: pure (report in, lines out), so it is tested without a daemon.

/** 12 hex digits, as docker ps shows an id. */
const SHORT_ID = 12;
const COLUMNS: { title: string; width: number; right?: boolean }[] = [
  { title: 'CONTAINER', width: 24 },
  { title: 'POD', width: 24 },
  { title: 'PIDS', width: 13, right: true },
  { title: 'PID%', width: 5, right: true },
  { title: 'MEMORY', width: 13, right: true },
  { title: 'MEM%', width: 5, right: true },
  { title: 'PIDHITS', width: 8, right: true },
  { title: 'OOMKILLS', width: 8, right: true },
  { title: 'LAST EVENT', width: 0 },
];

/** Cut to `width` characters, the last one an ellipsis when something was cut. */
export function fit(s: string, width: number): string {
  return s.length <= width ? s : `${s.slice(0, Math.max(0, width - 1))}…`;
}

/** 1536 -> "1.5K"; powers of 1024, as free -h. */
export function bytes(n: number): string {
  const units = ['B', 'K', 'M', 'G', 'T'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v}B` : `${v < 10 ? v.toFixed(1) : Math.round(v)}${units[i]}`;
}

/** How long ago, in the largest unit that fits: 42s, 5m, 3h, 2d. */
export function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

const pct = (cur: number | undefined, max: Limit | undefined): string => (typeof cur === 'number' && typeof max === 'number' && max > 0 ? `${Math.round((cur / max) * 100)}%` : '-');
const pair = (cur: string | undefined, max: string | undefined): string => `${cur ?? '?'}/${max ?? '?'}`;

/** The name an operator knows it by: its name, else the short id. */
export function displayName(c: ContainerStatus): string {
  return c.name ?? c.id.slice(0, SHORT_ID);
}

function row(cells: string[]): string {
  return COLUMNS.map((col, i) => {
    const v = cells[i] ?? '';
    if (col.width === 0) return v;
    const cut = fit(v, col.width);
    return col.right ? cut.padStart(col.width) : cut.padEnd(col.width);
  })
    .join(' ')
    .trimEnd();
}

function containerRow(c: ContainerStatus, now: number): string {
  const pod = c.pod ? `${c.namespace ? `${c.namespace}/` : ''}${c.pod}` : (c.namespace ?? '-');
  const mem = (v: Limit | undefined): string | undefined => (v === undefined ? undefined : v === 'max' ? 'max' : bytes(v));
  const last = c.lastEvent ? `${c.lastEvent.kind} ${ago(now - c.lastEvent.at)} ago` : '-';
  return row([
    displayName(c),
    pod,
    pair(c.pidsCurrent?.toString(), c.pidsMax?.toString()),
    pct(c.pidsCurrent, c.pidsMax),
    pair(mem(c.memoryUsage), mem(c.memoryLimit)),
    pct(c.memoryUsage, c.memoryLimit),
    String(c.pidsLimitHits),
    String(c.oomKills),
    c.departed ? `gone; ${last}` : last,
  ]);
}

/** The daemon's health and the table, closest to a limit first; `limit` rows at most (the rest counted). */
export function renderStatus(r: StatusReport, opts: { now?: number; limit?: number } = {}): string[] {
  const now = opts.now ?? r.at;
  const d = r.daemon;
  const h = r.health;
  const out: string[] = [];
  out.push(`cgwatchdog ${d.version} on ${d.host}: pid ${d.pid}, up ${ago(now - d.startedAt)}, ${d.mode}, cgroup ${d.cgroup}, ${h.ok ? 'healthy' : `NOT HEALTHY: ${h.detail}`}`);
  const sources = Object.entries(h.sources).map(([s, up]) => `${s} ${up ? 'up' : 'DOWN'}`);
  out.push(`detection: ${sources.join(', ') || 'no source'}; watching ${h.watches.cgroupDirs} cgroup dirs, ${h.watches.inotifyFiles} event files, ${h.watches.openFiles} open files`);
  for (const g of h.degraded) out.push(`degraded: ${g}`);
  const hs = r.host;
  const taskPct = hs.tasks !== undefined && hs.pidMax ? ` (${((hs.tasks / hs.pidMax) * 100).toFixed(1)}%)` : '';
  out.push(`host: ${hs.tasks ?? '?'} tasks of kernel.pid_max ${hs.pidMax ?? '?'}${taskPct}; containers' pids.max together ${hs.sumContainersPidsMax}`);
  const a = r.alerts;
  const sinks = a.sinks.map((s) => `${s.name} ${s.lastError && s.depth > 0 ? `FAILING (${s.lastError})` : 'ok'}, ${s.delivered} delivered, ${s.depth} waiting`);
  out.push(`alerts: ${a.firing} firing, outbox ${a.outboxDepth} waiting${a.outboxWriteError ? ` (disk: ${a.outboxWriteError})` : ''}; sinks: ${sinks.join('; ') || 'none configured'}`);
  out.push('');
  out.push(row(COLUMNS.map((c) => c.title)));
  const limit = opts.limit ?? Infinity;
  for (const c of r.containers.slice(0, limit)) out.push(containerRow(c, now));
  if (r.containers.length === 0) out.push('(no containers found)');
  if (r.containers.length > limit) out.push(`... and ${r.containers.length - limit} more`);
  return out;
}
