import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  countCpuList,
  parseCfsQuota,
  parseCpuMax,
  parseFlatKeyed,
  parseIdList,
  parseInteger,
  parseLimit,
  parseV1MemoryLimit,
} from '../../src/cgroup/parsers';

test('parseLimit: "max" or an integer, newline tolerated', () => {
  assert.equal(parseLimit('max\n'), 'max');
  assert.equal(parseLimit('2048\n'), 2048);
  assert.equal(parseLimit('0'), 0);
  assert.throws(() => parseLimit('-1'), /expected "max" or a non-negative integer, got "-1"/);
  assert.throws(() => parseLimit(''), /expected "max"/);
  assert.throws(() => parseLimit('12 34'), /expected "max"/);
});

test('parseInteger and the v1 "unlimited" memory limit', () => {
  assert.equal(parseInteger('8192\n'), 8192);
  assert.throws(() => parseInteger('8k'), /non-negative integer, got "8k"/);
  // This host's memory.limit_in_bytes for an unlimited cgroup.
  assert.equal(parseV1MemoryLimit('9223372036854771712\n'), 'max');
  // 64 KiB pages give another value near 2^63.
  assert.equal(parseV1MemoryLimit('9223372036854710272\n'), 'max');
  assert.equal(parseV1MemoryLimit('268435456\n'), 268435456);
});

test('parseCpuMax: v2 cpu.max', () => {
  assert.deepEqual(parseCpuMax('max 100000\n'), { quotaUs: 'max', periodUs: 100000 });
  assert.deepEqual(parseCpuMax('150000 100000\n'), { quotaUs: 150000, periodUs: 100000 });
  assert.throws(() => parseCpuMax('max'), /expected "<quota\|max> <period>"/);
  assert.throws(() => parseCpuMax('1 2 3'), /expected "<quota\|max> <period>"/);
  assert.throws(() => parseCpuMax('max 0'), /expected/);
  assert.throws(() => parseCpuMax('-1 100000'), /expected/);
});

test('parseCfsQuota: v1 quota -1 is unlimited', () => {
  assert.deepEqual(parseCfsQuota('-1\n', '100000\n'), { quotaUs: 'max', periodUs: 100000 });
  assert.deepEqual(parseCfsQuota('200000\n', '100000\n'), { quotaUs: 200000, periodUs: 100000 });
  assert.throws(() => parseCfsQuota('lots', '100000'), /cpu.cfs_quota_us to be an integer/);
  assert.throws(() => parseCfsQuota('1000', '0'), /positive cpu.cfs_period_us/);
});

test('countCpuList', () => {
  assert.equal(countCpuList('0-3,8,10-11'), 7);
  assert.equal(countCpuList('0-3,8,10-11\n'), 7);
  assert.equal(countCpuList('  0-1 \n'), 2);
  assert.equal(countCpuList('5'), 1);
  assert.equal(countCpuList(''), 0);
  assert.equal(countCpuList('\n'), 0);
  assert.throws(() => countCpuList('0-3,x'), /expected a cpu list like "0-3,8,10-11", got "0-3,x"/);
  assert.throws(() => countCpuList('0-3,,4'), /expected a cpu list/);
  assert.throws(() => countCpuList('4-2'), /ascending/);
});

test('parseFlatKeyed: pids.events, memory.events, memory.oom_control', () => {
  assert.deepEqual(parseFlatKeyed('max 0\n'), { max: 0 });
  assert.deepEqual(parseFlatKeyed('low 0\nhigh 12\nmax 40\noom 2\noom_kill 2\noom_group_kill 0\n'), {
    low: 0,
    high: 12,
    max: 40,
    oom: 2,
    oom_kill: 2,
    oom_group_kill: 0,
  });
  assert.deepEqual(parseFlatKeyed('oom_kill_disable 0\nunder_oom 0\noom_kill 3'), { oom_kill_disable: 0, under_oom: 0, oom_kill: 3 });
  assert.deepEqual(parseFlatKeyed(''), {});
  assert.throws(() => parseFlatKeyed('max\n'), /expected "key value" lines with integer values, got line "max"/);
  assert.throws(() => parseFlatKeyed('max -1\n'), /expected "key value"/);
});

test('parseIdList: tasks and cgroup.threads', () => {
  assert.deepEqual(parseIdList('12\n345\n'), [12, 345]);
  assert.deepEqual(parseIdList(''), []);
  assert.throws(() => parseIdList('12\nabc\n'), /one process id per line, got line "abc"/);
});
