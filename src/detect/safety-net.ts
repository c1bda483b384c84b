/** Every watched cgroup is read by the safety net at least this often. */
export const NET_PERIOD_MS = 60_000;

/**
 * The slow, spread half of the sweep: a ring of every watched cgroup, of which each sweep
 * tick takes the next ceil(n x interval / period), so that each one is read once per period
 * and the reads are spread evenly over it (a burst of ten thousand reads once a minute would
 * hold the event loop and show as a latency spike). A cgroup added meanwhile goes to the end
 * of the ring: it is reached within one period (its baseline was read when it was added).
 * Removal is lazy (the ring is compacted when the cursor wraps), so add and remove stay O(1).
 */
export class SafetyNet {
  /** Completed rounds over the ring; every FULL_EVERY-th round reads every file. */
  rounds = 0;
  private ring: string[] = [];
  private readonly live = new Set<string>();
  private cursor = 0;

  constructor(
    private periodMs = NET_PERIOD_MS,
    private readonly fullEvery = 10,
  ) {}

  get size(): number {
    return this.live.size;
  }

  add(path: string): void {
    if (this.live.has(path)) return;
    this.live.add(path);
    this.ring.push(path);
  }

  delete(path: string): void {
    this.live.delete(path);
  }

  /** The cgroups due at this tick of a sweep running every `intervalMs`; `full` in a full round. */
  take(intervalMs: number): { paths: string[]; full: boolean } {
    const full = this.rounds % this.fullEvery === 0;
    const n = Math.ceil((this.ring.length * Math.min(intervalMs, this.periodMs)) / this.periodMs);
    const paths: string[] = [];
    for (let i = 0; i < n && this.ring.length > 0; i++) {
      const p = this.ring[this.cursor++]!;
      if (this.live.has(p)) paths.push(p);
      if (this.cursor >= this.ring.length) this.wrap();
    }
    return { paths, full };
  }

  private wrap(): void {
    this.cursor = 0;
    this.rounds++;
    // Compact: drop the removed, and a path removed and added again appears once.
    const seen = new Set<string>();
    this.ring = this.ring.filter((p) => this.live.has(p) && !seen.has(p) && seen.add(p));
  }
}
