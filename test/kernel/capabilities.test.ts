/**
 * The capability probe on this host's kernel (6.18, cgroup v1 pids): the opposite of what
 * UML 6.1 says on v1 (test/uml/capabilities.test.ts), and what the daemon does with it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { detectLayout, openCgroupFs } from '../../src/cgroup/index';
import { inotifyFor, probeCapabilities } from '../../src/kernel/capabilities';
import { isRoot, need } from '../helpers/prereq';
import { config, daemon, isMsg, stateDir, testRoot } from '../helpers/v1-daemon';

test('host v1 kernel: a rejected fork is logged to kmsg and never notified through inotify; the probe leaves nothing behind', async (t) => {
  need(isRoot(), 'root (the probe makes a cgroup)');
  const layout = await detectLayout('/proc', '/sys/fs/cgroup');
  const cgroups = openCgroupFs(layout, '/sys/fs/cgroup');
  const caps = await probeCapabilities({ cgroups, procRoot: '/proc', kmsgPath: '/dev/kmsg', canWrite: true });
  t.diagnostic(JSON.stringify(caps));
  assert.equal(cgroups.version, 'v1');
  assert.equal(caps.pidsInotify, 'no');
  assert.equal(caps.pidsKmsg, 'yes');
  assert.equal(caps.memoryInotify, 'unknown', 'v1 has no memory.high to probe with');
  assert.equal(caps.pidsEventsLocal, false);
  assert.deepEqual(inotifyFor(caps, 'v1', true), { pids: false, memory: false });
  assert.deepEqual(fs.readdirSync(cgroups.dir('pids', '/')).filter((n) => n.startsWith('cgwatchdog-probe')), []);
  const none = await probeCapabilities({ cgroups, procRoot: '/proc', kmsgPath: '/dev/kmsg', canWrite: false });
  assert.equal(none.pidsInotify, 'unknown');
  assert.match(none.unknownWhy ?? '', /observe mode/);
});

test('the daemon logs what it measured and exports it; in observe mode it probes nothing and says why', async (t) => {
  need(isRoot(), 'root');
  const root = testRoot(t);
  const cfg = await config(root, stateDir(t));
  const d = await daemon(t, cfg);
  const line = d.logs.find(isMsg('kernel signals measured: the sources follow them'));
  assert.ok(line, 'no capability line');
  assert.equal(line.capabilities.pidsKmsg, 'yes');
  const body = await (await fetch(`http://${cfg.metrics.listen}/metrics`)).text();
  assert.match(body, /cgwatchdog_kernel_capability\{capability="pids_events_inotify"\} 0/);
  assert.match(body, /cgwatchdog_kernel_capability\{capability="pids_kmsg"\} 1/);
  assert.match(body, /cgwatchdog_kernel_capability\{capability="memory_events_inotify"\} -1/);
  const running = d.logs.find(isMsg('detection running'));
  assert.deepEqual(running?.inotify, { pids: false, memory: false });
  const o = await daemon(t, { ...(await config(root, stateDir(t))), mode: 'observe' });
  const ol = o.logs.find(isMsg('kernel signals measured: the sources follow them'));
  assert.equal(ol?.capabilities.pidsInotify, 'unknown');
  assert.match(ol?.capabilities.unknownWhy ?? '', /observe mode/);
});
