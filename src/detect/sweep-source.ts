/**
 * The counter sweep as a detection source: every interval, the counter watcher reads every
 * family it watches (the safety net for what no other source reports). Every FULL_EVERY-th
 * sweep is full (reads every file, retries refused watches); the others may skip what cannot
 * have changed. Knows whether it still runs (a stalled sweep is a dead source).
 */
export class SweepSource {
  static readonly FULL_EVERY = 10;
  sweeps = 0;
  lastMs = 0;
  /** When the last sweep ended, on the monotonic clock (an NTP step must not make it look stalled or fresh); undefined before the first. */
  private lastAt: number | undefined;
  private timer?: NodeJS.Timeout;
  private busy = false;

  constructor(
    private intervalMs: number,
    /** One sweep; `full` every FULL_EVERY-th. */
    private readonly run: (full: boolean) => Promise<void>,
    /** After each sweep, with its duration in seconds. */
    private readonly done: (seconds: number) => void,
    /** Monotonic ms (tests pass their own). */
    private readonly now: () => number = () => performance.now(),
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.sweep(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  setInterval(ms: number): void {
    if (ms === this.intervalMs) return;
    this.intervalMs = ms;
    if (this.timer) {
      this.stop();
      this.start();
    }
  }

  /** Not run for five intervals and five seconds more: the event loop or a read is stuck. */
  stalled(): boolean {
    return this.lastAt !== undefined && this.now() - this.lastAt > this.intervalMs * 5 + 5000;
  }

  /** Ms since the last sweep ended; null before the first. */
  get msSinceLast(): number | null {
    return this.lastAt === undefined ? null : Math.round(this.now() - this.lastAt);
  }

  async sweep(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    const t0 = process.hrtime.bigint();
    try {
      await this.run(this.sweeps % SweepSource.FULL_EVERY === 0);
    } finally {
      this.busy = false;
      this.sweeps++;
      this.lastMs = Number(process.hrtime.bigint() - t0) / 1e6;
      this.lastAt = this.now();
      this.done(this.lastMs / 1000);
    }
  }
}
