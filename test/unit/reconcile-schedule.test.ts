/**
 * The reconcile's schedule on the real node-cron and the real clock: an event loop held past a
 * slot (as on a loaded node) runs the reconcile late, never drops it, and nothing reaches
 * stderr outside the JSON log.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../src/log';
import { scheduleReconcile } from '../../src/reconcile-schedule';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const hold = (ms: number): void => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
};
function collect(): { lines: Record<string, unknown>[]; log: ReturnType<typeof createLogger> } {
  const lines: Record<string, unknown>[] = [];
  return { lines, log: createLogger('debug', { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) }) };
}

test('reconcile schedule: a slot passed while the event loop was held still runs (late), and node-cron writes nothing to stderr', async () => {
  const { lines, log } = collect();
  const stderr: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    stderr.push(String(chunk));
    return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
  const runs: number[] = [];
  const task = scheduleReconcile('*/3 * * * * *', () => runs.push(performance.now()), log);
  try {
    // One run at a slot S, then the loop held to S + 5.3 s: slot S + 3 s is 2 s late (node-cron
    // compares whole seconds; its default tolerance is 1 s) and the next slot is 0.7 s away.
    for (let i = 0; i < 400 && runs.length === 0; i++) await sleep(10);
    assert.ok(runs.length >= 1, 'the schedule never ran');
    await sleep(200);
    const before = runs.length;
    const heldAt = performance.now();
    hold(5100);
    // The next slot came and went during the hold; it runs as soon as the loop is free.
    for (let i = 0; i < 100 && runs.length === before; i++) await sleep(10);
    assert.ok(runs.length > before, 'the slot passed during the hold never ran');
    assert.ok(runs[before]! - heldAt >= 5100, 'ran during the hold?');
    assert.ok(runs[before]! - heldAt < 5400, `ran ${Math.round(runs[before]! - heldAt - 5100)} ms after the hold ended: it waited for the next slot`);
    assert.deepEqual(stderr, []);
    assert.deepEqual(lines.filter((l) => (l.level as number) >= 40), []);
  } finally {
    await task.stop();
    await task.destroy();
    process.stderr.write = write;
  }
});

test('reconcile schedule: a hold longer than the gap folds the passed slots into one run, logged at info', async () => {
  const { lines, log } = collect();
  const runs: number[] = [];
  const task = scheduleReconcile('*/2 * * * * *', () => runs.push(performance.now()), log);
  try {
    for (let i = 0; i < 300 && runs.length === 0; i++) await sleep(10);
    assert.ok(runs.length >= 1, 'the schedule never ran');
    const before = runs.length;
    // Slots 2 s (3 s late: passed) and 4 s on (1 s late: run) pass during the hold; the next is 1 s after it.
    hold(5000);
    await sleep(500);
    assert.equal(runs.length, before + 1, 'the slots passed during the hold ran once, not once each');
    const missed = lines.filter((l) => l.msg === 'a reconcile slot passed while the event loop was busy: the next one covers it');
    assert.equal(missed.length, 1, JSON.stringify(lines));
    assert.equal(missed[0]!.level, 30);
  } finally {
    await task.stop();
    await task.destroy();
  }
});
