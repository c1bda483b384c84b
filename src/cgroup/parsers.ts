import type { CpuQuota, Limit, MemoryEvents } from './types';

// Pure parsers of cgroup file contents. They throw with what was expected; callers add the path.

function show(text: string): string {
  return JSON.stringify(text.length > 80 ? text.slice(0, 80) + '...' : text);
}

/** A non-negative decimal integer (pids.current, memory.current, memory.failcnt). */
export function parseInteger(text: string): number {
  const s = text.trim();
  if (!/^\d+$/.test(s)) throw new Error(`expected a non-negative integer, got ${show(text)}`);
  return Number(s);
}

/** "max" or a non-negative integer (pids.max, memory.max). */
export function parseLimit(text: string): Limit {
  const s = text.trim();
  if (s === 'max') return 'max';
  if (!/^\d+$/.test(s)) throw new Error(`expected "max" or a non-negative integer, got ${show(text)}`);
  return Number(s);
}

// v1 memory.limit_in_bytes reads PAGE_COUNTER_MAX * PAGE_SIZE (9223372036854771712 on 4 KiB
// pages, other values on larger pages) when unlimited; no real limit comes near 2^62.
const V1_UNLIMITED_BYTES = 2 ** 62;

/** v1 memory.limit_in_bytes: a byte count, or "max" for the kernel's "unlimited" value. */
export function parseV1MemoryLimit(text: string): Limit {
  const n = parseInteger(text);
  return n >= V1_UNLIMITED_BYTES ? 'max' : n;
}

/** v2 cpu.max: "<quota|max> <period>" ("max 100000", "150000 100000"). */
export function parseCpuMax(text: string): CpuQuota {
  const parts = text.trim().split(/\s+/);
  const expected = `expected "<quota|max> <period>" like "max 100000" or "150000 100000", got ${show(text)}`;
  if (parts.length !== 2 || !/^\d+$/.test(parts[1]!)) throw new Error(expected);
  const quota = parts[0]!;
  if (quota !== 'max' && !/^\d+$/.test(quota)) throw new Error(expected);
  const periodUs = Number(parts[1]);
  if (periodUs === 0) throw new Error(expected);
  return { quotaUs: quota === 'max' ? 'max' : Number(quota), periodUs };
}

/** v1 cpu.cfs_quota_us and cpu.cfs_period_us; a negative quota (-1) means unlimited. */
export function parseCfsQuota(quotaText: string, periodText: string): CpuQuota {
  const q = quotaText.trim();
  if (!/^-?\d+$/.test(q)) throw new Error(`expected cpu.cfs_quota_us to be an integer (-1 for unlimited), got ${show(quotaText)}`);
  const periodUs = parseInteger(periodText);
  if (periodUs === 0) throw new Error(`expected a positive cpu.cfs_period_us, got ${show(periodText)}`);
  const quota = Number(q);
  return { quotaUs: quota < 0 ? 'max' : quota, periodUs };
}

/** Number of CPUs in a cpu list ("0-3,8,10-11" -> 7); empty -> 0. */
export function countCpuList(text: string): number {
  const s = text.trim();
  if (s === '') return 0;
  let count = 0;
  for (const part of s.split(',')) {
    const m = /^\s*(\d+)(?:\s*-\s*(\d+))?\s*$/.exec(part);
    if (!m) throw new Error(`expected a cpu list like "0-3,8,10-11", got ${show(text)}`);
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo) throw new Error(`expected ascending ranges in cpu list, got ${show(text)}`);
    count += hi - lo + 1;
  }
  return count;
}

/** Flat-keyed files, one "key value" per line (pids.events, memory.events, memory.oom_control). */
export function parseFlatKeyed(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const s = line.trim();
    if (s === '') continue;
    const m = /^(\S+)\s+(\d+)$/.exec(s);
    if (!m) throw new Error(`expected "key value" lines with integer values, got line ${show(line)}`);
    out[m[1]!] = Number(m[2]);
  }
  return out;
}

/** One id per line (tasks, cgroup.threads, cgroup.procs). */
export function parseIdList(text: string): number[] {
  const out: number[] = [];
  for (const line of text.split('\n')) {
    const s = line.trim();
    if (s === '') continue;
    if (!/^\d+$/.test(s)) throw new Error(`expected one process id per line, got line ${show(line)}`);
    out.push(Number(s));
  }
  return out;
}

function flatKey(rec: Record<string, number>, key: string, text: string): number {
  const v = rec[key];
  if (v === undefined) throw new Error(`expected a "${key} N" line, got ${show(text)}`);
  return v;
}

/** The "max" counter of pids.events or pids.events.local. */
export function parsePidsEventsMax(text: string): number {
  return flatKey(parseFlatKeyed(text), 'max', text);
}

/** v2 memory.events; "max" and "oom_kill" must be there, the rest depends on the kernel. */
export function parseMemoryEvents(text: string): MemoryEvents {
  const r = parseFlatKeyed(text);
  const ev: MemoryEvents = { max: flatKey(r, 'max', text), oomKill: flatKey(r, 'oom_kill', text) };
  if (r.low !== undefined) ev.low = r.low;
  if (r.high !== undefined) ev.high = r.high;
  if (r.oom !== undefined) ev.oom = r.oom;
  // oom_group_kill appeared in Linux 5.17.
  if (r.oom_group_kill !== undefined) ev.oomGroupKill = r.oom_group_kill;
  return ev;
}

/** v1 memory.oom_control: its "oom_kill" count (added in Linux 4.13; older kernels count none). */
export function parseOomControlKills(text: string): number {
  return parseFlatKeyed(text).oom_kill ?? 0;
}
