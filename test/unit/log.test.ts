import test from 'node:test';
import assert from 'node:assert/strict';
import { createLogger, LOG_BURST, LOG_MESSAGE_BURST, LOG_WINDOW_MS } from '../../src/log';

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

test('on a journal stream (JOURNAL_STREAM is stdout\'s device:inode) each line carries its syslog priority prefix; elsewhere plain JSON', async (t) => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const { spawnSync } = await import('node:child_process');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-test-journal-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = `const { createLogger } = require(${JSON.stringify(path.resolve(__dirname, '../../src/log.js'))});
    const log = createLogger('debug'); log.debug('d'); log.info('i'); log.warn('w'); log.error('e');`;
  const runWith = (journalStream: (st: import('node:fs').Stats) => string): string => {
    const out = path.join(dir, `out-${Math.random()}`);
    const fd = fs.openSync(out, 'w');
    const env = { ...process.env, JOURNAL_STREAM: journalStream(fs.fstatSync(fd)) };
    const r = spawnSync(process.execPath, ['-e', script], { stdio: ['ignore', fd, 'inherit'], env, timeout: 10_000 });
    fs.closeSync(fd);
    assert.equal(r.status, 0);
    return fs.readFileSync(out, 'utf8');
  };
  const journal = runWith((st) => `${st.dev}:${st.ino}`).trim().split('\n');
  assert.deepEqual(journal.map((l) => l.slice(0, 3)), ['<7>', '<6>', '<4>', '<3>']);
  assert.equal(JSON.parse(journal[2]!.slice(3)).msg, 'w', 'the rest of the line is the JSON as before');
  // Inherited from a parent whose stdout was the journal: ours is a file, no prefix.
  const plain = runWith((st) => `${st.dev}:${st.ino + 1}`).trim().split('\n');
  assert.deepEqual(plain.map((l) => JSON.parse(l).msg), ['d', 'i', 'w', 'e']);
});

test('a storm of one line over many subjects (an OOM storm over thousands of containers) is held to a burst per message and summarised with a count', async (t) => {
  t.mock.timers.enable({ apis: ['setInterval'] });
  const lines: Record<string, unknown>[] = [];
  const log = createLogger('debug', { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) });
  for (let i = 0; i < 3000; i++) log.warn({ cgroup: `/docker/c${i}` }, 'alert');
  for (let i = 0; i < 3; i++) log.warn({ cgroup: '/docker/other' }, 'reading counters failed');
  assert.equal(lines.filter((l) => l.msg === 'alert').length, LOG_MESSAGE_BURST);
  assert.equal(lines.filter((l) => l.msg === 'reading counters failed').length, 3, 'another line is not held back by this one');
  t.mock.timers.tick(LOG_WINDOW_MS);
  const summaries = lines.filter((l) => l.msg === 'log lines suppressed (repeats)');
  assert.equal(summaries.length, 1, JSON.stringify(summaries));
  assert.equal(summaries[0]!.repeatedMsg, 'alert');
  assert.equal(summaries[0]!.suppressed, 3000 - LOG_MESSAGE_BURST);
  assert.equal((summaries[0]!.someSubjects as string[]).length, 10);
  log.warn({ cgroup: '/docker/new' }, 'alert');
  assert.equal(lines.filter((l) => l.msg === 'alert').length, LOG_MESSAGE_BURST + 1, 'a new window lets it through again');
});
