/**
 * Limit-hit detection end to end in a real cgroup v2 kernel (user-mode Linux 6.1): the daemon
 * sets a small pids.max by policy, a dash fork loop hits it, a memory hog is OOM-killed at
 * memory.max, and the alerts arrive at a webhook receiver inside UML. One boot; the work is
 * in test/uml/scripts/detect-v2.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { need } from '../helpers/prereq';
import { resultsByCheck, runInUml, kernelReady, umlProcesses, UML_KERNELS } from '../helpers/uml';

type Rec = Record<string, any>;

const UML = 'user-mode-linux (linux.uml): apt-get install -y user-mode-linux';

for (const k of UML_KERNELS) test(`detection in a real cgroup v2 kernel (UML): fork loop and OOM kill reach a webhook [${k.suite}]`, async (t) => {
  kernelReady(k);
  const run = await runInUml(path.join(__dirname, 'scripts', 'detect-v2.js'), [], { kernel: k, timeoutMs: 300_000 });
  t.diagnostic(`boot+run ${run.durationMs} ms, kernel ${run.kernel}`);
  need(run.loopback, 'ip (iproute2) or ifconfig (net-tools) on the host, to bring loopback up inside UML');
  const { get, results: r, tail } = resultsByCheck<Rec>(run);

  await t.test('the script ran to its end and UML left nothing behind', () => {
    assert.equal(r.get('error'), undefined, JSON.stringify(r.get('error')));
    assert.equal(run.timedOut, false, tail);
    assert.equal(run.exitCode, 0, tail);
    assert.deepEqual(run.leftovers, []);
    assert.deepEqual(umlProcesses(run.umid), []);
    assert.equal(fs.existsSync(run.dir), false);
    assert.equal(get('cleanup').gone, true);
  });

  await t.test('a webhook receiver answers on 127.0.0.1 inside UML', () => {
    const rx = get('receiver');
    assert.equal(rx.probe, 200);
    assert.equal(rx.probeReceived, true);
  });

  const start = get('daemon-start');
  const ids = get('alerts').ids as { pids: string; mem: string; P: string; M: string };

  await t.test('the daemon set the small pids.max itself (policy override)', () => {
    assert.ok(start.ready, `no "initial reconcile done": ${start.stderr}`);
    assert.equal(start.ready.containers, 2);
    assert.deepEqual(start.pidsMax, { pids: '8', mem: '6144' });
    assert.equal(start.memoryMax, String(20 * 1024 * 1024));
  });

  const pids = get('pids');
  const mem = get('memory');

  await t.test('the kernel side: forks rejected, the hog OOM-killed', () => {
    assert.equal(pids.ready, true);
    assert.equal(pids.shellExit, 2, pids.shellStderr);
    assert.match(pids.shellStderr, /Cannot fork/);
    assert.deepEqual(pids.extras, [2, 2, 2]);
    assert.equal(pids.eventsBefore.max, 0);
    assert.equal(pids.eventsAfter.max, 4, 'one rejection by the loop, one by each of three more shells');
    assert.equal(mem.ready, true);
    assert.equal(mem.comm, 'memhog');
    assert.deepEqual(mem.hogExit, { code: null, signal: 'SIGKILL' });
    assert.equal(mem.eventsBefore.oom_kill, 0);
    assert.equal(mem.eventsAfter.oom_kill, 1);
  });

  const alerts = get('alerts');
  const received = alerts.received as Rec[];
  const of = (cgroup: string, kind: string): Rec[] =>
    received.filter((x) => x.body?.kind === kind && x.body?.container?.cgroupPath === cgroup).sort((a, b) => a.body.sequence - b.body.sequence);
  for (const x of received) {
    const b = x.body;
    t.diagnostic(`alert ${b.kind} ${b.state} seq ${b.sequence} +${x.sincePidsGoMs.toFixed(0)} ms after the fork "go", +${x.sinceMemGoMs.toFixed(0)} ms after the hog "go": ${b.summary}`);
  }

  await t.test('every message is a well-formed generic webhook delivery', () => {
    assert.ok(received.length > 0, 'no alert reached the webhook');
    const keys = new Set<string>();
    for (const x of received) {
      assert.equal(x.path, '/hook');
      assert.equal(x.contentType, 'application/json');
      assert.equal(x.idempotencyKey, x.body.idempotencyKey);
      assert.equal(keys.has(x.idempotencyKey), false, `delivered twice: ${x.idempotencyKey}`);
      keys.add(x.idempotencyKey);
      assert.equal(x.body.host, 'uml-test');
      const pod = get('pod-memory');
      assert.ok([ids.P, ids.M, pod.pod, pod.container].includes(x.body.container.cgroupPath), JSON.stringify(x.body.container));
    }
  });

  await t.test('the fork loop gives one pids-max alert with the count and top commands', () => {
    const msgs = of(ids.P, 'pids-max');
    assert.ok(msgs.length > 0, 'no pids-max alert');
    const first = msgs[0]!.body;
    t.diagnostic(`fork "go" -> first pids-max alert at the webhook: ${pids.firstAlertMs?.toFixed(1)} ms`);
    // One condition, one firing; the rest are updates and the resolution, in sequence.
    assert.deepEqual(msgs.map((m) => m.body.sequence), msgs.map((_, i) => i + 1));
    assert.equal(msgs.filter((m) => m.body.sequence === 1).length, 1);
    assert.equal(new Set(msgs.map((m) => m.body.fingerprint)).size, 1);
    assert.equal(first.state, 'firing');
    assert.equal(first.severity, 'critical');
    assert.equal(first.container.id, ids.pids);
    assert.equal(first.container.runtime, 'docker');
    assert.equal(first.counters.limit, 8);
    assert.ok(first.counters.eventsSinceLast >= 1);
    assert.ok(Array.isArray(first.topCommands) && first.topCommands.length > 0, JSON.stringify(first));
    const tasks = (first.topCommands as Rec[]).reduce((n, c) => n + c.tasks, 0);
    assert.ok(tasks > 0 && tasks <= 8, JSON.stringify(first.topCommands));
    for (const c of first.topCommands as Rec[]) assert.ok(['sh', 'sleep'].includes(c.comm), JSON.stringify(first.topCommands));
    assert.match(first.summary, /hit its PID limit 8/);
    // The counter is the truth: every rejection counted once, whatever sources saw it.
    const firing = msgs.filter((m) => m.body.state === 'firing');
    assert.equal(firing.reduce((n, m) => n + m.body.counters.eventsSinceLast, 0), alerts.finalCounters.pids.max);
    const last = msgs[msgs.length - 1]!.body;
    assert.equal(last.state, 'resolved', 'resolved after resolveAfterSeconds of quiet');
    assert.equal(last.counters.eventsTotal, alerts.finalCounters.pids.max);
    assert.equal(typeof pids.firstAlertMs, 'number');
    // From "go", so it includes the forks. UML runs every syscall through ptrace: the first
    // alert's cold path (first HTTP request, first outbox file) took 600-1500 ms here idle and
    // over 2 s under CI load on 7.2, where the host's own test (daemon-v1) measures 58 ms.
    assert.ok(pids.firstAlertMs < 6000, `${pids.firstAlertMs} ms from the fork loop to the alert`);
  });

  await t.test('the OOM kill gives an oom-kill alert naming the victim', () => {
    const msgs = of(ids.M, 'oom-kill');
    assert.ok(msgs.length > 0, `no oom-kill alert; got ${received.map((x) => x.body.kind).join(', ')}`);
    t.diagnostic(`hog "go" -> killed ${mem.hogExitMs.toFixed(1)} ms -> oom-kill alert at the webhook ${mem.oomKillAlertMs?.toFixed(1)} ms`);
    assert.equal(msgs.filter((m) => m.body.sequence === 1).length, 1);
    const first = msgs[0]!.body;
    assert.equal(first.state, 'firing');
    assert.equal(first.severity, 'critical');
    assert.equal(first.container.id, ids.mem);
    assert.equal(first.victim?.comm, 'memhog', JSON.stringify(first.victim));
    assert.equal(first.victim.pid, mem.hogPid);
    assert.ok(first.victim.anonRssKb > 0);
    assert.equal(first.counters.limit, 20 * 1024 * 1024);
    assert.equal(first.counters.eventsTotal, alerts.finalCounters.memory.oom_kill);
    assert.match(first.summary, /memhog/);
    assert.equal(typeof mem.oomKillAlertMs, 'number');
    // Ours is the part after the kill: the kernel took 0.5-4.6 s to kill the hog in UML under CI
    // load (its allocation faults pages in slowly), which is no latency of ours.
    assert.ok(mem.oomKillAlertMs - mem.hogExitMs < 4000, `${(mem.oomKillAlertMs - mem.hogExitMs).toFixed(0)} ms from the hog's death to the alert`);
    // The memory limit itself was hit too: detected and counted, but no alert by default
    // (alerts.metricOnlyKinds); no PID alert for the memory container.
    assert.ok(((get('daemon-stop').limitEvents as Rec[]) ?? []).some((e) => e.kind === 'memory-max'), 'memory-max was not detected');
    assert.equal(of(ids.M, 'memory-max').length, 0, 'memory-max was alerted though it is metrics-only by default');
    assert.equal(of(ids.M, 'pids-max').length, 0);
    assert.equal(of(ids.P, 'oom-kill').length, 0);
  });

  await t.test('a pod-level memory limit: memory.events.local has oom in the pod and oom_kill in the victim; the alert is the container\'s', (t) => {
    const p = get('pod-memory');
    t.diagnostic(`pod OOM: oom-kill alert ${p.alertMs} ms after go; local pod ${JSON.stringify(p.localAfter.pod)}, container ${JSON.stringify(p.localAfter.ctr)}; alerts ${JSON.stringify(p.alerts)}`);
    // The kernel facts attribution relies on (mm/memcontrol.c memcg_memory_event).
    assert.ok(p.localAfter.pod.oom > (p.localBefore.pod.oom ?? 0), `pod local oom did not move: ${JSON.stringify(p)}`);
    assert.equal(p.localAfter.pod.oom_kill, 0, 'the victim is not in the pod cgroup itself');
    assert.ok(p.localAfter.ctr.oom_kill >= 1, `container local oom_kill: ${JSON.stringify(p.localAfter.ctr)}`);
    assert.equal(p.localAfter.ctr.oom ?? 0, 0, "the container's own limit was not the one hit");
    const kills = (p.alerts as Rec[]).filter((a) => a.kind === 'oom-kill' && a.state === 'firing');
    assert.equal(kills.length, 1, JSON.stringify(p.alerts));
    assert.equal(kills[0]!.cgroupPath, p.container);
    assert.equal(kills[0]!.victim, 'memhog', 'the kmsg victim merged into the counter\'s alert');
    assert.equal(kills[0]!.limitScope, 'pod', "the pod's limit fired");
    // The pod's own `oom` (its limit was hit) is the pod's, naming it.
    const podOom = (p.alerts as Rec[]).filter((a) => a.kind === 'oom' && a.state === 'firing' && a.cgroupPath === p.pod);
    t.diagnostic(`the pod's own oom alert ${p.podOomMs?.toFixed(0)} ms after go${p.podOomMs > 8000 ? ' (LATE: a known race, see the closing note of the session that saw it)' : ''}`);
    assert.equal(podOom.length, 1, JSON.stringify(p.alerts));
    assert.equal(podOom[0]!.limitScope, 'pod');
    assert.equal(podOom[0]!.podUid, p.pod.split('/pod').pop());
    assert.ok(!(p.alerts as Rec[]).some((a) => a.kind === 'oom-kill' && a.cgroupPath === p.pod), 'no oom-kill alert for the pod cgroup itself');
  });

  await t.test('the daemon logged no other warnings or errors and stopped cleanly', () => {
    const s = get('daemon-stop');
    for (const e of (s.limitEvents as Rec[]) ?? []) t.diagnostic(`limit event ${e.kind} via ${e.source}: count ${e.count}, kernel -> handler ${e.latencyMs} ms`);
    assert.deepEqual([s.code, s.killed], [0, false], s.stderr);
    assert.deepEqual(s.problems, []);
    assert.ok(s.alertsLogged > 0, 'alerts are logged as well');
    assert.deepEqual(s.nonJson, []);
    assert.equal(s.stderr, '');
  });
});
