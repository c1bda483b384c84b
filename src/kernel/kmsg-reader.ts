import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import { parseKmsgRecord, type KmsgRecord } from './kmsg-parser';

export interface KmsgReaderOptions {
  /** /dev/kmsg, or a FIFO fed with kmsg-format lines (tests). */
  path?: string;
  /** How often to look for new records, in ms. The latency bound for kmsg-prompted events. */
  pollIntervalMs?: number;
}

export interface KmsgReaderEvents {
  record: [record: KmsgRecord, receivedAt: bigint];
  /** A line that is not a kmsg record. */
  unparsed: [text: string];
  /** Records were lost (the ring buffer wrapped past us): how many, from the sequence gap. */
  wrapped: [lost: number];
  /** A read failed in a way other than EAGAIN/EPIPE; the reader has stopped. */
  error: [err: Error];
}

const RECORD_START = /^\d+,\d+,\d+,/;
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

  private fd: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private pending = '';
  private readonly buf = Buffer.alloc(8192);

  constructor(opts: KmsgReaderOptions = {}) {
    super();
    this.path = opts.path ?? '/dev/kmsg';
    this.pollIntervalMs = opts.pollIntervalMs ?? 25;
  }

  get running(): boolean {
    return this.fd !== null;
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
    this.timer = setInterval(() => this.drain(false), this.pollIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
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
        if (record.seq <= this.lastSeq) continue;
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
