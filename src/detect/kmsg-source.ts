import { KmsgAssembler, type KmsgEvent, type KmsgRecord, type OomKill } from '../kernel/kmsg-parser';
import { KmsgReader } from '../kernel/kmsg-reader';
import type { Logger } from '../log';
import type { OomVictim } from './event';

/** A kmsg reader that stopped is started again after this, doubling up to the max. */
const KMSG_RETRY_MIN_MS = 1000;
const KMSG_RETRY_MAX_MS = 60_000;

/** What kmsg tells the counter watcher. */
export interface KmsgSink {
  /** The limit of `cgroup` was hit (a rejected fork, or an OOM kill of a task in `taskCgroup`). */
  hit(cgroup: string, kind: 'pids-max' | 'oom-kill', kernelAt: number, taskCgroup?: string): void;
  /** The OOM victim of a kill reported by hit(): pid, command, RSS when the kernel said it. */
  oomVictim(limitCgroup: string, victim: OomVictim, kernelAt: number): void;
}

export interface KmsgStats {
  records: { parsed: number; unparsed: number; wrapped: number };
  /** Times the reader was restarted (its `cat` child died, or it stopped on an error). */
  restarts: number;
}

/**
 * /dev/kmsg as a detection source, supervised: the reader restarts its `cat` child itself; a
 * reader that stopped (an open or read error) is started again here with backoff, and every
 * restart is counted. Meanwhile the sweep counts what kmsg would have prompted. Each record
 * only prompts the counter watcher; an OOM kill's "Killed process" line (its RSS) is paired
 * with the "oom-kill" line before the victim is told.
 */
export class KmsgSource {
  readonly stats: KmsgStats = { records: { parsed: 0, unparsed: 0, wrapped: 0 }, restarts: 0 };
  private reader?: KmsgReader;
  private retry?: NodeJS.Timeout;
  private backoffMs = KMSG_RETRY_MIN_MS;
  private running = false;
  private readonly pendingOom = new Map<number, { rec: OomKill; kernelAt: number; timer: NodeJS.Timeout }>();
  private readonly assembler = new KmsgAssembler();

  constructor(
    private path: string,
    private readonly sink: KmsgSink,
    private readonly log: Logger,
    /** How long an oom-kill line waits for its "Killed process" line (RSS) before going on without it. */
    private readonly victimWaitMs = 100,
  ) {}

  /** Reading the kernel log: a reader whose child keeps ending at once is down, though restarted. */
  get up(): boolean {
    return this.reader?.following === true;
  }

  start(path = this.path): void {
    this.path = path;
    this.running = true;
    this.startReader();
  }

  stop(): void {
    this.running = false;
    if (this.retry) clearTimeout(this.retry);
    this.retry = undefined;
    this.reader?.stop();
    this.reader = undefined;
    for (const p of this.pendingOom.values()) clearTimeout(p.timer);
    this.pendingOom.clear();
  }

  /** Resolves once the reader has caught up with "now" (or false at the timeout). */
  async ready(timeoutMs: number): Promise<boolean> {
    const r = this.reader;
    if (!r?.running) return false;
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([r.whenReady().then(() => true), new Promise<boolean>((res) => (timer = setTimeout(() => res(false), timeoutMs)))]);
    clearTimeout(timer);
    return ok;
  }

  private startReader(): void {
    const r = new KmsgReader({ path: this.path });
    this.reader = r;
    r.on('record', (rec: KmsgRecord) => {
      this.backoffMs = KMSG_RETRY_MIN_MS;
      this.onRecord(rec);
    });
    r.on('unparsed', () => this.stats.records.unparsed++);
    r.on('wrapped', (lost: number) => {
      this.stats.records.wrapped++;
      this.log.warn({ lost }, 'the kernel log wrapped past us: records lost; the counter sweep still counts');
    });
    r.on('restarted', (why: string, delayMs: number) => {
      this.stats.restarts++;
      this.log.warn({ path: this.path, why: why || undefined, restarts: this.stats.restarts, retryInMs: delayMs }, 'kmsg reader child ended: following the kernel log again');
    });
    r.on('error', (err: Error) => {
      this.log.error({ err: err.message, path: this.path }, 'kmsg reader failed; the counter sweep goes on');
      if (!r.running) this.retryLater(r);
    });
    try {
      r.start();
    } catch (err) {
      this.log.error({ err: (err as Error).message, path: this.path, retryInMs: this.backoffMs }, 'cannot read the kernel log; detection goes on through inotify and the sweep, retrying');
      this.retryLater(r);
    }
  }

  private retryLater(r: KmsgReader): void {
    if (this.retry || this.reader !== r || !this.running) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(KMSG_RETRY_MAX_MS, delay * 2);
    this.retry = setTimeout(() => {
      this.retry = undefined;
      if (!this.running || this.reader !== r) return;
      r.removeAllListeners();
      r.stop();
      this.stats.restarts++;
      this.startReader();
    }, delay);
    this.retry.unref();
  }

  /** The kernel's timestamp (µs of CLOCK_MONOTONIC) as ms since epoch. */
  private wallMs(tsUs: number): number {
    const nowUs = Number(process.hrtime.bigint() / 1000n);
    return Date.now() - Math.max(0, nowUs - tsUs) / 1000;
  }

  private onRecord(record: KmsgRecord): void {
    for (const { rec, ev } of this.assembler.feed(record)) this.onEvent(rec, ev);
  }

  private onEvent(rec: KmsgRecord, ev: KmsgEvent): void {
    this.stats.records.parsed++;
    const kernelAt = this.wallMs(rec.tsUs);
    if (ev.type === 'fork-rejected') {
      this.sink.hit(ev.cgroup, 'pids-max', kernelAt);
    } else if (ev.type === 'oom-kill') {
      this.sink.hit(ev.oomMemcg ?? ev.taskMemcg ?? '', 'oom-kill', kernelAt, ev.taskMemcg);
      // The "Killed process" line with the RSS follows within microseconds; wait a little for it.
      const timer = setTimeout(() => this.victimReady(ev.pid), this.victimWaitMs);
      timer.unref();
      this.pendingOom.set(ev.pid, { rec: ev, kernelAt, timer });
    } else if (ev.type === 'oom-killed') {
      this.victimReady(ev.pid, { anonRssKb: ev.anonRssKb, fileRssKb: ev.fileRssKb, shmemRssKb: ev.shmemRssKb, totalVmKb: ev.totalVmKb, comm: ev.comm });
    } else if (ev.type === 'suppressed' && /oom|dump_header/.test(ev.fn)) {
      this.log.warn({ fn: ev.fn, suppressed: ev.count }, 'the kernel rate-limited its OOM messages: victims may go unnamed; the counters still count every kill');
    }
    // After the read it prompted: off the detection path.
    this.log.debug({ kmsg: ev, seq: rec.seq }, 'kmsg record');
  }

  private victimReady(pid: number, rss?: Partial<OomVictim>): void {
    const p = this.pendingOom.get(pid);
    if (!p) return;
    clearTimeout(p.timer);
    this.pendingOom.delete(pid);
    const victim: OomVictim = { pid, comm: p.rec.task, uid: p.rec.uid, oomMemcg: p.rec.oomMemcg, taskMemcg: p.rec.taskMemcg, ...rss };
    // A global OOM (the node's memory, CONSTRAINT_NONE) names no oom_memcg; a cpuset or
    // mempolicy constraint is not a cgroup limit either. Only CONSTRAINT_MEMCG is one.
    if (p.rec.constraint !== 'CONSTRAINT_MEMCG' && p.rec.oomMemcg === undefined) victim.global = true;
    this.sink.oomVictim(p.rec.oomMemcg ?? p.rec.taskMemcg ?? '', victim, p.kernelAt);
  }
}
