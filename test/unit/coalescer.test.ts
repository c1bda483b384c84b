import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Alert } from '../../src/alerts/alert';
import { Coalescer, fingerprintOf, severityOf, type AlertContext } from '../../src/alerts/coalescer';
import type { LimitEvent } from '../../src/detect/event';

const CG = '/system.slice/libpod-3f2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0.scope';
const ID = '3f2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0';

function setup(repeat = 60, resolve = 30) {
  let t = Date.parse('2025-01-01T00:00:00Z');
  const ctx: AlertContext = {
    container: { id: ID, runtime: 'podman', name: 'web-1' },
    current: 6144,
    limit: 6144,
    topCommands: [{ comm: 'python3', tasks: 6100 }],
  };
  const c = new Coalescer({ host: 'h1', repeatIntervalSeconds: repeat, resolveAfterSeconds: resolve, now: () => t, lookup: () => ctx });
  const ev = (count = 1, kind: LimitEvent['kind'] = 'pids-max', cgroupPath = CG): LimitEvent => ({
    kind,
    cgroupPath,
    containerId: ID,
    count,
    source: 'inotify',
    at: t,
  });
  return { c, ev, advance: (ms: number) => (t += ms), now: () => t };
}

test('a burst of 10,000 events in 1 s gives exactly one firing message', () => {
  const { c, ev, advance } = setup();
  const out: Alert[] = [];
  for (let i = 0; i < 10_000; i++) {
    out.push(...c.onEvent(ev()));
    if (i % 100 === 0) {
      advance(10);
      out.push(...c.tick());
    }
  }
  assert.equal(out.length, 1);
  const a = out[0]!;
  assert.equal(a.state, 'firing');
  assert.equal(a.sequence, 1);
  assert.equal(a.severity, 'critical');
  assert.equal(a.counters.eventsSinceLast, 1);
  assert.equal(a.counters.eventsTotal, 1);
  assert.equal(a.summary, `container web-1 (podman ${ID.slice(0, 12)}…) hit its PID limit 6144: 1 fork rejected; top: python3 6100 tasks`);
});

test('updates come at most once per repeat interval, counts add up, resolution after the quiet period', () => {
  const { c, ev, advance } = setup(60, 30);
  const out: Alert[] = [];
  const sentAt: number[] = [];
  let fed = 0;
  let t = 0;
  // 200 s of events every 250 ms, in varying counts, ticking every second.
  for (let step = 0; step < 800; step++) {
    const n = (step % 7) + 1;
    fed += n;
    for (const a of c.onEvent(ev(n))) {
      out.push(a);
      sentAt.push(t);
    }
    advance(250);
    t += 250;
    if (t % 1000 === 0)
      for (const a of c.tick()) {
        out.push(a);
        sentAt.push(t);
      }
  }
  // Quiet: tick until resolved.
  for (let i = 0; i < 40 && out.at(-1)?.state !== 'resolved'; i++) {
    advance(1000);
    t += 1000;
    for (const a of c.tick()) {
      out.push(a);
      sentAt.push(t);
    }
  }
  const firing = out.filter((a) => a.state === 'firing');
  const resolved = out.filter((a) => a.state === 'resolved');
  assert.equal(resolved.length, 1, 'one resolution');
  assert.equal(out.at(-1)!.state, 'resolved');
  // 200 s of events with a 60 s interval: the first message, then updates at 60, 120, 180.
  assert.equal(firing.length, 4);
  for (let i = 1; i < firing.length; i++) assert.ok(sentAt[i]! - sentAt[i - 1]! >= 60_000, 'no two messages within an interval');
  assert.deepEqual(
    out.map((a) => a.sequence),
    out.map((_, i) => i + 1),
  );
  const sum = out.reduce((s, a) => s + a.counters.eventsSinceLast, 0);
  assert.equal(sum, fed, 'sum of eventsSinceLast = events fed');
  assert.equal(out.at(-1)!.counters.eventsTotal, fed);
  for (const a of out) assert.ok(a.counters.eventsTotal <= fed);
  // Resolution comes resolveAfterSeconds after the last event, not earlier.
  const lastEventAt = 800 * 250 - 250;
  assert.ok(sentAt.at(-1)! - lastEventAt >= 30_000 && sentAt.at(-1)! - lastEventAt <= 31_000);
  assert.ok(out.at(-1)!.summary.startsWith('resolved: '));
  assert.ok(out.at(-1)!.endsAt);
  // Fingerprint stable, idempotency keys unique.
  assert.equal(new Set(out.map((a) => a.fingerprint)).size, 1);
  assert.equal(new Set(out.map((a) => a.idempotencyKey)).size, out.length);
  assert.equal(out[0]!.fingerprint, fingerprintOf('h1', 'pids-max', CG));
});

test('a new condition after resolution starts at sequence 1 with a new idempotency key', () => {
  const { c, ev, advance } = setup(60, 10);
  const first = c.onEvent(ev())[0]!;
  advance(11_000);
  const res = c.tick();
  assert.equal(res.length, 1);
  advance(1000);
  const again = c.onEvent(ev(3))[0]!;
  assert.equal(again.sequence, 1);
  assert.equal(again.fingerprint, first.fingerprint);
  assert.notEqual(again.idempotencyKey, first.idempotencyKey);
  assert.equal(again.counters.eventsTotal, 3);
});

test('kinds are separate conditions; resolveNow resolves all alerts of a cgroup at once', () => {
  const { c, ev } = setup();
  assert.equal(c.onEvent(ev(1, 'pids-max')).length, 1);
  assert.equal(c.onEvent(ev(1, 'oom-kill')).length, 1);
  assert.equal(c.onEvent(ev(1, 'memory-max', '/other')).length, 1);
  c.onEvent(ev(5, 'pids-max'));
  const res = c.resolveNow(CG);
  assert.equal(res.length, 2);
  assert.ok(res.every((a) => a.state === 'resolved'));
  const pids = res.find((a) => a.kind === 'pids-max')!;
  assert.equal(pids.counters.eventsSinceLast, 5);
  assert.equal(pids.counters.eventsTotal, 6);
  assert.equal(c.size, 1);
});

test('warnings are raised and cleared by the caller and never resolve on quiet', () => {
  const { c, advance } = setup(60, 10);
  const key = { cgroupPath: CG, kind: 'pids-warning' as const };
  const ctx: AlertContext = { container: { id: ID, runtime: 'podman', name: 'web-1' }, current: 5000, limit: 6144 };
  const fired = c.raise(key, ctx, ID);
  assert.equal(fired.length, 1);
  assert.equal(fired[0]!.severity, 'warning');
  assert.match(fired[0]!.summary, /uses 5000 of its PID limit 6144 \(81%\)/);
  advance(30_000);
  assert.deepEqual(c.tick(), []);
  assert.deepEqual(c.raise(key, { ...ctx, current: 5100 }, ID), []);
  advance(31_000);
  const upd = c.tick();
  assert.equal(upd.length, 1);
  assert.equal(upd[0]!.sequence, 2);
  assert.match(upd[0]!.summary, /5100/);
  advance(600_000);
  assert.deepEqual(c.tick(), [], 'no resolution on quiet');
  const cleared = c.clear(key);
  assert.equal(cleared.length, 1);
  assert.equal(cleared[0]!.state, 'resolved');
  assert.deepEqual(c.clear(key), []);
});

test('severity per kind', () => {
  assert.equal(severityOf('pids-max'), 'critical');
  assert.equal(severityOf('oom-kill'), 'critical');
  assert.equal(severityOf('oom-group-kill'), 'critical');
  assert.equal(severityOf('memory-max'), 'warning');
  assert.equal(severityOf('oom'), 'warning');
  assert.equal(severityOf('memory-high'), 'info');
  assert.equal(severityOf('memory-warning'), 'warning');
  assert.equal(severityOf('host-pids-warning'), 'warning');
});

test('summaries without a name, and for an OOM kill with its victim', () => {
  let t = 0;
  const c = new Coalescer({
    host: 'h1',
    repeatIntervalSeconds: 60,
    resolveAfterSeconds: 30,
    now: () => t,
    lookup: () => ({ container: { id: ID, runtime: 'docker' }, memory: { limitBytes: 512 * 1024 * 1024 } }),
  });
  const a = c.onEvent({
    kind: 'oom-kill',
    cgroupPath: CG,
    containerId: ID,
    count: 1,
    source: 'kmsg',
    at: t,
    victim: { pid: 4242, comm: 'java', anonRssKb: 524288 },
  })[0]!;
  assert.equal(a.summary, `container ${ID.slice(0, 12)}… (docker): 1 process OOM-killed (limit 512 MiB); last: java (pid 4242, anon-rss 512 MiB)`);
  assert.deepEqual(a.victim, { pid: 4242, comm: 'java', anonRssKb: 524288 });
  assert.deepEqual(a.sources, ['kmsg']);
  t += 1;
  const plain = new Coalescer({ host: 'h1', repeatIntervalSeconds: 60, resolveAfterSeconds: 30, now: () => t });
  const b = plain.onEvent({ kind: 'memory-high', cgroupPath: '/user.slice', count: 2, source: 'sweep', at: t })[0]!;
  assert.equal(b.summary, 'cgroup /user.slice was throttled at memory.high ?: 2 times');
  assert.equal(b.severity, 'info');
});

test('an NTP step of the wall clock never stalls updates or resolutions: intervals run on the monotonic clock', () => {
  let wall = Date.parse('2026-12-01T10:00:00Z');
  let mono = 1000;
  const c = new Coalescer({ host: 'h', repeatIntervalSeconds: 10, resolveAfterSeconds: 30, now: () => wall, mono: () => mono });
  const ev = { kind: 'pids-max' as const, cgroupPath: '/docker/x', count: 1, source: 'sweep' as const, at: wall };
  const first = c.onEvent(ev)[0]!;
  wall -= 3600_000; // the clock is stepped back an hour
  mono += 11_000;
  const update = c.onEvent(ev)[0];
  assert.equal(update?.sequence, 2, 'the update is due after 10 s of real time');
  mono += 31_000;
  const [resolved] = c.tick();
  assert.equal(resolved?.state, 'resolved', 'resolved after 30 s of quiet, whatever the wall clock says');
  assert.equal(resolved?.startsAt, first.startsAt, 'times shown stay wall-clock');
});
