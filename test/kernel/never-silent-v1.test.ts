/**
 * Events that used to be missed on this host's real v1 kernel: an OOM kill whose cgroup the
 * runtime removes at once, hits below a container's own cgroup, a discovery root made after
 * the start, a container already above its policy value. Each asserts what an operator sees:
 * the alert at a real webhook receiver, the value in the kernel, the daemon's report.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { exited, makeV1Cgroup, spawnInCgroup, v1Dir } from '../helpers/v1-cgroups';
import { runCli, startDaemon, startWebhookReceiver } from '../helpers/daemon';
import YAML from 'yaml';
import { BOMB, HMAC_ENV, config, daemon, defer, hex64, makeContainer, merge, readPidsMax, ready, receiver, removeTasks, stateDir, testRoot, waitPidsMax, webhookSink } from '../helpers/v1-daemon';

function writeTempConfig(t: Parameters<typeof defer>[0], cfg: unknown): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-cfg-'));
  defer(t, () => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'config.yaml');
  fs.writeFileSync(file, YAML.stringify(cfg));
  return file;
}

test('an OOM kill whose cgroup is removed at once (docker run --rm) still gives an oom-kill alert naming the container, then its resolution', async (t) => {
  ready();
  const root = testRoot(t);
  const id = hex64();
  const rel = `${root}/docker/${id}`;
  makeContainer(rel);
  fs.writeFileSync(path.join(v1Dir('memory', rel), 'memory.limit_in_bytes'), String(32 << 20));
  const { hook, env } = await receiver(t);
  await daemon(t, await config(root, stateDir(t), { alerts: { sinks: [webhookSink(hook.url)] } }), { env });

  // The runtime's clean-up, as fast as it can be: a loop that removes the cgroup the moment
  // its last task has exited (rmdir fails with EBUSY until then), memory first.
  const dirs = ['memory', 'pids', 'cpu', 'cpuset'].map((c) => v1Dir(c, rel));
  const remover = spawn('/usr/bin/perl', ['-e', 'sub busy { open(my $f, "<", "$_[0]/tasks") or return 0; my $l = <$f>; defined $l } 1 until busy($ARGV[0]); for my $d (@ARGV) { 1 until rmdir($d) || !-d $d }', ...dirs], { stdio: 'ignore' });
  defer(t, () => remover.kill('SIGKILL'));
  const hog = spawnInCgroup(rel, ['pids', 'memory'], '/bin/sh', ['-c', 'exec tail < /dev/zero']);
  defer(t, () => hog.kill('SIGKILL'));
  const r = await exited(hog);
  assert.equal(r.signal, 'SIGKILL', `the hog was not killed: ${JSON.stringify(r)}`);
  await exited(remover);
  const killedAt = Date.now();
  assert.equal(fs.existsSync(dirs[0]!), false, 'the cgroup is gone');

  const got = await hook.waitFor((x) => x.alert?.kind === 'oom-kill', 5000);
  const a = got.alert;
  t.diagnostic(`kill -> oom-kill alert for a removed container: ${got.at - killedAt} ms; ${a.summary}`);
  assert.equal(a.state, 'firing');
  assert.equal(a.container.id, id);
  assert.equal(a.container.cgroupPath, rel);
  assert.equal(a.victim?.comm, 'tail');
  assert.equal(a.victim?.pid, hog.pid);
  assert.equal(a.counters.eventsTotal, 1);
  const resolved = await hook.waitFor((x) => x.alert?.kind === 'oom-kill' && x.alert.state === 'resolved', 10_000);
  assert.equal(resolved.alert.fingerprint, a.fingerprint);
  assert.equal(resolved.alert.sequence, a.sequence + 1);
  assert.equal(hook.received.filter((x) => x.alert?.kind === 'oom-kill' && x.alert.state === 'firing').length, 1, 'one kill, one firing alert');
});

test('a fork rejected in a sub-cgroup with its own limit (a container running systemd: init.scope) is that container\'s pids-max alert, scoped to the sub-cgroup', async (t) => {
  ready();
  const root = testRoot(t);
  const id = hex64();
  const rel = `${root}/docker/${id}`;
  const sub = `${rel}/init.scope`;
  makeContainer(rel);
  makeV1Cgroup(sub);
  fs.writeFileSync(path.join(v1Dir('pids', sub), 'pids.max'), '5');
  const { hook, env } = await receiver(t);
  await daemon(t, await config(root, stateDir(t), { alerts: { repeatIntervalSeconds: 1, sinks: [webhookSink(hook.url)] } }), { env });
  assert.notEqual(await waitPidsMax(rel, '6144', 5000), null);

  const bomb = spawnInCgroup(sub, ['pids'], '/usr/bin/perl', BOMB);
  defer(t, () => bomb.kill('SIGKILL'));
  const got = await hook.waitFor((x) => x.alert?.kind === 'pids-max', 5000);
  const a = got.alert;
  t.diagnostic(a.summary);
  assert.equal(a.container.id, id, 'the hit is the container\'s');
  assert.equal(a.container.cgroupPath, sub, 'attributed to the cgroup whose limit was hit');
  assert.equal(a.limitScope, 'sub-cgroup');
  assert.equal(a.severity, 'warning', 'a sub-cgroup limit is below the container\'s own in severity');
  assert.equal(a.counters.limit, 5);
  // The kernel logs only the first rejection of a cgroup: the rest must come from its counter.
  const update = await hook.waitFor((x) => x.alert?.kind === 'pids-max' && x.alert.sequence >= 2, 5000);
  assert.ok(update.alert.counters.eventsTotal > a.counters.eventsTotal, `counts ${a.counters.eventsTotal} -> ${update.alert.counters.eventsTotal}`);
  assert.equal(readPidsMax(rel), '6144');
});

test('an OOM kill in a sub-cgroup with its own memory limit is that container\'s oom-kill alert, scoped to the sub-cgroup', async (t) => {
  ready();
  const root = testRoot(t);
  const id = hex64();
  const rel = `${root}/libpod_parent/libpod-${id}`;
  const sub = `${rel}/worker`;
  makeContainer(rel);
  makeV1Cgroup(sub);
  fs.writeFileSync(path.join(v1Dir('memory', sub), 'memory.limit_in_bytes'), String(32 << 20));
  const { hook, env } = await receiver(t);
  await daemon(t, await config(root, stateDir(t), { alerts: { sinks: [webhookSink(hook.url)] } }), { env });

  const hog = spawnInCgroup(sub, ['pids', 'memory'], '/bin/sh', ['-c', 'exec tail < /dev/zero']);
  defer(t, () => hog.kill('SIGKILL'));
  assert.equal((await exited(hog)).signal, 'SIGKILL');
  const killedAt = Date.now();
  const got = await hook.waitFor((x) => x.alert?.kind === 'oom-kill', 5000);
  const a = got.alert;
  t.diagnostic(`kill -> alert ${got.at - killedAt} ms: ${a.summary}`);
  assert.equal(a.container.id, id);
  assert.equal(a.container.cgroupPath, sub);
  assert.equal(a.limitScope, 'sub-cgroup');
  assert.equal(a.victim?.pid, hog.pid);
  assert.equal(a.counters.eventsTotal, 1);
});

test('a discovery root that does not exist yet (/docker before Docker\'s first container) is watched for: its containers get their limit at once', async (t) => {
  ready();
  const root = testRoot(t);
  makeV1Cgroup(root);
  const d = await daemon(t, await config(root, stateDir(t), { discovery: { roots: [`${root}/docker`] } }));
  const warned = await d.waitForLog((l) => l.msg?.startsWith('discovery root does not exist yet') === true, 5000);
  assert.equal(warned.root, `${root}/docker`);
  assert.equal(warned.watching, root);

  const rel = `${root}/docker/${hex64()}`;
  // Outside the root: not the daemon's to limit, though its parent is watched now.
  const outside = `${root}/libpod_parent/libpod-${hex64()}`;
  const t0 = Date.now();
  makeContainer(rel);
  makeContainer(outside);
  const ms = await waitPidsMax(rel, '6144', 5000);
  t.diagnostic(`root made after the start: container limited ${ms === null ? 'never' : `${Math.round(ms)} ms`} after its mkdir (${Date.now() - t0} ms wall)`);
  assert.ok(ms !== null && ms < 1000, `limited after ${ms} ms; the reconcile runs once a minute`);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(readPidsMax(outside), 'max', 'a container outside the discovery roots was touched');
});

test('a sink whose HMAC secret file does not exist stops the daemon at start, and is refused at reload', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  const state = stateDir(t);
  const missing = path.join(state, 'no-such-secret');
  const bad = await config(root, state, { alerts: { sinks: [{ type: 'webhook', url: 'http://127.0.0.1:9/x', hmac: { secret: { file: missing } } }] } });
  const d = startDaemon(bad);
  defer(t, () => d.stop());
  const r = await Promise.race([d.exited, new Promise<null>((res) => setTimeout(() => res(null), 10_000))]);
  assert.ok(r, 'still running with a secret it can never read');
  assert.equal(r.code, 2);
  assert.match(d.stderr(), /alerts\.sinks\[0\]\.hmac\.secret\.file is ".*no-such-secret": no such file/);
  assert.equal(readPidsMax(rel), 'max');

  const good = await config(root, state);
  const d2 = await daemon(t, good);
  d2.writeConfig(bad);
  d2.proc.kill('SIGHUP');
  const refused = await d2.waitForLog((l) => l.msg === 'reload failed: keeping the running config', 5000);
  assert.match(refused.err, /no such file/);
  assert.equal(d2.proc.exitCode, null);
});

test('a reload with two sinks of one name is refused whole: the running config keeps sending, the new sinks get nothing', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  const a = await receiver(t);
  const b = await startWebhookReceiver({ hmacSecret: a.env[HMAC_ENV] });
  defer(t, () => b.close());
  const base = await config(root, stateDir(t), { policy: { overrides: [{ pathPattern: `^${root}/docker/`, pidsMax: 20 }] } });
  const d = await daemon(t, merge(base, { alerts: { sinks: [webhookSink(a.hook.url)] } }), { env: a.env });
  assert.notEqual(await waitPidsMax(rel, '20', 5000), null);
  // Before the fix the engine and coalescer took the new config, then the sink list threw:
  // half applied, and an unhandled rejection in the log.
  d.writeConfig(merge(base, { policy: { overrides: [{ pathPattern: `^${root}/docker/`, pidsMax: 30 }] }, alerts: { repeatIntervalSeconds: 1, sinks: [{ ...webhookSink(b.url), name: 'dup' }, { ...webhookSink(`${b.url}/other`), name: 'dup' }] } }));
  d.proc.kill('SIGHUP');
  const refused = await d.waitForLog((l) => l.msg === 'reload failed: keeping the running config', 5000);
  assert.match(refused.err, /alerts\.sinks\[1\]\.name is "dup": alerts\.sinks\[0\] has this name too/);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(d.logs.filter((l) => l.msg === 'reloading' || /unhandled/i.test(l.msg ?? '')).length, 0, 'nothing of the refused file was applied');
  assert.equal(readPidsMax(rel), '20', 'the policy is the running one');
  const bomb = spawnInCgroup(rel, ['pids'], '/usr/bin/perl', BOMB);
  defer(t, () => bomb.kill('SIGKILL'));
  const fired = await a.hook.waitFor((x) => x.alert?.kind === 'pids-max', 5000);
  assert.equal(fired.hmacOk, true);
  bomb.kill('SIGKILL');
  await removeTasks(rel);
  assert.equal(b.received.length, 0, 'the refused sinks received nothing');
  assert.equal(d.proc.exitCode, null);
});

test('first, do no harm: a container already running more tasks than its policy value is not capped below them; it is reported, then limited once it shrinks', async (t) => {
  ready();
  const root = testRoot(t);
  const id = hex64();
  const rel = `${root}/docker/${id}`;
  makeContainer(rel);
  // 100 tasks; the policy (override) says 40: writing it would make every fork fail.
  const holder = spawnInCgroup(rel, ['pids'], '/bin/sh', ['-c', 'i=0; while [ $i -lt 99 ]; do sleep 1000 & i=$((i+1)); done; wait']);
  defer(t, () => holder.kill('SIGKILL'));
  const tasksFile = path.join(v1Dir('pids', rel), 'pids.current');
  for (let i = 0; i < 200 && Number(fs.readFileSync(tasksFile, 'utf8')) < 100; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(Number(fs.readFileSync(tasksFile, 'utf8')), 100);

  const cfg = await config(root, stateDir(t), {
    policy: { overrides: [{ pathPattern: `^${root}/docker/`, pidsMax: 40 }] },
    discovery: { reconcileSchedule: '*/2 * * * * *' },
    alerts: { sinks: [] as unknown[] },
  });
  const dry = await runCli(['apply', '--json', '--dry-run', '--config', writeTempConfig(t, cfg)]);
  const rep = JSON.parse(dry.stdout).containers.find((c: { id: string }) => c.id === id);
  assert.equal(rep.action, 'too-low', JSON.stringify(rep));
  assert.match(rep.reason, /below the 100 tasks it runs plus 10 headroom/);

  const { hook, env } = await receiver(t);
  (cfg.alerts as { sinks: unknown[] }).sinks = [webhookSink(hook.url)];
  const d = await daemon(t, cfg, { env });
  const alert = await hook.waitFor((x) => x.alert?.kind === 'pids-policy-too-low', 5000);
  t.diagnostic(alert.alert.summary);
  assert.equal(alert.alert.container.id, id);
  assert.equal(alert.alert.counters.current, 100);
  assert.equal(alert.alert.counters.limit, 40);
  assert.equal(readPidsMax(rel), 'max', 'the policy value was written below the running tasks');
  const metrics = await (await fetch(`http://${cfg.metrics.listen}/metrics`)).text();
  assert.match(metrics, new RegExp(`cgwatchdog_container_policy_too_low\\{id="${id}"[^}]*\\} 1`));

  // It shrinks: the next reconcile writes the policy and the alert resolves.
  holder.kill('SIGKILL');
  await removeTasks(rel);
  const shrunk = await waitPidsMax(rel, '40', 5000);
  assert.notEqual(shrunk, null, `not limited after it shrank: pids.current ${fs.readFileSync(tasksFile, 'utf8').trim()}; ${JSON.stringify(d.logs.filter((l) => l.cgroup === rel).slice(-4).map((l) => [l.msg, l.why]))}`);
  const resolved = await hook.waitFor((x) => x.alert?.kind === 'pids-policy-too-low' && x.alert.state === 'resolved', 5000);
  assert.equal(resolved.alert.fingerprint, alert.alert.fingerprint);
  assert.equal(d.proc.exitCode, null);
});

test('SIGHUP while an alert fires: the new sink gets it, the resolution arrives there with the next sequence, under the new intervals; a SIGHUP storm loses nothing', async (t) => {
  ready();
  const root = testRoot(t);
  const id = hex64();
  const rel = `${root}/docker/${id}`;
  makeContainer(rel);
  const a = await receiver(t);
  const b = await startWebhookReceiver({ hmacSecret: a.env[HMAC_ENV] });
  defer(t, () => b.close());
  const base = await config(root, stateDir(t), { policy: { overrides: [{ pathPattern: `^${root}/docker/`, pidsMax: 20 }] } });
  const first = merge(base, { alerts: { repeatIntervalSeconds: 60, resolveAfterSeconds: 600, sinks: [webhookSink(a.hook.url)] } });
  const d = await daemon(t, first, { env: a.env });
  assert.notEqual(await waitPidsMax(rel, '20', 5000), null);
  const bomb = spawnInCgroup(rel, ['pids'], '/usr/bin/perl', BOMB);
  defer(t, () => bomb.kill('SIGKILL'));
  const fired = await a.hook.waitFor((x) => x.alert?.kind === 'pids-max', 5000);

  // A storm of reloads with the same file while the bomb runs: serialized, nothing lost.
  // (Signals of one kind do not queue: several sent at once may arrive as one, so pace them.)
  const reloadsBefore = d.logs.filter((l) => l.msg === 'reloaded').length;
  for (let i = 0; i < 10; i++) {
    d.proc.kill('SIGHUP');
    await new Promise((r) => setTimeout(r, 20));
  }
  await d.waitForLog(() => d.logs.filter((l) => l.msg === 'reloaded').length >= reloadsBefore + 5, 15_000).catch((e: Error) => {
    throw new Error(`${e.message}\nreload lines: ${JSON.stringify(d.logs.filter((l) => /reload/.test(l.msg ?? '')).map((l) => [l.msg, l.err, l.keys]))}`);
  });
  assert.equal(d.proc.exitCode, null);

  // Now the sink's URL (a new sink) and the intervals change.
  d.writeConfig(merge(base, { alerts: { repeatIntervalSeconds: 1, resolveAfterSeconds: 2, sinks: [webhookSink(b.url)] } }));
  d.proc.kill('SIGHUP');
  const atB = await b.waitFor((x) => x.alert?.fingerprint === fired.alert.fingerprint, 5000);
  assert.equal(atB.alert.state, 'firing', 'the new sink gets the alert already firing');
  assert.equal(atB.hmacOk, true);
  // The new repeat interval (1 s) applies to it: an update with the running count.
  const update = await b.waitFor((x) => x.alert?.fingerprint === fired.alert.fingerprint && x.alert.sequence > atB.alert.sequence, 5000);
  assert.ok(update.alert.counters.eventsTotal > fired.alert.counters.eventsTotal);
  bomb.kill('SIGKILL');
  await removeTasks(rel);
  const resolved = await b.waitFor((x) => x.alert?.fingerprint === fired.alert.fingerprint && x.alert.state === 'resolved', 10_000);
  const seqs = b.received.filter((x) => x.alert?.fingerprint === fired.alert.fingerprint).map((x) => x.alert.sequence);
  t.diagnostic(`sequences at the new sink: ${seqs.join(', ')}; at the old one: ${a.hook.received.map((x) => x.alert.sequence).join(', ')}`);
  const lastOpen = Math.max(...b.received.filter((x) => x.alert?.fingerprint === fired.alert.fingerprint && x.alert.state !== 'resolved').map((x) => x.alert.sequence));
  assert.equal(resolved.alert.sequence, lastOpen + 1, 'the resolution carries the sequence after the last firing or update, at the new URL');
  assert.equal(resolved.alert.sequence, Math.max(...seqs), 'nothing came after the resolution');
  assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), 'sequences only grow');
  assert.equal(new Set(seqs).size, seqs.length);
  const mine = (x: { alert?: { fingerprint?: string; sequence?: number } }): boolean => x.alert?.fingerprint === fired.alert.fingerprint && x.alert?.sequence === 1;
  assert.equal(a.hook.received.filter(mine).length, 1, 'reloads never restarted the alert');
  // The new sink got the alert as it stood (the same message), not a new one.
  assert.equal(atB.alert.idempotencyKey, a.hook.received.filter((x) => x.alert?.fingerprint === fired.alert.fingerprint).at(-1)!.alert.idempotencyKey);
  assert.equal(atB.alert.startsAt, fired.alert.startsAt);
});


test('the kmsg reader killed: it is restarted and counted, and the next fork rejection is still seen through kmsg', async (t) => {
  ready();
  const root = testRoot(t);
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  const { hook, env } = await receiver(t);
  const cfg = await config(root, stateDir(t), { policy: { overrides: [{ pathPattern: `^${root}/docker/`, pidsMax: 20 }] }, alerts: { sinks: [webhookSink(hook.url)] } });
  const d = await daemon(t, cfg, { env });
  const catChild = (): number | undefined => {
    for (const tid of fs.readdirSync(`/proc/${d.proc.pid}/task`)) {
      for (const c of fs.readFileSync(`/proc/${d.proc.pid}/task/${tid}/children`, 'utf8').split(' ').filter(Boolean)) {
        if (fs.readFileSync(`/proc/${c}/cmdline`, 'utf8').split('\0').includes('/dev/kmsg')) return Number(c);
      }
    }
    return undefined;
  };
  const first = catChild();
  assert.ok(first, 'no kmsg reader child');
  process.kill(first, 'SIGKILL');
  await d.waitForLog((l) => l.msg === 'kmsg reader child ended: following the kernel log again', 5000);
  let second: number | undefined;
  for (let i = 0; i < 100 && (second = catChild()) === undefined; i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(second && second !== first, 'the reader was not started again');
  await new Promise((r) => setTimeout(r, 1500)); // a sweep sets the metrics
  const metrics = await (await fetch(`http://${cfg.metrics.listen}/metrics`)).text();
  assert.match(metrics, /^cgwatchdog_kmsg_restarts_total 1$/m);
  assert.match(metrics, /^cgwatchdog_source_up\{source="kmsg"\} 1$/m);
  assert.match(metrics, /^cgwatchdog_source_up\{source="sweep"\} 1$/m);

  assert.notEqual(await waitPidsMax(rel, '20', 5000), null);
  const bomb = spawnInCgroup(rel, ['pids'], '/usr/bin/perl', BOMB);
  defer(t, () => bomb.kill('SIGKILL'));
  const got = await hook.waitFor((x) => x.alert?.kind === 'pids-max', 5000);
  assert.ok(got.alert.sources.includes('kmsg'), `seen by ${got.alert.sources.join(', ')}`);
});

test('a kmsg reader that keeps failing (its path a regular file: each reader ends at once) is down, restarted with growing backoff and counted; up again once the path can be followed', async (t) => {
  ready();
  const root = testRoot(t);
  makeContainer(`${root}/docker/${hex64()}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-kmsg-path-'));
  defer(t, () => fs.rmSync(dir, { recursive: true, force: true }));
  const kmsg = path.join(dir, 'kmsg');
  // Opens and reads fine, and ends at EOF at once: the reader's child exits as soon as it starts.
  fs.writeFileSync(kmsg, '');
  const cfg = await config(root, stateDir(t), { paths: { kmsg } });
  const d = await daemon(t, cfg);
  const scrape = async (): Promise<{ up: number | undefined; restarts: number; health: { status: number; body: { ok: boolean; status: string; detail: string } } }> => {
    const metrics = await (await fetch(`http://${cfg.metrics.listen}/metrics`)).text();
    const up = /^cgwatchdog_source_up\{source="kmsg"\} (\d+)$/m.exec(metrics)?.[1];
    const res = await fetch(`http://${cfg.metrics.listen}/healthz`);
    return { up: up === undefined ? undefined : Number(up), restarts: Number(/^cgwatchdog_kmsg_restarts_total (\d+)$/m.exec(metrics)?.[1]), health: { status: res.status, body: await res.json() as { ok: boolean; status: string; detail: string } } };
  };
  const restartLines = () => d.logs.filter((l) => l.msg === 'kmsg reader child ended: following the kernel log again');
  await d.waitForLog(() => restartLines().length >= 5, 15_000);
  const down = await scrape();
  t.diagnostic(`while failing: ${JSON.stringify(down)}`);
  assert.equal(down.up, 0, 'cgwatchdog_source_up{source="kmsg"} while the reader keeps failing');
  assert.equal(down.health.status, 503);
  assert.equal(down.health.body.status, 'down');
  assert.match(down.health.body.detail, new RegExp(`kmsg reader on ${kmsg} is down`));
  const lines = restartLines();
  const at = lines.map((l) => Date.parse(l.time));
  const gaps = at.slice(1).map((x, i) => x - at[i]!);
  const delays = lines.map((l) => l.retryInMs as number);
  t.diagnostic(`restart delays announced ${delays.join(', ')} ms; gaps between restarts ${gaps.join(', ')} ms`);
  for (let i = 2; i < delays.length; i++) assert.ok(delays[i]! > delays[i - 1]!, `backoff grows: ${delays.join(', ')}`);
  // The gap before the 4th and 5th restarts is the delay announced at the one before (500 ms, 1000 ms, ...).
  for (let i = 2; i < gaps.length; i++) assert.ok(gaps[i]! >= delays[i]! && gaps[i]! > gaps[i - 1]!, `restarts come further apart: ${gaps.join(', ')}`);
  await d.waitForLog(() => restartLines().length >= 6, 10_000);
  await new Promise((r) => setTimeout(r, 1200)); // a sweep sets the metrics
  const later = await scrape();
  assert.ok(later.restarts > down.restarts && later.restarts >= 5, `cgwatchdog_kmsg_restarts_total ${down.restarts} -> ${later.restarts}`);
  assert.equal(later.up, 0);

  // The path works again: a FIFO with a writer (held here), which the next reader follows.
  const fifo = path.join(dir, 'kmsg.fifo');
  assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
  const writer = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
  defer(t, () => fs.closeSync(writer));
  fs.renameSync(fifo, kmsg);
  const t0 = Date.now();
  let up = later;
  while (Date.now() - t0 < 25_000 && !(up.up === 1 && up.health.status === 200)) {
    await new Promise((r) => setTimeout(r, 250));
    up = await scrape();
  }
  t.diagnostic(`path followable again: kmsg up after ${Date.now() - t0} ms; ${JSON.stringify(up)}`);
  assert.equal(up.up, 1, 'cgwatchdog_source_up{source="kmsg"} once the reader follows again');
  assert.equal(up.health.status, 200);
  assert.equal(up.health.body.status, 'ok');
  const n = restartLines().length;
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal(restartLines().length, n, 'the reader following the FIFO is not restarted any more');
  assert.equal(d.proc.exitCode, null);
});

test('kill -9 while an alert fires, then restart: the alert goes on from its sequence and resolves (a container removed meanwhile at once)', async (t) => {
  ready();
  const root = testRoot(t);
  const stay = `${root}/docker/${hex64()}`;
  const gone = `${root}/docker/${hex64()}`;
  makeContainer(stay);
  makeContainer(gone);
  const { hook, env } = await receiver(t);
  const state = stateDir(t);
  const cfg = await config(root, state, {
    policy: { overrides: [{ pathPattern: `^${root}/docker/`, pidsMax: 20 }] },
    alerts: { repeatIntervalSeconds: 60, resolveAfterSeconds: 4, sinks: [webhookSink(hook.url)] },
  });
  const d1 = await daemon(t, cfg, { env });
  assert.notEqual(await waitPidsMax(stay, '20', 5000), null);
  assert.notEqual(await waitPidsMax(gone, '20', 5000), null);
  const bombs = [stay, gone].map((rel) => spawnInCgroup(rel, ['pids'], '/usr/bin/perl', BOMB));
  defer(t, () => bombs.forEach((b) => b.kill('SIGKILL')));
  const f1 = await hook.waitFor((x) => x.alert?.kind === 'pids-max' && x.alert.container.cgroupPath === stay, 5000);
  const f2 = await hook.waitFor((x) => x.alert?.kind === 'pids-max' && x.alert.container.cgroupPath === gone, 5000);
  await new Promise((r) => setTimeout(r, 300)); // the state is saved within 100 ms of a message
  await d1.kill9();

  // While it is down: one container is removed, the other's bomb stops.
  bombs.forEach((b) => b.kill('SIGKILL'));
  await removeTasks(stay);
  await removeTasks(gone);
  for (const c of ['pids', 'cpu', 'cpuset', 'memory']) fs.rmdirSync(v1Dir(c, gone));

  const d2 = await daemon(t, cfg, { env });
  const restored = await d2.waitForLog((l) => l.msg === 'alert states restored: firing alerts go on from their sequence numbers', 5000);
  assert.ok(restored.alerts >= 2);
  const r2 = await hook.waitFor((x) => x.alert?.fingerprint === f2.alert.fingerprint && x.alert.state === 'resolved', 5000);
  assert.equal(r2.alert.sequence, f2.alert.sequence + 1, 'the removed container\'s alert resolves with its next sequence');
  const r1 = await hook.waitFor((x) => x.alert?.fingerprint === f1.alert.fingerprint && x.alert.state === 'resolved', 10_000);
  assert.equal(r1.alert.sequence, f1.alert.sequence + 1);
  assert.equal(r1.alert.startsAt, f1.alert.startsAt, 'the same alert, not a new one');
  assert.equal(hook.received.filter((x) => x.alert?.fingerprint === f1.alert.fingerprint && x.alert.sequence === 1).length, 1);
});

test('the state dir full (a small tmpfs) or read-only: alerts are still delivered, from memory; the failures (outbox, alert-state.json, written-pids-max.json) are counted and /healthz says degraded naming them', async (t) => {
  ready();
  const root = testRoot(t);
  const a = `${root}/docker/${hex64()}`;
  const b = `${root}/docker/${hex64()}`;
  makeContainer(a);
  makeContainer(b);
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-small-state-'));
  defer(t, () => fs.rmSync(mnt, { recursive: true, force: true }));
  assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0700', 'cgwd-test-state', mnt]).status, 0, 'mount a small tmpfs');
  defer(t, () => spawnSync('umount', ['-l', mnt]));
  const { hook, env } = await receiver(t);
  const cfg = await config(root, mnt, { policy: { overrides: [{ pathPattern: `^${root}/docker/`, pidsMax: 20 }] }, alerts: { sinks: [webhookSink(hook.url)] } });
  const d = await daemon(t, cfg, { env });
  assert.notEqual(await waitPidsMax(a, '20', 5000), null);
  // Fill it up: every later write fails with ENOSPC.
  spawnSync('dd', ['if=/dev/zero', `of=${path.join(mnt, 'fill')}`, 'bs=4k', 'count=1000']);
  const bombA = spawnInCgroup(a, ['pids'], '/usr/bin/perl', BOMB);
  defer(t, () => bombA.kill('SIGKILL'));
  const gotA = await hook.waitFor((x) => x.alert?.kind === 'pids-max' && x.alert.container.cgroupPath === a, 5000);
  assert.equal(gotA.hmacOk, true);
  const logged = await d.waitForLog((l) => l.msg?.startsWith('the alert outbox cannot write to the state directory') === true, 5000);
  assert.equal(logged.code, 'ENOSPC');
  // A container found now: the pids.max we write cannot be saved in written-pids-max.json.
  const c = `${root}/docker/${hex64()}`;
  makeContainer(c);
  assert.notEqual(await waitPidsMax(c, '20', 5000), null);
  const unsaved = await d.waitForLog((l) => l.msg?.startsWith('cannot save a state file') === true && l.file === 'written-pids-max.json', 5000);
  assert.equal(unsaved.code, 'ENOSPC');

  // Read-only now (EROFS).
  assert.equal(spawnSync('mount', ['-o', 'remount,ro', mnt]).status, 0);
  const bombB = spawnInCgroup(b, ['pids'], '/usr/bin/perl', BOMB);
  defer(t, () => bombB.kill('SIGKILL'));
  await hook.waitFor((x) => x.alert?.kind === 'pids-max' && x.alert.container.cgroupPath === b, 5000);
  await new Promise((r) => setTimeout(r, 300)); // alert-state.json is saved within 100 ms of a message

  const health = await (await fetch(`http://${cfg.metrics.listen}/healthz`)).json() as { ok: boolean; status: string; degraded?: string[] };
  t.diagnostic(JSON.stringify(health));
  assert.equal(health.ok, true);
  assert.equal(health.status, 'degraded');
  assert.match(health.degraded?.join(' ') ?? '', /alert outbox cannot write to disk \(EROFS/);
  assert.ok(health.degraded?.some((g) => /^state file alert-state\.json cannot be written \(EROFS\)/.test(g)), JSON.stringify(health.degraded));
  assert.ok(health.degraded?.some((g) => /^state file written-pids-max\.json cannot be written \(ENOSPC\)/.test(g)), JSON.stringify(health.degraded));
  const metrics = await (await fetch(`http://${cfg.metrics.listen}/metrics`)).text();
  const failures = Number(/^cgwatchdog_outbox_write_failures_total (\d+)$/m.exec(metrics)?.[1]);
  assert.ok(failures >= 2, `write failures counted: ${failures}`);
  const stateFailures = (file: string): number => Number(new RegExp(`^cgwatchdog_state_write_failures_total\\{file="${file.replace('.', '\\.')}"\\} (\\d+)$`, 'm').exec(metrics)?.[1]);
  t.diagnostic(`state file saves refused: alert-state.json ${stateFailures('alert-state.json')}, written-pids-max.json ${stateFailures('written-pids-max.json')}`);
  assert.ok(stateFailures('alert-state.json') >= 2, 'alert-state.json saves refused (full, then read-only)');
  assert.ok(stateFailures('written-pids-max.json') >= 1);
  assert.equal(d.logs.filter((l) => l.msg?.startsWith('the alert outbox cannot write')).length, 1, 'logged once, not per alert');
  assert.equal(d.logs.filter((l) => l.msg?.startsWith('cannot save a state file') && l.file === 'alert-state.json').length, 1, 'logged once, not per save');
  assert.equal(d.proc.exitCode, null);
});

test('the policy follows a CPU quota the runtime writes while the container settles (as Docker does), at once and not at the next reconcile', async (t) => {
  ready();
  const root = testRoot(t);
  makeV1Cgroup(`${root}/docker`);
  const d = await daemon(t, await config(root, stateDir(t)));
  const rel = `${root}/docker/${hex64()}`;
  makeContainer(rel);
  assert.notEqual(await waitPidsMax(rel, '6144', 2000), null, 'the 6-core floor first');
  await new Promise((r) => setTimeout(r, 1000));
  const t0 = Date.now();
  fs.writeFileSync(path.join(v1Dir('cpu', rel), 'cpu.cfs_period_us'), '100000');
  fs.writeFileSync(path.join(v1Dir('cpu', rel), 'cpu.cfs_quota_us'), '800000');
  const ms = await waitPidsMax(rel, '8192', 1500, 5);
  t.diagnostic(`8-CPU quota written 1 s after the mkdir: pids.max 8192 after ${Date.now() - t0} ms`);
  assert.ok(ms !== null && ms < 500, `pids.max ${readPidsMax(rel)} ${ms === null ? 'never became' : `became after ${ms} ms`} 8192`);
  assert.ok(d.logs.some((l) => l.cgroup === rel && l.why === 'runtime wrote the CPU limits'), 'the quota write prompted it');
});
