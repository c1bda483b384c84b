/**
 * The production install, for real: systemd as PID 1 on cgroup v2 in user-mode Linux (the newest
 * kernel of the matrix). The tarball `npm pack` makes here is installed inside with
 * `npm install -g --offline` (registry unreachable), `cgwatchdog install-service` writes the
 * commented default config, offers the OCI hooks (podman is there) and starts the unit; the
 * operator adds a webhook sink, `systemctl reload`s and sends `cgwatchdog test-alert`. The
 * daemon, under the unit's own sandbox (systemd-analyze security of the loaded unit: <= 2.9),
 * raises kernel.pid_max, writes pids.max of podman's machine.slice/libpod-<id>.scope, reads
 * /dev/kmsg, and delivers a fork bomb and an OOM kill to the webhook; `cgwatchdog status`
 * (text, --json, --watch --json) shows the bombed container first at its limit, then the OOM
 * kill; `systemctl reload` during a firing alert keeps it one alert; `systemctl stop` is
 * clean; the journal has the daemon's fields and no warning but the alerts; and after a
 * `systemctl daemon-reload` (systemd re-applies the scope's TasksMax) the policy value is back
 * within a second. test/uml/scripts/systemd-service.ts does the work inside.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { packPruned } from '../helpers/pack';
import { isRoot, need } from '../helpers/prereq';
import { kernelReady, resultsByCheck, runInUml, umlProcesses, UML_KERNELS } from '../helpers/uml';

type Rec = Record<string, any>;

// dist/test/uml -> repository root
const ROOT = path.resolve(__dirname, '../../..');
const sid = UML_KERNELS[UML_KERNELS.length - 1]!;
/** The issue's "within a second" for the daemon's repair of a daemon-reload (see the README). */
const RESTORE_MAX_MS = 1000;
/** The exposure the package's unit is measured at offline (test/unit/systemd-unit.test.ts). */
const MAX_EXPOSURE = 2.9;
/**
 * Warnings and errors the daemon may log here besides its alerts: only a delivery retry to the
 * test's own receiver, which a loaded user-mode Linux can keep past the 5 s send timeout (seen
 * once); the messages themselves are asserted at the receiver. (The kmsg reader's child ending
 * at `systemctl stop` was one, until the unit's KillMode=mixed sent SIGTERM to the daemon alone.)
 */
const ALLOWED_WARNINGS: RegExp[] = [/^alert delivery failed; will retry$/];

test(`npm install -g --offline + cgwatchdog install-service under systemd as PID 1 [${sid.suite}]: the daemon in its sandbox, podman on machine.slice, alerts, reload, stop, journal, daemon-reload`, async (t) => {
  kernelReady(sid);
  need(isRoot(), 'root (user-mode Linux runs the host\'s systemd and podman inside)');
  need(fs.existsSync('/lib/systemd/systemd'), 'systemd (apt-get install systemd): PID 1 inside user-mode Linux');
  need(fs.existsSync('/usr/bin/dbus-daemon'), 'dbus (apt-get install dbus): podman\'s systemd cgroup manager talks to systemd over the system bus');
  need(fs.existsSync('/usr/bin/podman') && fs.existsSync('/usr/sbin/runc'), 'podman and runc (apt-get install podman runc)');
  need(fs.existsSync('/usr/bin/npm'), 'npm (apt-get install npm)');
  need(fs.existsSync(path.join(ROOT, 'dist/src/cli.js')), 'dist/src/cli.js (npm run build)');

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-svc-pack-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const t0 = Date.now();
  const tarball = packPruned(ROOT, tmp);
  t.diagnostic(`npm pack on the host: ${path.basename(tarball)} (${(fs.statSync(tarball).size / 1e6).toFixed(1)} MB) in ${Date.now() - t0} ms`);

  const run = await runInUml(path.join(__dirname, 'scripts', 'systemd-service.js'), [`/run/out/${path.basename(tarball)}`], {
    kernel: sid,
    systemd: true,
    memMb: 1536,
    timeoutMs: 720_000,
    outFiles: [tarball],
  });
  const { get, results: r, tail } = resultsByCheck<Rec>(run);
  assert.equal(r.get('error'), undefined, `${JSON.stringify(r.get('error'))}\n${tail}`);
  assert.equal(run.timedOut, false, tail);
  assert.equal(run.exitCode, 0, tail);
  assert.deepEqual(run.leftovers, []);
  assert.deepEqual(umlProcesses(run.umid), []);
  assert.equal(fs.existsSync(run.dir), false, 'the UML temp dir was removed');

  const s = get('setup');
  t.diagnostic(`${run.kernel}, ${s.systemd}, podman ${s.podman}, PID 1 ${s.before.pid1}; boot+run ${run.durationMs} ms; script start to set-up done ${s.bootToSetupMs} ms (mounts, dbus, podman image ${s.setupMs} ms)`);
  assert.equal(s.before.pid1, 'systemd');
  assert.equal(s.dbus, 'active');

  // --- the install, step by step ---------------------------------------------------------------
  const i = get('install');
  t.diagnostic(`npm install -g --offline: ${i.npmMs} ms -> ${i.installed}`);
  t.diagnostic(`cgwatchdog install-service: ${i.installServiceMs} ms: ${i.installServiceOut.split('\n').join('; ')}`);
  if (i.installServiceErr) t.diagnostic(`install-service said: ${i.installServiceErr}`);
  assert.equal(i.installed, '/usr/local/lib/node_modules/cgwatchdog/dist/src/cli.js');
  t.diagnostic(`config install-service wrote: ${JSON.stringify(i.config)}`);
  assert.equal(i.config.before, false, 'no config before the install');
  assert.match(i.installServiceOut, /^config: wrote \/etc\/cgwatchdog\/config\.yaml \(the defaults, commented\)/m);
  assert.equal(i.config.mode, '600');
  assert.match(i.config.firstLine, /^# Written by cgwatchdog install-service \S+; edit it, then: systemctl reload cgwatchdog$/);
  assert.equal(i.config.noSinks, true, 'the defaults have no sink');
  // Podman is on the node and no hooks were asked for: install-service says what --hooks gives.
  assert.match(i.installServiceErr, /^cgwatchdog: warning: found podman(, \w+)*: --hooks podman also puts the policy in place before a new container's first process$/m);
  assert.match(i.installServiceOut, /^unit: wrote \/etc\/systemd\/system\/cgwatchdog\.service/m);
  assert.match(i.installServiceOut, /^systemctl daemon-reload: /m);
  assert.match(i.installServiceOut, /^systemctl enable --now: /m);
  assert.equal(i.isActive, 'active');

  const v = get('service');
  t.diagnostic(`service ready ("detection running") ${v.readyMs} ms after install-service began; ExecStart ${v.cmdline}`);
  t.diagnostic(`sandbox of the running daemon: CapEff ${v.sandbox.capEff}, CapBnd ${v.sandbox.capBnd}, NoNewPrivs ${v.sandbox.noNewPrivs}, Seccomp ${v.sandbox.seccomp}, own mount namespace ${v.sandbox.mountNs}`);
  t.diagnostic(`kernel.pid_max ${s.before.pidMax} at boot (systemd's 50-pid-max.conf), set to ${s.before.pidMaxSet}, then ${v.pidMax} (target ${v.pidMaxTarget}): ${JSON.stringify(v.pidMaxLine)}; /dev/kmsg open: ${v.kmsgOpen}; signals ${JSON.stringify(v.capabilities?.signals ?? v.capabilities)}`);
  if (v.problems.length) t.diagnostic(`warnings logged: ${JSON.stringify(v.problems)}`);
  assert.deepEqual(v.problems, [], 'no warning at the start (a status or hook socket it cannot serve would be one)');
  assert.equal(v.unit.ActiveState, 'active');
  assert.equal(v.unit.FragmentPath, '/etc/systemd/system/cgwatchdog.service');
  assert.equal(v.cmdline, `${process.execPath} --max-semi-space-size=1 /usr/local/lib/node_modules/cgwatchdog/dist/src/cli.js run --config /etc/cgwatchdog/config.yaml`);
  assert.equal(v.sandbox.noNewPrivs, '1');
  assert.equal(v.sandbox.mountNs, true, 'ProtectSystem=/PrivateTmp= gave it a mount namespace of its own');
  // CAP_SYSLOG (34) and CAP_DAC_OVERRIDE (1) only.
  assert.equal(BigInt(`0x${v.sandbox.capBnd}`), (1n << 34n) | (1n << 1n));
  assert.equal(v.pidMax, String(v.pidMaxTarget), 'the daemon raised kernel.pid_max from inside its sandbox');
  assert.equal(v.pidMaxLine?.msg, 'raised kernel.pid_max');
  assert.equal(v.kmsgOpen, true, 'the daemon has /dev/kmsg open');

  // --- the operator's sink, reload and test alert ------------------------------------------------
  const op = get('operator');
  t.diagnostic(`webhook sink added to the config, systemctl reload (${op.reload.ms} ms), "reloaded" logged ${op.reloadedMs} ms after the edit: ${JSON.stringify(op.reloaded)}`);
  t.diagnostic(`cgwatchdog test-alert: ${op.testAlert.ms} ms, received ${op.testReceived?.ms} ms after it began: ${op.testAlert.stdout.split('\n').join('; ')}`);
  assert.equal(op.reload.status, 0, op.reload.stderr);
  assert.equal(op.reloaded?.sinks, 1, 'the reloaded daemon has the sink');
  assert.equal(op.configMode, '600', 'the edit kept the mode');
  assert.equal(op.testAlert.status, 0, `${op.testAlert.stdout}\n${op.testAlert.stderr}`);
  assert.equal(op.testReceived?.kind, 'test', 'the test alert reached the webhook');

  // --- the loaded unit's exposure -----------------------------------------------------------------
  const ex = get('exposure');
  t.diagnostic(`systemd-analyze security cgwatchdog.service (the loaded unit, online): ${ex.score} ${ex.verdict} (${ex.ms} ms; threshold ${MAX_EXPOSURE})`);
  assert.equal(ex.status, 0, `${ex.stderr}\n${ex.tail.join('\n')}`);
  assert.ok(ex.score !== null, `no overall exposure in: ${ex.tail.join('\n')}`);
  assert.ok(ex.score <= MAX_EXPOSURE, `exposure ${ex.score} > ${MAX_EXPOSURE}`);

  // --- the policy, written by the daemon into systemd's scope ------------------------------------
  const p = get('policy');
  t.diagnostic(`podman run -d (--pids-limit 0): ${p.runMs} ms; ${p.rel} pids.max ${p.pidsMax} at ${p.reachedMs} ms; scope TasksMax=${p.scope.TasksMax}; the daemon's write ${JSON.stringify(p.written)}`);
  assert.equal(p.scope.ControlGroup, p.rel);
  assert.match(p.procCgroup, new RegExp(`^0::${p.rel.replace(/[.]/g, '\\.')}(/container)?$`));
  assert.equal(p.pidsMax, '6144');
  assert.equal(p.written?.new, 6144);

  // --- daemon-reload against the policy ----------------------------------------------------------
  const dr = get('daemon-reload');
  assert.equal(dr.status, 0, dr.stderr);
  t.diagnostic(`systemctl daemon-reload (${dr.reloadMs} ms): scope TasksMax ${dr.scopeTasksMax}; pids.max ${dr.seen.map((x: Rec) => `${x.v}@${x.ms}`).join(' -> ')} (ms from the reload's start); the daemon's writes: ${dr.writes.map((w: Rec) => `${w.old}->${w.new} (${w.why})`).join(', ') || 'none'}`);
  // The daemon's part: from systemd's write (pids.max first seen at the scope's TasksMax by a
  // 1 ms poll) to the policy value back. systemctl daemon-reload itself takes seconds here
  // (systemd re-reads every unit; UML syscalls are slow), before systemd writes anything.
  t.diagnostic(`policy value back ${dr.repairMs} ms after systemd re-applied TasksMax (systemd wrote at ${dr.systemdWriteMs} ms, the value was back at ${dr.restoredMs} ms, the daemon's write logged at ${dr.writeMs} ms, systemctl daemon-reload returned at ${dr.reloadMs} ms, all from the reload's start; target <= ${RESTORE_MAX_MS} ms; the reconcile's schedule "${dr.reconcileSchedule}")`);
  assert.equal(dr.changed, true, `daemon-reload did not touch pids.max: ${JSON.stringify(dr.seen)}`);
  assert.ok(dr.writes.some((w: Rec) => w.old === Number(dr.scopeTasksMax) && w.new === 6144), `the daemon put 6144 back over systemd's ${dr.scopeTasksMax}: ${JSON.stringify(dr.writes)}`);
  // Should the daemon undo it between two polls, there is no systemd value to time from: the
  // repair took less than the poll's longest gap.
  if (dr.repairMs !== null) assert.ok(dr.repairMs <= RESTORE_MAX_MS, `the policy value came back ${dr.repairMs} ms after systemd's write, > ${RESTORE_MAX_MS} ms`);
  else t.diagnostic(`systemd's value never seen: the daemon undid it within one poll interval (longest gap ${dr.pollGapMs} ms)`);
  if (dr.repairMs === null) assert.ok(dr.pollGapMs <= RESTORE_MAX_MS);

  // --- the bomb, with a reload while it fires ----------------------------------------------------
  const b = get('bomb');
  t.diagnostic(`bomb (--pids-limit ${b.pidsMax}): first rejection ${b.hitMs} ms after podman run returned; firing at the webhook ${b.alertMs} ms after it; systemctl reload ${b.reload.ms} ms; messages ${b.messages.map((m: Rec) => `${m.state}#${m.sequence}@${m.at}`).join(', ')}; resolved ${b.resolvedMs} ms after podman rm`);
  assert.ok(b.firing, 'a pids-max alert fired');
  t.diagnostic(b.firing.summary);
  assert.equal(b.firing.container.runtime, 'podman');
  assert.equal(b.firing.container.name, 'cgwd-svc-bomb', 'named from containers/storage (the default names.containersStorage)');
  assert.equal(b.pidsMax, '20', 'keep-lower: the container\'s own limit stays');
  assert.equal(b.reload.status, 0, b.reload.stderr);
  assert.equal(b.reload.firingAtReload, true);
  assert.ok(b.reload.line, 'the daemon logged "reloaded"');
  assert.ok(b.eventsAfter.max > 1, `hits went on after the reload: ${JSON.stringify(b.eventsAfter)}`);
  const states = b.messages.map((m: Rec) => m.state);
  assert.equal(states.filter((x: string) => x === 'firing').length, 1, `one firing message across the reload: ${JSON.stringify(b.messages)}`);
  assert.equal(states.filter((x: string) => x === 'resolved').length, 1, `then one resolved: ${JSON.stringify(b.messages)}`);
  assert.equal(states.at(-1), 'resolved');
  assert.equal(new Set(b.messages.map((m: Rec) => m.fingerprint)).size, 1, 'one condition');
  t.diagnostic(`install, step by step: npm install -g --offline ${i.npmMs} ms; cgwatchdog install-service ${i.installServiceMs} ms (service ready ${v.readyMs} ms after it began); webhook sink + systemctl reload ${op.reloadedMs} ms; cgwatchdog test-alert ${op.testAlert.ms} ms; first alert (the fork bomb's pids-max) at the webhook ${b.firstAlertMs} ms after its podman run returned, ${b.firstAlertFromInstallMs} ms after npm install began`);

  // --- cgwatchdog status under the bomb ------------------------------------------------------------
  const sb = get('status-bomb');
  t.diagnostic(`status --json samples: ${sb.samples.map((x: Rec) => `${x.current}/${x.max}${x.first ? ' first' : ''} (${x.ms} ms)`).join(', ')}`);
  t.diagnostic(`the status view of a host under a fork bomb (cgwatchdog status, ${sb.text.ms} ms):`);
  for (const l of sb.text.stdout.split('\n')) t.diagnostic(`  | ${l}`);
  assert.ok(sb.samples.every((x: Rec) => x.status === 0 && x.first === true), `the bombed container is first in every report: ${JSON.stringify(sb.samples)}`);
  const rb = sb.report;
  assert.ok(rb, `no report: ${JSON.stringify(sb.samples)}`);
  const row = rb.containers[0];
  assert.equal(row.id, b.id);
  assert.equal(row.name, 'cgwd-svc-bomb');
  assert.equal(row.runtime, 'podman');
  assert.equal(row.cgroupPath, b.rel);
  assert.equal(row.pidsMax, 20);
  assert.equal(row.pidsCurrent, row.pidsMax, `at its limit in one of ${sb.samples.length} reports: ${JSON.stringify(sb.samples)}`);
  assert.ok(row.pidsLimitHits > 0, `hits: ${row.pidsLimitHits}`);
  assert.equal(row.lastEvent?.kind, 'pids-max');
  assert.equal(rb.health.ok, true, rb.health.detail);
  assert.deepEqual(rb.health.degraded, []);
  assert.deepEqual(rb.health.sources, { kmsg: true, inotify: true, sweep: true });
  assert.equal(rb.daemon.mode, 'enforce');
  assert.equal(rb.daemon.cgroup, 'v2');
  assert.ok(rb.alerts.firing >= 1, `firing: ${rb.alerts.firing}`);
  assert.deepEqual(rb.alerts.sinks.map((x: Rec) => x.type), ['webhook']);
  assert.ok(rb.containers.some((c: Rec) => c.id === p.id && c.pidsMax === 6144), 'the policy container is listed too');
  const text: string[] = sb.text.stdout.split('\n');
  assert.equal(sb.text.status, 0, sb.text.stderr);
  assert.match(text[0]!, /^cgwatchdog \S+ on \S+: pid \d+, up \d+[smhd], enforce, cgroup v2, healthy$/);
  for (const src of ['kmsg', 'inotify', 'sweep']) assert.match(text[1]!, new RegExp(`\\b${src} up\\b`));
  const head = text.findIndex((l) => l.startsWith('CONTAINER'));
  assert.ok(head > 0, 'the table');
  assert.match(text[head + 1]!, /^cgwd-svc-bomb +- +(19|20)\/20 +(95|100)% .* pids-max \d+s ago$/);
  const fr = sb.watch.frames as Rec[];
  t.diagnostic(`status --watch --json --interval 0.5: ${fr.length} lines in ${sb.watch.ms} ms: ${JSON.stringify(fr)}`);
  assert.equal(fr.length, 2, `${JSON.stringify(fr)} ${sb.watch.stderr}`);
  assert.ok(fr.every((f) => f.version === 1 && f.bombFirst === true), 'each line one whole report, the bomb first');
  assert.ok(fr[1]!.at > fr[0]!.at, 'two frames, one after the other');

  // --- the OOM kill --------------------------------------------------------------------------------
  const o = get('oom');
  assert.ok(o.alert, `no oom-kill alert: ${JSON.stringify(o.alerts)}; memory.events ${JSON.stringify(o.events)}`);
  t.diagnostic(`${o.alert.summary} (${o.alertMs} ms after podman run -d began)`);
  assert.equal(o.alert.container.id, o.id);
  assert.equal(o.alert.victim?.comm, 'dd', 'the victim named from /dev/kmsg');

  const so = get('status-oom');
  t.diagnostic(`the status view after the OOM kill (${so.text.ms} ms):`);
  for (const l of so.text.stdout.split('\n')) t.diagnostic(`  | ${l}`);
  assert.ok(so.report, JSON.stringify(so.run));
  const orow = so.report.containers.find((c: Rec) => c.id === o.id);
  assert.ok(orow, `the OOM container in the report: ${JSON.stringify(so.report.containers)}`);
  assert.equal(orow.name, 'cgwd-svc-oom');
  assert.ok(orow.oomKills >= 1, `oomKills ${orow.oomKills}`);
  assert.equal(orow.memoryLimit, 32 * 1024 * 1024);
  assert.ok(typeof orow.memoryUsage === 'number' && orow.memoryUsage > 0 && orow.memoryUsage <= orow.memoryLimit, `memory ${orow.memoryUsage}/${orow.memoryLimit}`);
  const gone = so.report.containers.find((c: Rec) => c.id === b.id);
  assert.equal(gone?.departed, true, 'the removed bomb stays listed with its hits');
  assert.ok(gone.pidsLimitHits > 0);
  assert.equal(so.report.health.ok, true, so.report.health.detail);
  assert.deepEqual(so.report.health.sources, { kmsg: true, inotify: true, sweep: true });
  assert.match(so.text.stdout, /^cgwd-svc-oom +- +\d+\/\d+ .*\/32M +\d+% +0 +[1-9]\d* /m);

  // --- the journal ---------------------------------------------------------------------------------
  const j = get('journal');
  t.diagnostic(`journal: ${j.entries} entries of the unit, ${j.daemonLines} of them the daemon's JSON lines; others: ${JSON.stringify(j.otherLines)}`);
  t.diagnostic(`pids-max entry: journal fields ${JSON.stringify(j.pidsEntry?.journal)}; alert fields ${JSON.stringify(Object.keys(j.pidsEntry?.line.alert ?? {}))}`);
  assert.ok(j.pidsEntry, 'the pids-max alert is in journalctl -u cgwatchdog');
  assert.equal(j.pidsEntry.journal._SYSTEMD_UNIT, 'cgwatchdog.service');
  assert.equal(j.pidsEntry.line.alert.kind, 'pids-max');
  // The "<4>" prefix on stdout: `journalctl -p warning` shows the alerts.
  assert.equal(j.pidsEntry.journal.PRIORITY, '4', 'a firing alert (pino warn) is journal PRIORITY 4');
  assert.equal(j.pidsEntry.line.alert.container.id, b.id);
  assert.ok(j.oomEntry, 'the oom-kill alert is in the journal');
  assert.equal(j.oomEntry.line.alert.container.id, o.id);

  // --- stop, uninstall, clean-up -------------------------------------------------------------------
  const st = get('stop');
  t.diagnostic(`systemctl stop: ${st.stopMs} ms (TimeoutStopSec ${st.after.TimeoutStopUSec}); then ${JSON.stringify(st.after)}; ${JSON.stringify(st.lines)}`);
  assert.equal(st.status, 0, st.stderr);
  assert.equal(st.after.ActiveState, 'inactive');
  assert.equal(st.after.Result, 'success', 'exited by itself on SIGTERM, not killed');
  assert.equal(st.pidGone, true);
  assert.ok(st.stopMs < 15_000, `stop took ${st.stopMs} ms`);
  t.diagnostic(`warnings and errors the daemon logged besides its alerts: ${JSON.stringify(st.warnings)}`);
  assert.deepEqual(st.warnings.filter((w: Rec) => !ALLOWED_WARNINGS.some((rx) => rx.test(String(w.msg)))), []);
  assert.ok(st.warnings.length <= 5, `delivery retries, a few at most: ${JSON.stringify(st.warnings)}`);

  const u = get('uninstall');
  t.diagnostic(`install-service --uninstall: ${u.ms} ms: ${u.out.split('\n').join('; ')}`);
  assert.equal(u.status, 0, u.err);
  assert.equal(u.unitLeft, false);
  assert.equal(u.wantsLeft, false, 'disabled');
  assert.equal(u.load.LoadState, 'not-found');
  assert.equal(u.configLeft, true, 'the config stays');

  const c = get('cleanup');
  t.diagnostic(`in UML ${c.bootToEndMs} ms from the script's start to the end of its clean-up`);
  assert.deepEqual(c.problems, []);
  assert.equal(c.scopesLeft, '', 'no libpod scope left');
  assert.equal(c.containersLeft, '');
});
