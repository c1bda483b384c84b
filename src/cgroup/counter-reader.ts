import fs from 'node:fs';
import { ioError, isGoneCode } from './files';
import { UNCHANGED } from './types';
import type { SyncFileReader } from './types';

// The detection sweep reads a few counters of every container every second. Opening and
// closing each file costs more than reading it, so fds stay open: a pread at offset 0 makes
// the kernel regenerate a cgroup seq file (seq_read restarts when the position goes back).

export interface CounterReaderOptions {
  /** Most fds kept open; beyond it reads fall back to open/read/close. Default: from RLIMIT_NOFILE. */
  maxOpenFds?: number;
  /**
   * Keep open only the files pin()ned (read every second or every few): the daemon's. A file
   * read once a minute costs ~15 µs more opened each time than kept open (measured, 6.18),
   * but at ten thousand containers an fd for each of their seven counter files would pass
   * the open-files limit (20000 here) and hold kernel memory for every one.
   */
  pinnedOnly?: boolean;
}

export class CounterReader implements SyncFileReader {
  private readonly fds = new Map<string, number>();
  private maxOpenFds: number;
  private buf = Buffer.allocUnsafe(4096);
  private pinnedOnly: boolean;
  private readonly pinned = new Set<string>();

  constructor(options: CounterReaderOptions = {}) {
    this.maxOpenFds = options.maxOpenFds ?? defaultMaxOpenFds();
    this.pinnedOnly = options.pinnedOnly ?? false;
  }

  /** Keep this file's fd open once read (pinnedOnly). */
  pin(path: string): void {
    this.pinned.add(path);
  }

  /** Read this file by open/read/close from now on; its fd is closed. */
  unpin(path: string): void {
    if (!this.pinned.delete(path)) return;
    const fd = this.fds.get(path);
    if (fd !== undefined) this.drop(path, fd);
  }

  /** Keep every file open (while everything is read every second) or only the pinned ones. */
  setPinnedOnly(on: boolean): void {
    if (on === this.pinnedOnly) return;
    this.pinnedOnly = on;
    if (on) for (const [p, fd] of this.fds) if (!this.pinned.has(p)) this.drop(p, fd);
  }

  get pinnedCount(): number {
    return this.pinned.size;
  }

  /** Number of fds held open now. */
  get openCount(): number {
    return this.fds.size;
  }

  private readonly last = new Map<string, Buffer>();

  /**
   * Like read(), but UNCHANGED when the file holds the same bytes as at this method's last
   * call for it. The sweep's common case (nothing happened) then allocates nothing: no
   * string, no parse, no diff.
   */
  readIfChanged(path: string): string | null | typeof UNCHANGED {
    const fd = this.fds.get(path);
    if (fd === undefined) {
      const text = this.read(path);
      if (text !== null && this.fds.has(path)) this.last.set(path, Buffer.from(text, 'latin1'));
      return text;
    }
    let n: number;
    try {
      n = this.readRaw(fd);
    } catch (err) {
      this.drop(path, fd);
      if (isGoneCode((err as NodeJS.ErrnoException).code)) return null;
      throw ioError('read', path, err);
    }
    const prev = this.last.get(path);
    if (prev !== undefined && prev.length === n && this.buf.compare(prev, 0, n, 0, n) === 0) return UNCHANGED;
    this.last.set(path, Buffer.from(this.buf.subarray(0, n)));
    return this.buf.toString('latin1', 0, n);
  }

  /** The file's current content, or null when it (its cgroup) is gone. */
  read(path: string): string | null {
    const cached = this.fds.get(path);
    if (cached !== undefined) {
      try {
        return this.readFd(cached);
      } catch (err) {
        this.drop(path, cached);
        if (isGoneCode((err as NodeJS.ErrnoException).code)) return null;
        throw ioError('read', path, err);
      }
    }
    let fd: number;
    try {
      fd = fs.openSync(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (isGoneCode(code)) return null;
      // Out of fds: stop caching more, the sweep must go on.
      if ((code === 'EMFILE' || code === 'ENFILE') && this.fds.size > 0) {
        this.maxOpenFds = Math.min(this.maxOpenFds, this.fds.size - 1);
        this.closeOldest();
        return this.read(path);
      }
      throw ioError('open', path, err);
    }
    let text: string;
    try {
      text = this.readFd(fd);
    } catch (err) {
      fs.closeSync(fd);
      if (isGoneCode((err as NodeJS.ErrnoException).code)) return null;
      throw ioError('read', path, err);
    }
    if (this.fds.size < this.maxOpenFds && (!this.pinnedOnly || this.pinned.has(path))) this.fds.set(path, fd);
    else fs.closeSync(fd);
    return text;
  }

  /** Close one file's fd and forget it (O(1): a removed cgroup's files, under churn). */
  forgetFile(path: string): void {
    const fd = this.fds.get(path);
    if (fd !== undefined) this.drop(path, fd);
    this.last.delete(path);
    this.pinned.delete(path);
  }

  /** Close the fds of every file under `dir` (a removed cgroup directory), or of that one file. */
  forget(dir: string): void {
    const prefix = dir.endsWith('/') ? dir : dir + '/';
    for (const [p, fd] of this.fds) {
      if (p === dir || p.startsWith(prefix)) this.drop(p, fd);
    }
    for (const p of this.last.keys()) if (p === dir || p.startsWith(prefix)) this.last.delete(p);
    for (const p of this.pinned) if (p === dir || p.startsWith(prefix)) this.pinned.delete(p);
  }

  close(): void {
    for (const [p, fd] of this.fds) this.drop(p, fd);
  }

  private drop(path: string, fd: number): void {
    this.fds.delete(path);
    this.last.delete(path);
    try {
      fs.closeSync(fd);
    } catch {
      // Already closed: nothing left to release.
    }
  }

  private closeOldest(): void {
    const first = this.fds.entries().next();
    if (!first.done) this.drop(first.value[0], first.value[1]);
  }

  private readFd(fd: number): string {
    const n = this.readRaw(fd); // first: it may replace this.buf with a bigger one
    return this.buf.toString('latin1', 0, n);
  }

  /** Read the whole file into this.buf (pread from 0 regenerates it); returns its length. */
  private readRaw(fd: number): number {
    let total = 0;
    for (;;) {
      const n = fs.readSync(fd, this.buf, total, this.buf.length - total, total);
      total += n;
      if (n === 0 || total < this.buf.length) break;
      // A file longer than the buffer: grow and keep reading where we stopped.
      const bigger = Buffer.allocUnsafe(this.buf.length * 2);
      this.buf.copy(bigger, 0, 0, total);
      this.buf = bigger;
    }
    return total;
  }
}

/**
 * Keep ~7 counter files per container open, as many as the open-files limit allows less a
 * reserve for everything else (sockets, the outbox, podman inspect pipes). Node raises its
 * soft limit to the hard one at start; the systemd unit sets LimitNOFILE.
 */
export function defaultMaxOpenFds(limitsFile = '/proc/self/limits'): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(fs.readFileSync(limitsFile, 'utf8'));
    const soft = m && m[1] !== 'unlimited' ? Number(m[1]) : 1_048_576;
    return Math.max(256, Math.min(soft - 1024, 262_144));
  } catch {
    return 4096;
  }
}
