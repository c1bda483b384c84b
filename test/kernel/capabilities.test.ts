/**
 * The capability probe on this host's kernel (6.18, cgroup v1 pids): the opposite of what
 * UML 6.1 says on v1 (test/uml/capabilities.test.ts), and what the daemon does with it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { detectLayout, openCgroupFs } from '../../src/cgroup/index';
import { inotifyFor, probeCapabilities } from '../../src/kernel/capabilities';
import { isRoot, need } from '../helpers/prereq';
import { config, daemon, defer, isMsg, stateDir, testRoot } from '../helpers/v1-daemon';
import { startDaemon } from '../helpers/daemon';

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

test('nothing the daemon runs at start in enforce mode is a shell: every execve of its process tree, traced', async (t) => {
  need(isRoot(), 'root');
  need(fs.existsSync('/usr/bin/strace'), 'strace (Debian package strace)');
  const root = testRoot(t);
  const traceDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-trace-'));
  defer(t, () => fs.rmSync(traceDir, { recursive: true, force: true }));
  const traceFile = path.join(traceDir, 'execve');
  const cfg = await config(root, stateDir(t));
  // -f follows every child and thread; only execve is recorded, and its result, so a failed exec of a shell counts too.
  const d = startDaemon(cfg, { tracer: ['/usr/bin/strace', '-f', '-qq', '-s', '256', '-e', 'trace=execve', '-e', 'signal=none', '-o', traceFile] });
  defer(t, () => d.stop());
  await d.waitForLog((l) => l.msg === 'detection running', 30_000);
  const probe = d.logs.find(isMsg('kernel signals measured: the sources follow them'));
  assert.equal(probe?.capabilities.pidsKmsg, 'yes', 'the probe ran under the tracer and saw its fork rejected');
  const execs = fs
    .readFileSync(traceFile, 'utf8')
    .split('\n')
    .map((l) => /execve\("([^"]*)", \[(.*)$/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => ({ file: m[1]!, argv: m[2]! }));
  t.diagnostic(JSON.stringify(execs.map((e) => `${e.file} ${e.argv.slice(0, 60)}`)));
  const shells = /^(sh|bash|dash|ash|busybox|zsh)$/;
  const isShell = (e: { file: string; argv: string }): boolean => shells.test(path.basename(e.file)) || shells.test(path.basename(/^"([^"]*)"/.exec(e.argv)?.[1] ?? ''));
  assert.deepEqual(execs.filter(isShell), [], 'a shell was executed');
  // The trace saw what the daemon does run: itself, the probe's child (Node again, joining the probe cgroup) and the kmsg follower.
  const nodes = execs.filter((e) => e.file === process.execPath);
  assert.ok(nodes.length >= 2, `the daemon and the probe child exec ${process.execPath}: ${nodes.length} seen`);
  assert.ok(nodes.some((e) => e.argv.includes('cgroup.procs')), 'the probe child (its argv names the probe cgroup.procs) was traced');
  assert.ok(execs.some((e) => path.basename(e.file) === 'cat' && e.argv.includes('/dev/kmsg')), 'the kmsg follower was traced');
});
