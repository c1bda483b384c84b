import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { classifyKmsg, KmsgAssembler, parseKmsgRecord, type KmsgRecord } from '../../src/kernel/kmsg-parser';

// Fixtures live in the source tree; tests run from dist/test/unit.
const fixtures = path.resolve(__dirname, '../../../test/fixtures/kmsg');
const fixture = (name: string) => fs.readFileSync(path.join(fixtures, name), 'utf8');

/** Split a file of raw /dev/kmsg reads (one record per line) into records. */
function records(text: string): KmsgRecord[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const r = parseKmsgRecord(l + '\n');
      assert.ok(r, `fixture line does not parse: ${l}`);
      return r;
    });
}

describe('parseKmsgRecord', () => {
  it('reads the fields of a real record', () => {
    assert.deepEqual(parseKmsgRecord('6,726,509768760,-;cgroup: fork rejected by pids controller in /cgwd-test-sample4071\n'), {
      priority: 6,
      facility: 0,
      seq: 726,
      tsUs: 509768760,
      message: 'cgroup: fork rejected by pids controller in /cgwd-test-sample4071',
    });
  });
  it('splits facility and level, and accepts extra header fields', () => {
    const r = parseKmsgRecord('14,1002,123,c,caller=T42;user wrote this\n');
    assert.equal(r?.facility, 1);
    assert.equal(r?.priority, 6);
    assert.equal(r?.message, 'user wrote this');
  });
  it('ignores continuation (dictionary) lines', () => {
    const r = parseKmsgRecord('6,339,5140900,-;NET: Registered protocol family 10\n SUBSYSTEM=net\n DEVICE=+net:lo\n');
    assert.equal(r?.message, 'NET: Registered protocol family 10');
  });
  it('keeps a message with semicolons and no trailing newline', () => {
    assert.equal(parseKmsgRecord('4,1,2,-;a;b')?.message, 'a;b');
  });
  it('returns null for garbage', () => {
    for (const bad of ['', 'hello', '6,abc,1,-;x', '6,1,2,-', ' SUBSYSTEM=net', '6,1;x']) assert.equal(parseKmsgRecord(bad), null, bad);
  });
});

describe('classifyKmsg on records from this host (6.18, v1 memcg and pids)', () => {
  it('memcg OOM: header, oom-kill summary and the kill, in that order', () => {
    const events = records(fixture('host-6.18-memcg-oom.txt'))
      .map((r) => classifyKmsg(r.message))
      .filter((e) => e !== null);
    assert.deepEqual(events, [
      { type: 'memcg-oom-header', comm: 'python3', gfpMask: '0xcc0', order: 0, oomScoreAdj: 0 },
      {
        type: 'oom-kill',
        constraint: 'CONSTRAINT_MEMCG',
        oomMemcg: '/cgwd-test-sample4071',
        taskMemcg: '/cgwd-test-sample4071',
        task: 'python3',
        pid: 7949,
        uid: 0,
      },
      {
        type: 'oom-killed',
        reason: 'Memory cgroup out of memory',
        pid: 7949,
        comm: 'python3',
        totalVmKb: 30956,
        anonRssKb: 20224,
        fileRssKb: 6688,
        shmemRssKb: 0,
        uid: 0,
        pgtablesKb: 104,
        oomScoreAdj: 0,
      },
    ]);
  });
  it('fork rejected by the pids controller', () => {
    const [r] = records(fixture('host-6.18-fork-rejected.txt'));
    assert.deepEqual(classifyKmsg(r.message), { type: 'fork-rejected', cgroup: '/cgwd-test-sample4071' });
  });
  it('a podman container path, as in the host notes', () => {
    const id = 'a'.repeat(64);
    assert.deepEqual(classifyKmsg(`cgroup: fork rejected by pids controller in /libpod_parent/libpod-${id}`), {
      type: 'fork-rejected',
      cgroup: `/libpod_parent/libpod-${id}`,
    });
  });
});

describe("classifyKmsg on cAdvisor's oomparser samples (older kernels)", () => {
  const lines = fixture('cadvisor-oomparser.txt').split('\n').filter((l) => l !== '');
  const byStart = (s: string) => lines.filter((l) => l.startsWith(s));

  it('oom-kill with a Kubernetes pod (the space in oom_memcg is in the sample)', () => {
    assert.deepEqual(classifyKmsg(byStart('oom-kill:')[0]), {
      type: 'oom-kill',
      constraint: 'CONSTRAINT_MEMCG',
      oomMemcg: '/kubepods/burstable/podfbdfe8e3-1c87-4ff2-907 c-b2ec8e25d012',
      taskMemcg: '/kubepods/burstable/podfbdfe8e3-1c87-4ff2-907c-b2ec8e25d012/ef807430361e6e82b45db92e2e9b6fbec98f419b12c591e655c1a725565e73a8',
      task: 'manager',
      pid: 966,
      uid: 0,
    });
  });
  it('old "Killed process" lines without a reason prefix, with and without shmem-rss', () => {
    assert.deepEqual(classifyKmsg(byStart('Killed process 19667')[0]), {
      type: 'oom-killed',
      pid: 19667,
      comm: 'evil-program2',
      totalVmKb: 1460016,
      anonRssKb: 1414008,
      fileRssKb: 4,
    });
    const k = classifyKmsg(byStart('Killed process 1381')[0]);
    assert.equal(k?.type === 'oom-killed' && k.shmemRssKb, 0);
  });
  it('a syslog copy with a comm holding spaces', () => {
    const k = classifyKmsg(byStart('Jan 21')[0]);
    assert.equal(k?.type, 'oom-killed');
    assert.equal(k?.type === 'oom-killed' && k.comm, 'Plex Media Server');
    assert.equal(k?.type === 'oom-killed' && k.pid, 1234);
  });
  it('legacy "Task in ... killed as a result of limit of ..."', () => {
    assert.deepEqual(classifyKmsg(byStart('Task in /mem2')[0]), { type: 'oom-memcg-legacy', taskMemcg: '/mem2', oomMemcg: '/mem3' });
  });
  it('oom-killer headers, with and without the decoded gfp flags', () => {
    assert.deepEqual(classifyKmsg(byStart('ruby invoked')[0]), { type: 'memcg-oom-header', comm: 'ruby', gfpMask: '0x201da', order: 0, oomScoreAdj: 0 });
    assert.equal(classifyKmsg(byStart('gunpowder-memho invoked')[0])?.type, 'memcg-oom-header');
  });
  it('"Kill process ... or sacrifice child", oom_reaper and unrelated lines are not kills', () => {
    for (const l of [...byStart('Memory cgroup out of memory: Kill process'), ...byStart('oom_reaper'), ...byStart('docker0')]) {
      assert.equal(classifyKmsg(l), null, l);
    }
  });
});

describe('classifyKmsg edge cases', () => {
  for (const comm of ['foo', 'python3.4', 'Plex Media Server', 'x86_64-pc-linux-gnu-c++-5.4.0', '[', '()', '"with quotes"', 'a) (b']) {
    it(`comm ${JSON.stringify(comm)}`, () => {
      const k = classifyKmsg(
        `Out of memory: Killed process 1234 (${comm}) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:1000 pgtables:5kB oom_score_adj:-998`,
      );
      assert.deepEqual(k, {
        type: 'oom-killed',
        reason: 'Out of memory',
        pid: 1234,
        comm,
        totalVmKb: 1,
        anonRssKb: 2,
        fileRssKb: 3,
        shmemRssKb: 4,
        uid: 1000,
        pgtablesKb: 5,
        oomScoreAdj: -998,
      });
    });
  }
  it('global OOM: no oom_memcg; node lists with commas', () => {
    assert.deepEqual(
      classifyKmsg('oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0-1,3,global_oom,task_memcg=/system.slice/a.service,task=java,pid=77,uid=998'),
      { type: 'oom-kill', constraint: 'CONSTRAINT_NONE', taskMemcg: '/system.slice/a.service', task: 'java', pid: 77, uid: 998 },
    );
  });
  it('a cgroup path with a comma', () => {
    const k = classifyKmsg('oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,b,task_memcg=/a,b/c,task=x,y,pid=5,uid=0');
    assert.deepEqual(k, { type: 'oom-kill', constraint: 'CONSTRAINT_MEMCG', oomMemcg: '/a,b', taskMemcg: '/a,b/c', task: 'x,y', pid: 5, uid: 0 });
  });
  it('other messages are null', () => {
    for (const m of ['', 'cgroup: fork rejected by pids controller in', 'memory: usage 20480kB, limit 20480kB, failcnt 50', 'Killed process abc']) {
      assert.equal(classifyKmsg(m), null, m);
    }
  });
});

describe('KmsgAssembler: the kernel\'s words across versions', () => {
  const feed = (lines: string[]) => {
    const a = new KmsgAssembler();
    return lines.flatMap((l) => a.feed(parseKmsgRecord(l + '\n')!)).map((x) => x.ev);
  };

  it('a fork rejection whose path came as a continuation record (flag c) is one event', () => {
    assert.deepEqual(feed(['6,2001,5000,-;cgroup: fork rejected by pids controller in ', '6,2002,5001,c;/docker/abc']), [{ type: 'fork-rejected', cgroup: '/docker/abc' }]);
    // Not continued: the fragment alone says nothing; the next record stands on its own.
    assert.deepEqual(feed(['6,2001,5000,-;cgroup: fork rejected by pids controller in ', '6,2002,5001,-;cgroup: fork rejected by pids controller in /x']), [{ type: 'fork-rejected', cgroup: '/x' }]);
  });

  it('before 4.19 (no "oom-kill:" line): "Task in X killed as a result of limit of Y" and "Killed process" make the kill, with the cgroups', () => {
    // mm/memcontrol.c mem_cgroup_print_oom_info and mm/oom_kill.c oom_kill_process, Linux 4.14.
    const evs = feed([
      '6,1001,100000000,-;Task in /docker/abc/init.scope killed as a result of limit of /docker/abc',
      '6,1002,100000100,-;memory: usage 32768kB, limit 32768kB, failcnt 50',
      '3,1003,100000300,-;Memory cgroup out of memory: Kill process 4242 (java) score 1000 or sacrifice child',
      '3,1004,100000400,-;Killed process 4242 (java) total-vm:1000kB, anon-rss:30000kB, file-rss:100kB, shmem-rss:0kB',
    ]);
    assert.deepEqual(evs.map((e) => e.type), ['oom-memcg-legacy', 'oom-kill', 'oom-killed']);
    assert.deepEqual(evs[1], { type: 'oom-kill', constraint: 'CONSTRAINT_MEMCG', oomMemcg: '/docker/abc', taskMemcg: '/docker/abc/init.scope', task: 'java', pid: 4242, uid: 0 });
  });

  it('a modern kernel\'s own "oom-kill:" line is not doubled by the legacy pairing', () => {
    const evs = feed([
      '6,1,10,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/m,task_memcg=/m,task=x,pid=9,uid=0',
      '3,2,11,-;Memory cgroup out of memory: Killed process 9 (x) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0',
    ]);
    assert.deepEqual(evs.map((e) => e.type), ['oom-kill', 'oom-killed']);
  });

  it('"callbacks suppressed" is recognised (the OOM dump was rate-limited)', () => {
    assert.deepEqual(feed(['4,3001,6000,-;oom_kill_process: 7 callbacks suppressed']), [{ type: 'suppressed', fn: 'oom_kill_process', count: 7 }]);
  });
});
