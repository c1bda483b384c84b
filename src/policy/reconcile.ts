import type { Container } from '../discovery/container';
import { Yielder } from '../yielder';
import { applyPolicy, type ApplyContext, type ApplyResult } from './apply';

/**
 * Apply the policy to many containers with bounded concurrency: at start on a host with
 * thousands of containers, unbounded Promise.all would queue tens of thousands of reads in
 * the threadpool at once and starve everything else.
 */
export async function applyAll(ctx: ApplyContext, containers: Container[], concurrency = 16): Promise<ApplyResult[]> {
  const results: ApplyResult[] = new Array(containers.length);
  let next = 0;
  // The reads are synchronous underneath: without yielding, a reconcile would hold the event
  // loop (and detection) for its whole duration.
  const y = new Yielder();
  const batch: ApplyContext = { ...ctx, ancestorQuotas: ctx.ancestorQuotas ?? new Map() };
  const worker = async (): Promise<void> => {
    while (next < containers.length) {
      const i = next++;
      results[i] = await applyPolicy(batch, containers[i]!);
      await y.maybe();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, containers.length) }, worker));
  return results;
}
