/**
 * Helpers for scripts that test/helpers/uml.ts runs inside user-mode Linux.
 * The init script (test/uml/init.sh) sets CGWD_UML=1, CGWD_CGROUP_ROOT (a cgroup2 mount with
 * +pids +memory enabled at its root) and CGWD_OUT (a read-write host directory).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const RESULTS_FILE = 'results.jsonl';

export function inUml(): boolean {
  return process.env.CGWD_UML === '1';
}

function need(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: this script must run inside UML (test/helpers/uml.ts)`);
  return v;
}

/** The cgroup2 mount point inside UML (/run/cg). */
export function cgroupRoot(): string {
  return need('CGWD_CGROUP_ROOT');
}

/** The read-write host directory mounted inside UML. */
export function outDir(): string {
  return need('CGWD_OUT');
}

/**
 * Append one result as a JSON line to $CGWD_OUT/results.jsonl and fsync it, so it is on the
 * host even if the script dies right after (UML halts with `halt -f`).
 */
export function emit(obj: Record<string, unknown>): void {
  const fd = fs.openSync(path.join(outDir(), RESULTS_FILE), 'a');
  try {
    fs.writeSync(fd, JSON.stringify(obj) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export interface KmsgRecord {
  priority: number;
  seq: number;
  /** microseconds since boot (kernel clock) */
  tsUs: number;
  message: string;
}

/**
 * Read every record currently in the kernel log buffer (/dev/kmsg), non-blocking.
 * One read(2) on /dev/kmsg returns one record.
 */
export function readKmsg(): KmsgRecord[] {
  const fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  const out: KmsgRecord[] = [];
  const buf = Buffer.alloc(16384);
  try {
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') break;
        if (code === 'EPIPE') continue; // records were overwritten; the next read goes on
        throw e;
      }
      if (n <= 0) break;
      const rec = buf.toString('utf8', 0, n);
      const semi = rec.indexOf(';');
      if (semi < 0) continue;
      const [prio, seq, ts] = rec.slice(0, semi).split(',');
      // The message ends at the first newline; continuation lines (" KEY=value") follow.
      const message = rec.slice(semi + 1).split('\n')[0] ?? '';
      out.push({ priority: Number(prio) & 7, seq: Number(seq), tsUs: Number(ts), message });
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

/** Milliseconds from a monotonic clock. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Parse a flat-keyed cgroup file such as pids.events or memory.events into numbers. */
export function readKeyed(file: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined) out[k] = Number(v);
  }
  return out;
}
