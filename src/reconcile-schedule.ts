import cron, { type ScheduledTask } from 'node-cron';
import type { Logger } from './log';

/**
 * The reconcile's cron task. node-cron 4 drops a slot whose timer fires more than its
 * `missedExecutionTolerance` (1 s by default) late and prints a coloured warning to stderr:
 * on a loaded node (measured: user-mode Linux under load, a 2 s schedule) the reconcile then
 * does not run at all, and the journal gets a line that is not JSON. A late reconcile is what a
 * watchdog wants, so the tolerance is the whole gap to the next slot (a slot later than that
 * is folded into the next one, which runs), and node-cron's messages go through our logger.
 */
const text = (m: string | Error): string => (m instanceof Error ? m.message : m);

export function scheduleReconcile(expression: string, run: () => void, log: Logger): ScheduledTask {
  const task = cron.schedule(expression, run, {
    noOverlap: true,
    missedExecutionTolerance: Number.MAX_SAFE_INTEGER,
    logger: {
      info: (m) => log.info({ from: 'node-cron' }, m),
      warn: (m) => log.warn({ from: 'node-cron' }, m),
      error: (m, err) => log.error({ from: 'node-cron', err: err?.message }, text(m)),
      debug: (m) => log.debug({ from: 'node-cron' }, text(m)),
    },
  });
  // A listener replaces node-cron's own warning. The event loop was held past a whole gap; the
  // next slot's reconcile covers it, so this is information, not a fault.
  task.on('execution:missed', (ctx) => log.info({ slot: ctx.date.toISOString() }, 'a reconcile slot passed while the event loop was busy: the next one covers it'));
  return task;
}
