import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { parseKmsgRecord, type KmsgRecord } from './kmsg-parser';

export interface KmsgReaderOptions {
  /** /dev/kmsg, or a FIFO fed with kmsg-format lines (tests). */
  path?: string;
  /** poll mode: how often to look for new records, in ms. The latency bound for kmsg-prompted events. */
  pollIntervalMs?: number;
  /**
   * follow (default): a `cat` child does the blocking reads and we read its pipe, which Node
   * can wait on without a thread: sub-millisecond latency, nothing parked. poll: read a
   * non-blocking fd on a timer (no child process; latency up to pollIntervalMs).
   */
  mode?: 'follow' | 'poll';
  /** The program that follows the device in follow mode (argv [catPath, path], never a shell). */
  catPath?: string;
}

export interface KmsgReaderEvents {
  record: [record: KmsgRecord, receivedAt: bigint];
  /** A line that is not a kmsg record. */
  unparsed: [text: string];
  /** Records were lost (the ring buffer wrapped past us): how many, from the sequence gap. */
  wrapped: [lost: number];
  /** The `cat` child ended and is started again after `delayMs` (its stderr tail). */
  restarted: [why: string, delayMs: number];
  /** A read failed in a way other than EAGAIN/EPIPE; the reader has stopped. */
  error: [err: Error];
  /** Caught up with "now": records written from here on are reported. */
  ready: [];
}

const RECORD_START = /^\d+,\d+,\d+,/;
/** A `cat` child that lived this long was following; one that ended sooner failed. */
const FOLLOW_STABLE_MS = 2000;
/** A child that failed again is started after this, doubling up to the max. */
const FOLLOW_RETRY_MIN_MS = 500;
const FOLLOW_RETRY_MAX_MS = 60_000;
const MAX_READS_PER_TICK = 1000;

/**
 * Follows /dev/kmsg from "now": the records already in the ring buffer at start() (the boot
 * log) are read past, not reported.
 *
 * Why polling a non-blocking fd rather than a blocking read: Node cannot lseek(SEEK_END) or
 * poll() a character device (net.Socket refuses the fd as "FILE"), and a blocking fs.read
 * parks a libuv threadpool thread in the kernel. Measured on Node 20.20 / Linux 6.18: closing
 * the fd does not wake that read, the pending request keeps the event loop alive, and even
 * process.exit() hangs (libuv joins its threadpool at exit) until some record arrives. An
 * O_NONBLOCK fd read until EAGAIN on a timer has none of that: no thread is parked, stop() is
 * immediate, the timer is unref'd, and draining at start is the "seek to end".
 * An idle tick is one read() returning EAGAIN (8 us); the timer wake-up itself is the cost:
 * measured about 1.7% of a core at 10 ms and 0.9% at 25 ms (the default) on the 2-core host.
 */
export class KmsgReader extends EventEmitter<KmsgReaderEvents> {
  readonly path: string;
  readonly pollIntervalMs: number;
  /** Reads that failed with EPIPE: the kernel overwrote records before we read them. */
  wrapped = 0;
  /** Records lost, from sequence-number gaps. */
  lost = 0;
  /** Sequence number of the last record seen (reported or skipped at start). */
  lastSeq: number | null = null;

  readonly mode: 'follow' | 'poll';
  private fd: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private child: ChildProcess | null = null;
  /** `cat` children in a row that ended before FOLLOW_STABLE_MS. */
  private quickExits = 0;
  private stableTimer: NodeJS.Timeout | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private readonly catPath: string;
  private caughtUp = false;
  private pending = '';
  private readonly buf = Buffer.alloc(8192);

  constructor(opts: KmsgReaderOptions = {}) {
    super();
    this.path = opts.path ?? '/dev/kmsg';
    this.pollIntervalMs = opts.pollIntervalMs ?? 25;
    this.mode = opts.mode ?? 'follow';
    this.catPath = opts.catPath ?? 'cat';
  }

  get running(): boolean {
    return this.fd !== null || this.child !== null || this.restartTimer !== null;
  }

  /**
   * Following, not crash-looping: a child that ends at once again and again (the path is a
   * regular file, a device that refuses reads) reads nothing, though it is always restarted.
   */
  get following(): boolean {
    return this.running && this.quickExits < 2;
  }

  start(): void {
    if (this.fd !== null) return;
    try {
      this.fd = fs.openSync(this.path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new Error(`cannot open ${this.path} for reading: ${code ?? (err as Error).message}${code === 'EACCES' || code === 'EPERM' ? ' (needs root or CAP_SYSLOG)' : ''}`);
    }
    this.pending = '';
    this.drain(true);
    this.caughtUp = false;
    if (this.mode === 'follow') {
      // The non-blocking fd has told us where "now" is; the child reads from the start of
      // the ring buffer and onData skips what is not newer than lastSeq.
      this.closeFd();
      this.follow();
      return;
    }
    this.startPolling();
  }

  /** Resolves once records written from now on will be reported. */
  whenReady(): Promise<void> {
    return this.caughtUp ? Promise.resolve() : new Promise((resolve) => this.once('ready', resolve));
  }

  private markReady(): void {
    if (this.caughtUp) return;
    this.caughtUp = true;
    this.emit('ready');
  }

  private startPolling(): void {
    if (this.fd === null) this.fd = fs.openSync(this.path, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    this.markReady();
    this.timer = setInterval(() => this.drain(false), this.pollIntervalMs);
    this.timer.unref();
  }

  private follow(): void {
    this.restartTimer = null;
    const child = spawn(this.catPath, [this.path], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    const spawnedAt = performance.now();
    this.stableTimer = setTimeout(() => {
      this.stableTimer = null;
      if (this.child === child) this.quickExits = 0;
    }, FOLLOW_STABLE_MS);
    this.stableTimer.unref();
    // An empty ring buffer has no start record to reach.
    child.on('spawn', () => this.lastSeq === null && this.markReady());
    let stderr = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => this.onData(chunk, false));
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => (stderr = (stderr + d).slice(-500)));
    child.on('error', (err) => {
      // No cat on this host: fall back to polling rather than go blind.
      this.child = null;
      this.emit('error', new Error(`cannot run ${this.catPath} to follow ${this.path} (${(err as NodeJS.ErrnoException).code ?? err.message}); polling every ${this.pollIntervalMs} ms instead`));
      try {
        this.startPolling();
      } catch (e) {
        this.emit('error', new Error(`cannot open ${this.path}: ${(e as Error).message}`));
      }
    });
    child.on('exit', () => {
      if (this.child !== child) return;
      this.child = null;
      this.pending = '';
      // cat ends on EPIPE when the ring buffer wraps past it: count it and follow again.
      if (/broken pipe/i.test(stderr)) this.wrapped++;
      this.clearStable();
      // One death (killed, a wrap) is followed again at once; a child that keeps ending at
      // once is retried with backoff, not spun on, and reported as not following.
      this.quickExits = performance.now() - spawnedAt < FOLLOW_STABLE_MS ? this.quickExits + 1 : 0;
      const delay = this.quickExits < 2 ? 0 : Math.min(FOLLOW_RETRY_MAX_MS, FOLLOW_RETRY_MIN_MS * 2 ** (this.quickExits - 2));
      // The restart is scheduled before anyone hears of the failure: a listener that sees
      // this reader not running would start a second one beside it.
      this.restartTimer = setTimeout(() => this.follow(), delay);
      this.restartTimer.unref();
      if (this.quickExits === 2) this.emit('error', new Error(`${this.catPath} ${this.path} keeps exiting: ${stderr.trim() || 'no message'}; retrying with backoff`));
      this.emit('restarted', stderr.trim(), delay);
    });
  }

  private clearStable(): void {
    if (this.stableTimer) clearTimeout(this.stableTimer);
    this.stableTimer = null;
  }

  stop(): void {
    this.clearStable();
    this.quickExits = 0;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    if (this.child) {
      const c = this.child;
      this.child = null;
      c.kill('SIGTERM');
    }
    this.closeFd();
  }

  private closeFd(): void {
    if (this.fd !== null) {
      const fd = this.fd;
      this.fd = null;
      try {
        fs.closeSync(fd);
      } catch {
        /* already closed */
      }
    }
  }

  /** Read everything available now. At start, only learn where "now" is. */
  private drain(skip: boolean): void {
    // During a flood, leave the event loop room between ticks; the ring buffer, not us,
    // is the queue (and EPIPE tells when it overflowed).
    for (let reads = 0; this.fd !== null && (skip || reads < MAX_READS_PER_TICK); reads++) {
      let n: number;
      try {
        n = fs.readSync(this.fd, this.buf, 0, this.buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') return;
        // The ring buffer wrapped past our position; the next read returns the oldest
        // record still there, and the sequence gap tells how many we missed.
        if (code === 'EPIPE') {
          this.wrapped++;
          continue;
        }
        const e = new Error(`reading ${this.path}: ${code ?? (err as Error).message}`);
        this.stop();
        this.emit('error', e);
        return;
      }
      // EOF: only a FIFO without a writer; a writer may come back.
      if (n === 0) return;
      this.onData(this.buf.toString('utf8', 0, n), skip);
    }
  }

  // /dev/kmsg gives one record (plus continuation lines) per read; a FIFO may give several
  // records, or part of one, so both go through the same line splitting.
  private onData(chunk: string, skip: boolean): void {
    const text = this.pending + chunk;
    const lines = text.split('\n');
    this.pending = lines.pop() ?? '';
    const receivedAt = process.hrtime.bigint();
    for (const line of lines) {
      if (line === '' || line.startsWith(' ')) continue;
      const record = RECORD_START.test(line) ? parseKmsgRecord(line) : null;
      if (!record) {
        if (!skip) this.emit('unparsed', line);
        continue;
      }
      if (skip) {
        this.lastSeq = record.seq;
        continue;
      }
      if (this.lastSeq !== null) {
        if (record.seq <= this.lastSeq) {
          // The follower replays the ring buffer first; reaching the start position means caught up.
          if (record.seq === this.lastSeq) this.markReady();
          continue;
        }
        this.markReady();
        const gap = record.seq - this.lastSeq - 1;
        if (gap > 0) {
          this.lost += gap;
          this.emit('wrapped', gap);
        }
      }
      this.lastSeq = record.seq;
      this.emit('record', record, receivedAt);
    }
  }
}
