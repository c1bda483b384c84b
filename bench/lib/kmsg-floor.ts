import { spawn, type ChildProcess } from 'node:child_process';
import { trackChild } from './cleanup';
import { onLines } from './lines';
import { compile } from './native';
import { sleep } from './stats';

/** The C /dev/kmsg floor reader: arrival time per cgroup named in "fork rejected ... in <path>" / oom-kill lines. */
export class KmsgFloor {
  readonly child: ChildProcess;
  private readonly untrack: () => Promise<void>;
  readonly lines: { at: bigint; msg: string }[] = [];
  private readyP: Promise<void>;
  constructor() {
    this.child = spawn(compile('floor/kmsg-floor'), [], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.untrack = trackChild(this.child, 'kmsg floor');
    let ready!: () => void;
    this.readyP = new Promise((r) => (ready = r));
    onLines(this.child.stdout!, (line) => {
      if (line === 'ready') return ready();
      const sp = line.indexOf(' ');
      this.lines.push({ at: BigInt(line.slice(0, sp)), msg: line.slice(sp + 1) });
    });
  }
  ready(): Promise<void> {
    return Promise.race([this.readyP, sleep(5000).then(() => Promise.reject(new Error('kmsg floor reader not ready')))]);
  }
  /** First line at or after `after` whose message satisfies `pred`, waiting up to timeoutMs. */
  async find(pred: (msg: string) => boolean, after: bigint, timeoutMs: number): Promise<bigint | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const l = this.lines.find((x) => x.at >= after && pred(x.msg));
      if (l) return l.at;
      if (Date.now() > deadline) return null;
      await sleep(5);
    }
  }
  async stop(): Promise<void> {
    await this.untrack();
  }
}

