import test from 'node:test';
import assert from 'node:assert/strict';
import { byUrgency, type ContainerStatus, type StatusReport } from '../../src/status/report';
import { ago, bytes, fit, renderStatus } from '../../src/status/render';

const NOW = Date.parse('2026-12-01T16:00:00Z');
const base = { runtime: 'docker', pidsLimitHits: 0, oomKills: 0, oomEvents: 0 };
const row = (o: Partial<ContainerStatus> & { id: string }): ContainerStatus => ({ cgroupPath: `/docker/${o.id}`, ratio: null, ...base, ...o });

function report(containers: ContainerStatus[]): StatusReport {
  return {
    version: 1,
    at: NOW,
    daemon: { version: '0.1.0', pid: 42, startedAt: NOW - 3 * 3600_000, mode: 'enforce', cgroup: 'v1', host: 'node-1' },
    health: { ok: false, detail: 'kmsg reader on /dev/kmsg is not running', degraded: ['3 cgroup paths cannot be watched (ENOSPC): covered by rescans and the sweep'], sources: { sweep: true, kmsg: false }, watches: { cgroupDirs: 12, inotifyFiles: 0, openFiles: 30 } },
    host: { pidMax: 4194304, tasks: 1234, sumContainersPidsMax: 18432 },
    alerts: { outboxDepth: 2, firing: 1, sinks: [{ name: 'pager', type: 'webhook', delivered: 5, retried: 3, rejected: 0, dropped: 0, depth: 2, lastError: 'HTTP 500' }] },
    containers: [...containers].sort(byUrgency),
  };
}

test('status text: the closest to either limit first, names (else the short id), pod/namespace, current/max, hits, the last event, health', () => {
  const lines = renderStatus(
    report([
      row({ id: 'a'.repeat(64), pidsCurrent: 3, pidsMax: 6144, ratio: 3 / 6144 }),
      row({ id: 'b'.repeat(64), name: 'a-very-long-container-name-that-goes-on', pidsCurrent: 20, pidsMax: 20, ratio: 1, pidsLimitHits: 4913, lastEvent: { kind: 'pids-max', at: NOW - 2000 } }),
      row({ id: 'c'.repeat(64), name: 'web', pod: 'web-7d9f', namespace: 'shop', pidsCurrent: 10, pidsMax: 8192, memoryUsage: 60 << 20, memoryLimit: 64 << 20, ratio: 60 / 64, oomKills: 2, lastEvent: { kind: 'oom-kill', at: NOW - 5 * 60_000 } }),
      row({ id: 'd'.repeat(64), name: 'gone-one', pidsMax: 'max', oomKills: 1, departed: true, lastEvent: { kind: 'oom-kill', at: NOW - 40_000 } }),
    ]),
  );
  assert.deepEqual(lines, [
    'cgwatchdog 0.1.0 on node-1: pid 42, up 3h, enforce, cgroup v1, NOT HEALTHY: kmsg reader on /dev/kmsg is not running',
    'detection: sweep up, kmsg DOWN; watching 12 cgroup dirs, 0 event files, 30 open files',
    'degraded: 3 cgroup paths cannot be watched (ENOSPC): covered by rescans and the sweep',
    "host: 1234 tasks of kernel.pid_max 4194304 (0.0%); containers' pids.max together 18432",
    'alerts: 1 firing, outbox 2 waiting; sinks: pager FAILING (HTTP 500), 5 delivered, 2 waiting',
    '',
    'CONTAINER                POD                               PIDS  PID%        MEMORY  MEM%  PIDHITS OOMKILLS LAST EVENT',
    'a-very-long-container-n… -                                20/20  100%           ?/?     -     4913        0 pids-max 2s ago',
    'web                      shop/web-7d9f                  10/8192    0%       60M/64M   94%        0        2 oom-kill 5m ago',
    'aaaaaaaaaaaa             -                               3/6144    0%           ?/?     -        0        0 -',
    'gone-one                 -                                ?/max     -           ?/?     -        0        1 gone; oom-kill 40s ago',
  ]);
});

test('status text: no containers, and a row limit that counts the rest', () => {
  assert.equal(renderStatus(report([])).at(-1), '(no containers found)');
  const many = Array.from({ length: 5 }, (_, i) => row({ id: `${i}`.repeat(64), pidsCurrent: i, pidsMax: 10, ratio: i / 10 }));
  const lines = renderStatus(report(many), { limit: 2 });
  assert.deepEqual(lines.slice(-3).map((l) => l.slice(0, 12)), ['444444444444', '333333333333', '... and 3 mo']);
});

test('status helpers: fit, bytes, ago', () => {
  assert.equal(fit('abcdef', 4), 'abc…');
  assert.equal(fit('abc', 4), 'abc');
  assert.deepEqual([bytes(0), bytes(1536), bytes(64 << 20), bytes(3 * 2 ** 30)], ['0B', '1.5K', '64M', '3.0G']);
  assert.deepEqual([ago(400), ago(59_000), ago(61_000), ago(7200_000), ago(3 * 86400_000)], ['0s', '59s', '1m', '2h', '3d']);
});
