import type { Readable } from 'node:stream';

/** Calls `onLine` for each line of a stream, with CLOCK_MONOTONIC ns at the chunk's arrival. */
export function onLines(stream: Readable, onLine: (line: string, at: bigint) => void): void {
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const at = process.hrtime.bigint();
    const parts = (pending + chunk).split('\n');
    pending = parts.pop() ?? '';
    for (const l of parts) onLine(l, at);
  });
}

/** A queue of lines with a promise-based take(): for request/answer helpers. */
export class LineQueue {
  private readonly items: { line: string; at: bigint }[] = [];
  private waiters: ((v: { line: string; at: bigint }) => void)[] = [];
  constructor(stream: Readable) {
    onLines(stream, (line, at) => this.push(line, at));
  }
  private push(line: string, at: bigint): void {
    const w = this.waiters.shift();
    if (w) w({ line, at });
    else this.items.push({ line, at });
  }
  take(timeoutMs: number, what: string): Promise<{ line: string; at: bigint }> {
    const have = this.items.shift();
    if (have) return Promise.resolve(have);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(new Error(`no line from ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const w = (v: { line: string; at: bigint }): void => {
        clearTimeout(timer);
        resolve(v);
      };
      this.waiters.push(w);
    });
  }
}
