/**
 * Long loops over every container (the sweep, the usage check, the reconcile) read cgroup
 * files synchronously. Left alone they would hold the event loop for tens of milliseconds at
 * a thousand containers, and an inotify or kmsg wake-up arriving meanwhile would wait: they
 * give the loop back after every `budgetMs` of work instead.
 */
export class Yielder {
  private last = process.hrtime.bigint();
  private readonly budgetNs: bigint;

  constructor(budgetMs = 1) {
    this.budgetNs = BigInt(Math.round(budgetMs * 1e6));
  }

  /** Resolves at once while within budget; otherwise after one turn of the event loop. */
  async maybe(): Promise<void> {
    if (process.hrtime.bigint() - this.last < this.budgetNs) return;
    await new Promise((r) => setImmediate(r));
    this.last = process.hrtime.bigint();
  }
}
