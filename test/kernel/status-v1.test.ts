/**
 * `cgwatchdog status` against the real daemon on this host's v1 hierarchies, as root: a fork
 * bomb against a small pids.max puts its container on the first row with its hits and
 * current/max; --watch redraws; uid 65534 gets the permission sentence; a stopped daemon the
 * "not running" one; a stale socket of a killed daemon is replaced; a socket that cannot be
 * made is a warning, not a crash. cgwatchdog_build_info is on /metrics.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnInCgroup, v1Dir, waitForTask } from '../helpers/v1-cgroups';
import { runCli, startDaemon } from '../helpers/daemon';
import { BOMB, alertLog, config, daemon, defer, hex64, isMsg, makeContainer, ready, sleep, stateDir, testRoot, waitPidsMax, type Obj } from '../helpers/v1-daemon';

/** A copy of the config in a directory every user can read (uid 65534 must load it). */
function readableConfig(t: Parameters<typeof defer>[0], cfg: Obj): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-status-cfg-'));
  fs.chmodSync(dir, 0o755);
  defer(t, () => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'config.yaml');
  fs.writeFileSync(file, JSON.stringify(cfg), { mode: 0o644 });
  return file;
}

const oneLine = (s: string): string => {
  const lines = s.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got: ${s}`);
  return lines[0]!;
};

test('status under a fork bomb: the bombed container first with its hits and current/max; text, --watch, non-root, stopped', async (t) => {
  ready();
  const root = testRoot(t);
  const bombed = `${root}/docker/${hex64()}`;
  const idle = `${root}/docker/${hex64()}`;
  const busy = `${root}/libpod_parent/libpod-${hex64()}`;
  for (const rel of [bombed, idle, busy]) makeContainer(rel);
  const state = stateDir(t);
  const socket = path.join(state, 'run', 'status.sock');
  const cfg = await config(root, state, {
    paths: { statusSocket: socket },
    policy: { overrides: [{ pathPattern: `^${root}/docker/`, pidsMax: 20 }] },
  });
  const cfgFile = readableConfig(t, cfg);
  const d = await daemon(t, cfg);
  await d.waitForLog(isMsg('status socket listening'), 5000);
  assert.notEqual(await waitPidsMax(bombed, '20', 5000), null);
  // Root's only: the directory the daemon made 0700, the socket 0600.
  assert.equal(fs.statSync(path.dirname(socket)).mode & 0o777, 0o700);
  const st = fs.lstatSync(socket);
  assert.ok(st.isSocket());
  assert.equal(st.mode & 0o777, 0o600);

  // A second container with tasks but far from its limit (6144), so "first" means something.
  const sleeper = spawnInCgroup(busy, ['pids'], '/bin/sh', ['-c', 'sleep 300 & sleep 300 & sleep 300 & wait']);
  defer(t, () => sleeper.kill('SIGKILL'));
  await waitForTask(busy, 'pids', sleeper.pid!);
  const bomb = spawnInCgroup(bombed, ['pids'], '/usr/bin/perl', BOMB);
  defer(t, () => bomb.kill('SIGKILL'));
  await d.waitForLog(alertLog('pids-max'), 5000);
  await sleep(1500); // the sweep counts the hits after the first

  const r = await runCli(['status', '--json', '--config', cfgFile]);
  assert.equal(r.code, 0, `status --json failed: ${r.stderr}`);
  const report = JSON.parse(r.stdout) as Obj;
  const first = report.containers[0];
  t.diagnostic(`first row: ${JSON.stringify(first)}`);
  assert.equal(first.cgroupPath, bombed, `first is ${first.cgroupPath}; order: ${report.containers.map((c: Obj) => `${c.cgroupPath} ${c.ratio}`).join(', ')}`);
  assert.ok(first.pidsLimitHits >= 1, `pidsLimitHits ${first.pidsLimitHits}`);
  const pidsCurrent = Number(fs.readFileSync(path.join(v1Dir('pids', bombed), 'pids.current'), 'utf8'));
  assert.equal(first.pidsMax, 20);
  assert.equal(first.pidsCurrent, 20, `pids.current in the report ${first.pidsCurrent}, in the file ${pidsCurrent}`);
  assert.equal(first.lastEvent?.kind, 'pids-max');
  assert.equal(report.containers.length, 3);
  const busyRow = report.containers.find((c: Obj) => c.cgroupPath === busy);
  assert.ok(busyRow.pidsCurrent >= 4 && busyRow.pidsMax === 6144, JSON.stringify(busyRow));
  assert.equal(report.health.sources.sweep, true);
  assert.equal(report.health.sources.kmsg, true);
  assert.equal(typeof report.host.pidMax, 'number');
  assert.equal(report.host.pidMax, Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8')));
  assert.ok(report.host.tasks > 0);
  assert.ok(report.alerts.firing >= 1);
  assert.equal(report.daemon.pid, d.proc.pid);

  const text = await runCli(['status', '--config', cfgFile]);
  assert.equal(text.code, 0, text.stderr);
  t.diagnostic(`status:\n${text.stdout}`);
  const lines = text.stdout.split('\n');
  const header = lines.findIndex((l) => l.startsWith('CONTAINER'));
  assert.ok(header > 0, `no table header in:\n${text.stdout}`);
  const row1 = lines[header + 1]!;
  assert.ok(row1.startsWith(first.id.slice(0, 12)), `first row is not the bombed container: ${row1}`);
  assert.match(row1, /\b20\/20\s+100%/);
  assert.match(row1, /pids-max \d+s ago/);
  assert.match(text.stdout, /^detection: .*\bkmsg up\b/m);
  assert.match(text.stdout, /^detection: .*\bsweep up\b/m);
  assert.match(text.stdout, /^host: \d+ tasks of kernel\.pid_max \d+/m);

  // --watch until killed: at least two frames in ~5 s at the default 2 s.
  const watch = await runCli(['status', '--watch', '--config', cfgFile], { timeoutMs: 5000 });
  const frames = watch.stdout.split('\n').filter((l) => l.startsWith('cgwatchdog ')).length;
  t.diagnostic(`--watch: ${frames} frames in 5 s`);
  assert.ok(frames >= 2, `--watch printed ${frames} frames in 5 s: ${watch.stdout.slice(0, 400)}${watch.stderr}`);

  // Not root: one sentence saying so.
  const nobody = await runCli(['status', '--config', cfgFile], { uid: 65534, gid: 65534 });
  t.diagnostic(`uid 65534: exit ${nobody.code}, stderr: ${nobody.stderr.trim()}`);
  assert.equal(nobody.code, 1);
  assert.match(oneLine(nobody.stderr), /^cgwatchdog: permission denied on the status socket .*root/);
  assert.equal(nobody.stdout, '');

  bomb.kill('SIGKILL');
  await d.stop();
  assert.equal(fs.existsSync(socket), false, 'the socket is still there after stop');
  const stopped = await runCli(['status', '--config', cfgFile]);
  t.diagnostic(`stopped: exit ${stopped.code}, stderr: ${stopped.stderr.trim()}`);
  assert.equal(stopped.code, 1);
  assert.match(oneLine(stopped.stderr), /^cgwatchdog: the daemon is not running/);
});

test('status socket: a stale one of a killed daemon is replaced; one that cannot be made is a warning and the daemon runs on; build_info on /metrics', async (t) => {
  ready();
  const root = testRoot(t);
  makeContainer(`${root}/docker/${hex64()}`);
  const state = stateDir(t);
  const socket = path.join(state, 'status.sock');
  const cfg = await config(root, state, { paths: { statusSocket: socket } });
  const cfgFile = readableConfig(t, cfg);

  const d1 = await daemon(t, cfg);
  await d1.waitForLog(isMsg('status socket listening'), 5000);
  await d1.kill9();
  assert.ok(fs.lstatSync(socket).isSocket(), 'a SIGKILLed daemon leaves its socket');
  const stale = await runCli(['status', '--config', cfgFile]);
  assert.equal(stale.code, 1);
  assert.match(oneLine(stale.stderr), /the daemon is not running/);

  const d2 = await daemon(t, cfg);
  await d2.waitForLog(isMsg('status socket listening'), 5000);
  const ok = await runCli(['status', '--json', '--config', cfgFile]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal((JSON.parse(ok.stdout) as Obj).daemon.pid, d2.proc.pid);

  // A second daemon on the same socket does not steal it from the live one.
  const cfg3 = { ...cfg, metrics: { listen: `127.0.0.1:${Number(cfg.metrics.listen.split(':')[1]) + 1}` } };
  const d3 = await daemon(t, { ...cfg3, paths: { ...cfg.paths, stateDir: stateDir(t) } });
  const refused = await d3.waitForLog(isMsg('cannot serve the status socket: `cgwatchdog status` will not reach this daemon; it runs on'), 5000);
  t.diagnostic(`second daemon: ${refused.err}`);
  await d3.stop();
  const still = await runCli(['status', '--json', '--config', cfgFile]);
  assert.equal((JSON.parse(still.stdout) as Obj).daemon.pid, d2.proc.pid, 'the live daemon lost its socket');

  // build_info, as Prometheus scrapes it.
  const metrics = await (await fetch(`http://${cfg.metrics.listen}/metrics`)).text();
  const line = metrics.split('\n').find((l) => l.startsWith('cgwatchdog_build_info{'));
  t.diagnostic(line ?? 'no build_info');
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { version: string };
  const commitFile = path.join(__dirname, '..', '..', 'COMMIT');
  const commit = fs.existsSync(commitFile) ? fs.readFileSync(commitFile, 'utf8').trim() : '';
  assert.equal(line, `cgwatchdog_build_info{version="${pkg.version}",node="${process.version}",commit="${commit}"} 1`);
  await d2.stop();

  // A regular file where the socket's directory should be: warned, and the daemon runs on.
  const blocker = path.join(state, 'not-a-dir');
  fs.writeFileSync(blocker, '');
  const d4 = startDaemon(await config(root, stateDir(t), { paths: { statusSocket: path.join(blocker, 'status.sock') } }));
  defer(t, () => d4.stop());
  await d4.waitForLog(isMsg('detection running'), 15_000);
  const warned = d4.logs.filter(isMsg('cannot serve the status socket: `cgwatchdog status` will not reach this daemon; it runs on'));
  assert.equal(warned.length, 1);
  assert.equal(warned[0]!.socket, path.join(blocker, 'status.sock'));
  await sleep(300);
  assert.equal(d4.proc.exitCode, null, 'the daemon exited');
});
