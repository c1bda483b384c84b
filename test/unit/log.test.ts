import test from 'node:test';
import assert from 'node:assert/strict';
import { createLogger, LOG_BURST, LOG_WINDOW_MS } from '../../src/log';

test('a storm of one log line is held to a burst per subject and summarised with a count; other subjects and lines go through', async (t) => {
  t.mock.timers.enable({ apis: ['setInterval'] });
  const lines: Record<string, unknown>[] = [];
  const log = createLogger('debug', { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) });
  for (let i = 0; i < 1000; i++) log.warn({ cgroup: '/docker/a' }, 'reading counters failed');
  for (let i = 0; i < 5; i++) log.warn({ cgroup: '/docker/b' }, 'reading counters failed');
  log.info('something else');
  assert.equal(lines.filter((l) => l.cgroup === '/docker/a').length, LOG_BURST);
  assert.equal(lines.filter((l) => l.cgroup === '/docker/b').length, 5);
  assert.ok(lines.some((l) => l.msg === 'something else'));
  t.mock.timers.tick(LOG_WINDOW_MS);
  const summary = lines.find((l) => l.msg === 'log lines suppressed (repeats)');
  assert.deepEqual({ ...summary, time: undefined }, { level: 40, time: undefined, service: 'cgwatchdog', repeatedMsg: 'reading counters failed', subject: '/docker/a', suppressed: 1000 - LOG_BURST, windowMs: LOG_WINDOW_MS, msg: 'log lines suppressed (repeats)' });
  // A new window: the line is let through again.
  log.warn({ cgroup: '/docker/a' }, 'reading counters failed');
  assert.equal(lines.filter((l) => l.cgroup === '/docker/a').length, LOG_BURST + 1);
});
