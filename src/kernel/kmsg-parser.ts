// /dev/kmsg records (Documentation/ABI/testing/dev-kmsg):
//   "<prefix>,<seq>,<timestamp_us>,<flags>[,more];<message>\n" then optional " KEY=value\n"
// continuation lines (device dictionary), which we ignore. <prefix> is syslog's
// (facility << 3) | level.

export interface KmsgRecord {
  /** Syslog level, 0 (emerg) .. 7 (debug). */
  priority: number;
  facility: number;
  seq: number;
  /** Microseconds since boot, CLOCK_MONOTONIC (not wall time). */
  tsUs: number;
  message: string;
  /** Flag "c": a continuation of the previous record (a pr_cont fragment a kernel logged as a record of its own). */
  cont?: boolean;
}

const HEADER = /^(\d+),(\d+),(\d+),([^;,]*)[^;]*;/;

/** One record; null when the text is not a kmsg record. Pure. */
export function parseKmsgRecord(text: string): KmsgRecord | null {
  const m = HEADER.exec(text);
  if (!m) return null;
  const prefix = Number(m[1]);
  const seq = Number(m[2]);
  const tsUs = Number(m[3]);
  if (!Number.isSafeInteger(prefix) || !Number.isSafeInteger(seq) || !Number.isSafeInteger(tsUs)) return null;
  const rest = text.slice(m[0].length);
  const nl = rest.indexOf('\n');
  const r: KmsgRecord = { priority: prefix & 7, facility: prefix >> 3, seq, tsUs, message: nl === -1 ? rest : rest.slice(0, nl) };
  if (m[4]!.includes('c')) r.cont = true;
  return r;
}

export interface ForkRejected {
  type: 'fork-rejected';
  /** Path of the cgroup whose pids.max refused the fork, relative to the pids hierarchy. */
  cgroup: string;
}

export interface OomKill {
  type: 'oom-kill';
  constraint: string;
  /** The cgroup whose limit was hit; absent for a global OOM. */
  oomMemcg?: string;
  /** The victim's own cgroup. */
  taskMemcg?: string;
  task: string;
  pid: number;
  uid: number;
}

export interface OomKilled {
  type: 'oom-killed';
  /** "Memory cgroup out of memory", "Out of memory", ...; absent on kernels before 5.1. */
  reason?: string;
  pid: number;
  comm: string;
  totalVmKb: number;
  anonRssKb: number;
  fileRssKb: number;
  shmemRssKb?: number;
  uid?: number;
  pgtablesKb?: number;
  oomScoreAdj?: number;
}

export interface OomHeader {
  type: 'memcg-oom-header';
  /** The task whose allocation started the OOM (not necessarily the victim). */
  comm: string;
  gfpMask: string;
  order: number;
  oomScoreAdj: number;
}

/** Kernels before 4.19 name the cgroups in this line instead of in "oom-kill:". */
export interface OomMemcgLegacy {
  type: 'oom-memcg-legacy';
  taskMemcg: string;
  oomMemcg: string;
}

/** printk_ratelimited dropped messages of a kernel function (the OOM dump, say). */
export interface Suppressed {
  type: 'suppressed';
  fn: string;
  count: number;
}

export type KmsgEvent = ForkRejected | OomKill | OomKilled | OomHeader | OomMemcgLegacy | Suppressed;

// Printed once per cgroup (pr_cont_cgroup_path after a pr_info, Linux 4.3+); the path may
// hold any character but a newline, so take the rest of the line.
const FORK_REJECTED = /^cgroup: fork rejected by pids controller in (\/.*)$/;

// dump_oom_summary (Linux 4.19+). Keys come in a fixed order, but values (cgroup paths,
// node lists like "0,2-3", the comm) can hold commas, so each value is matched lazily up to
// the next known key and the tail is anchored on ",pid=N,uid=N". A global OOM prints
// ",global_oom" where a memcg OOM prints ",oom_memcg=...".
const OOM_KILL =
  /^oom-kill:constraint=([^,]*),nodemask=(.*?)(?:,cpuset=(.*?),mems_allowed=(.*?))?(?:,oom_memcg=(.*?)|,global_oom)?(?:,task_memcg=(.*?))?,task=(.*),pid=(\d+),uid=(\d+)$/;

// __oom_kill_process. The comm may hold spaces and parentheses, hence the greedy match up to
// ") total-vm:". Fields after file-rss arrived over time (shmem-rss 4.5, UID and pgtables
// 5.x, oom_score_adj 5.9). Not anchored at the start: syslog copies carry a prefix.
const OOM_KILLED =
  /(?:^|\s|^(.*?): )Killed process (\d+) \((.*)\) total-vm:(\d+)kB, anon-rss:(\d+)kB, file-rss:(\d+)kB(?:, shmem-rss:(\d+)kB)?(?:,? UID:(\d+))?(?: pgtables:(\d+)kB)?(?: oom_score_adj:(-?\d+))?/;

const OOM_HEADER = /^(.*) invoked oom-killer: gfp_mask=(0x[0-9a-f]+)(?:\([^)]*\))?, order=(-?\d+), oom_score_adj=(-?\d+)/;

const LEGACY_TASK_IN = /^Task in (\S.*) killed as a result of limit of (\S.*)$/;

// ___ratelimit(): "<function>: N callbacks suppressed".
const SUPPRESSED = /^(\S+): (\d+) callbacks suppressed$/;

/** What a kmsg message says about a limit hit; null for anything else. Pure. */
export function classifyKmsg(message: string): KmsgEvent | null {
  let m = FORK_REJECTED.exec(message);
  if (m) return { type: 'fork-rejected', cgroup: m[1] };

  m = OOM_KILL.exec(message);
  if (m) {
    const ev: OomKill = { type: 'oom-kill', constraint: m[1], task: m[7], pid: Number(m[8]), uid: Number(m[9]) };
    if (m[5] !== undefined) ev.oomMemcg = m[5];
    if (m[6] !== undefined) ev.taskMemcg = m[6];
    return ev;
  }

  m = OOM_KILLED.exec(message);
  if (m) {
    const ev: OomKilled = {
      type: 'oom-killed',
      pid: Number(m[2]),
      comm: m[3],
      totalVmKb: Number(m[4]),
      anonRssKb: Number(m[5]),
      fileRssKb: Number(m[6]),
    };
    if (m[1] !== undefined && m[1] !== '') ev.reason = m[1];
    if (m[7] !== undefined) ev.shmemRssKb = Number(m[7]);
    if (m[8] !== undefined) ev.uid = Number(m[8]);
    if (m[9] !== undefined) ev.pgtablesKb = Number(m[9]);
    if (m[10] !== undefined) ev.oomScoreAdj = Number(m[10]);
    return ev;
  }

  m = OOM_HEADER.exec(message);
  if (m) return { type: 'memcg-oom-header', comm: m[1], gfpMask: m[2], order: Number(m[3]), oomScoreAdj: Number(m[4]) };

  m = LEGACY_TASK_IN.exec(message);
  if (m) return { type: 'oom-memcg-legacy', taskMemcg: m[1], oomMemcg: m[2] };

  m = SUPPRESSED.exec(message);
  if (m) return { type: 'suppressed', fn: m[1], count: Number(m[2]) };

  return null;
}

/** Records of one OOM in pre-4.19 kernels are this close together (µs of kernel time). */
const LEGACY_PAIR_US = 1_000_000;

/**
 * From records to events, across records: joins a pr_cont fragment to the line it continues
 * (older kernels logged "cgroup: fork rejected by pids controller in " and the path as two
 * records, the second flagged "c"), and on kernels before 4.19, which print no "oom-kill:"
 * line, makes one from "Task in X killed as a result of limit of Y" and the "Killed
 * process" line that follows. Pure: no I/O, no clock but the records' own.
 */
export class KmsgAssembler {
  private held?: KmsgRecord;
  private legacy?: { ev: OomMemcgLegacy; tsUs: number };

  /** One record in; the events it completes out, in order, each with the record that carried it. */
  feed(rec: KmsgRecord): { rec: KmsgRecord; ev: KmsgEvent }[] {
    const out: { rec: KmsgRecord; ev: KmsgEvent }[] = [];
    if (this.held) {
      const held = this.held;
      this.held = undefined;
      if (rec.cont) return this.complete({ ...held, message: held.message + rec.message }, out);
      this.complete(held, out);
    }
    if (/^cgroup: fork rejected by pids controller in $/.test(rec.message)) {
      this.held = rec;
      return out;
    }
    return this.complete(rec, out);
  }

  private complete(rec: KmsgRecord, out: { rec: KmsgRecord; ev: KmsgEvent }[]): { rec: KmsgRecord; ev: KmsgEvent }[] {
    const ev = classifyKmsg(rec.message);
    if (!ev) return out;
    if (ev.type === 'oom-memcg-legacy') {
      this.legacy = { ev, tsUs: rec.tsUs };
    } else if (ev.type === 'oom-kill') {
      this.legacy = undefined;
    } else if (ev.type === 'oom-killed' && this.legacy && rec.tsUs - this.legacy.tsUs <= LEGACY_PAIR_US) {
      const l = this.legacy.ev;
      this.legacy = undefined;
      out.push({ rec, ev: { type: 'oom-kill', constraint: 'CONSTRAINT_MEMCG', oomMemcg: l.oomMemcg, taskMemcg: l.taskMemcg, task: ev.comm, pid: ev.pid, uid: ev.uid ?? 0 } });
    }
    out.push({ rec, ev });
    return out;
  }
}
