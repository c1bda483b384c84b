import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventMerger, type Clock } from '../../src/detect/merge';
import type { LimitEvent, OomVictim } from '../../src/detect/event';

class FakeClock implements Clock {
  t = 1_700_000_000_000;
  private timers: Array<{ at: number; fn: () => void; id: number }> = [];
  private seq = 0;
  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.push({ at: this.t + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== h);
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
    }
    this.t = end;
  }
}

const CG = '/libpod_parent/libpod-3f1c';
// From the host's /dev/kmsg (see docs/host-notes.md):
// oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/x,task_memcg=/x,task=python3,pid=2381,uid=0
// Memory cgroup out of memory: Killed process 2381 (python3) total-vm:30956kB, anon-rss:20224kB, file-rss:6620kB, shmem-rss:0kB, UID:0 ...
const victim = (pid: number): OomVictim => ({
  pid,
  comm: 'python3',
  uid: 0,
  totalVmKb: 30956,
  anonRssKb: 20224,
  fileRssKb: 6620,
  shmemRssKb: 0,
  oomMemcg: CG,
  taskMemcg: CG,
});

function setup(opts: { holdMs?: number; mergeWindowMs?: number } = {}) {
  const clock = new FakeClock();
  const out: LimitEvent[] = [];
  const m = new EventMerger((e) => out.push(e), { holdMs: 2000, mergeWindowMs: 50, ...opts, clock });
  return { clock, out, m };
}

test('kmsg first, then the counter: one event with the victim, source kmsg, at once', () => {
  const { clock, out, m } = setup();
  const kAt = clock.now() - 3;
  m.kmsgOom({ cgroupPath: CG, victim: victim(2381), kernelAt: kAt });
  assert.equal(out.length, 0);
  clock.advance(4);
  m.counter({ cgroupPath: CG, containerId: '3f1c', kind: 'oom-kill', count: 1, counter: 1, source: 'inotify', kernelAt: clock.now() - 1 });
  assert.equal(out.length, 1);
  assert.deepEqual(out[0], { kind: 'oom-kill', cgroupPath: CG, containerId: '3f1c', count: 1, counter: 1, source: 'kmsg', at: clock.now(), latencyMs: 3, victim: victim(2381) });
  clock.advance(5000);
  assert.equal(out.length, 1, 'nothing more once the hold expires');
  assert.deepEqual(m.pending(), { counters: 0, kmsg: 0 });
});

test('counter first, then kmsg within the merge window: one event, source inotify', () => {
  const { clock, out, m } = setup();
  m.counter({ cgroupPath: CG, kind: 'oom-kill', count: 1, counter: 4, source: 'inotify', kernelAt: clock.now() - 2 });
  assert.equal(out.length, 0, 'held for the kmsg details');
  clock.advance(10);
  m.kmsgOom({ cgroupPath: CG, victim: victim(77), kernelAt: clock.now() - 12 });
  assert.equal(out.length, 1);
  assert.equal(out[0]!.source, 'inotify');
  assert.equal(out[0]!.victim?.pid, 77);
  assert.equal(out[0]!.count, 1);
  assert.equal(out[0]!.counter, 4);
  assert.equal(out[0]!.latencyMs, 2, 'kernel time is the earliest known, first sight the counter read');
  clock.advance(5000);
  assert.equal(out.length, 1);
});

test('counter only: emitted after the merge window, without a victim; non-OOM kinds at once', () => {
  const { clock, out, m } = setup();
  m.counter({ cgroupPath: CG, kind: 'pids-max', count: 3, counter: 10, source: 'sweep' });
  assert.equal(out.length, 1);
  assert.deepEqual(out[0], { kind: 'pids-max', cgroupPath: CG, count: 3, counter: 10, source: 'sweep', at: clock.now() });
  m.counter({ cgroupPath: CG, kind: 'oom-kill', count: 1, counter: 1, source: 'inotify' });
  clock.advance(49);
  assert.equal(out.length, 1);
  clock.advance(1);
  assert.equal(out.length, 2);
  assert.equal(out[1]!.victim, undefined);
  assert.equal(out[1]!.kind, 'oom-kill');
});

test('a kmsg record late for an already emitted counter is its detail: not counted again', () => {
  const { clock, out, m } = setup();
  m.counter({ cgroupPath: CG, kind: 'oom-kill', count: 1, counter: 1, source: 'inotify' });
  clock.advance(60);
  m.kmsgOom({ cgroupPath: CG, victim: victim(5) });
  clock.advance(3000);
  assert.equal(out.length, 1);
});

test('kmsg only, cgroup gone: the record goes out alone with count 1', () => {
  const { clock, out, m } = setup();
  m.kmsgOom({ cgroupPath: CG, victim: victim(9), kernelAt: clock.now() - 1 });
  clock.advance(5);
  m.cgroupGone(CG); // the prompted read got ENOENT
  assert.equal(out.length, 1);
  assert.deepEqual(out[0], { kind: 'oom-kill', cgroupPath: CG, count: 1, source: 'kmsg', at: clock.now(), latencyMs: 1, victim: victim(9) });
  // A second record for the gone cgroup goes out at once too.
  m.kmsgOom({ cgroupPath: CG, victim: victim(10) });
  assert.equal(out.length, 2);
});

test('kmsg only, nobody says gone: emitted alone after holdMs', () => {
  const { clock, out, m } = setup();
  m.kmsgOom({ cgroupPath: CG, victim: victim(9) });
  clock.advance(1999);
  assert.equal(out.length, 0);
  clock.advance(1);
  assert.equal(out.length, 1);
  assert.equal(out[0]!.count, 1);
  assert.equal(out[0]!.victim?.pid, 9);
});

test('two OOM kills in a row each get their own victim', () => {
  const { clock, out, m } = setup();
  m.kmsgOom({ cgroupPath: CG, victim: victim(100) });
  m.counter({ cgroupPath: CG, kind: 'oom-kill', count: 1, counter: 1, source: 'kmsg' });
  clock.advance(30);
  m.counter({ cgroupPath: CG, kind: 'oom-kill', count: 1, counter: 2, source: 'inotify' });
  clock.advance(5);
  m.kmsgOom({ cgroupPath: CG, victim: victim(101) });
  assert.deepEqual(
    out.map((e) => [e.count, e.counter, e.victim?.pid]),
    [
      [1, 1, 100],
      [1, 2, 101],
    ],
  );
});

test('one read showing two kills, two kmsg records: two events, one victim each, counters 5 and 6', () => {
  const { clock, out, m } = setup();
  m.kmsgOom({ cgroupPath: CG, victim: victim(1) });
  m.kmsgOom({ cgroupPath: CG, victim: victim(2) });
  m.counter({ cgroupPath: CG, kind: 'oom-kill', count: 3, counter: 7, source: 'sweep' });
  clock.advance(50);
  assert.deepEqual(
    out.map((e) => [e.count, e.counter, e.victim?.pid]),
    [
      [1, 5, 1],
      [1, 6, 2],
      [1, 7, undefined],
    ],
  );
  assert.equal(out.reduce((s, e) => s + e.count, 0), 3, 'counts come from the counter');
});

test('a victim in a sub-cgroup of the watched container cgroup merges into the container increase', () => {
  const { out, m } = setup();
  m.kmsgOom({ cgroupPath: `${CG}/inner`, victim: victim(3) });
  m.counter({ cgroupPath: CG, kind: 'oom-kill', count: 1, source: 'inotify' });
  assert.equal(out.length, 1);
  assert.equal(out[0]!.victim?.pid, 3);
  // A different container's record does not merge.
  m.kmsgOom({ cgroupPath: '/libpod_parent/libpod-other', victim: victim(4) });
  m.counter({ cgroupPath: CG, kind: 'oom-kill', count: 1, source: 'inotify' });
  assert.equal(out.length, 1);
});
