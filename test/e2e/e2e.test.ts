/**
 * Issue 4 end to end, the daemon as in production: the built JS (`node dist/src/cli.js run`)
 * in its own process with a config file, ONE daemon for the whole scenario, with three real
 * consumers: a real Alertmanager (its sink), a webhook receiver that checks the HMAC signature
 * of every delivery, and a real Prometheus scraping the daemon's /metrics every second.
 * Workloads are real podman + runc containers.
 *
 * Containers are made with `podman create` before the daemon starts, so their ids (and cgroup
 * paths /libpod_parent/libpod-<id>) are known for the config: the two bomb containers get a
 * small fixed limit through `policy.overrides` (pidsMax 64, as an operator would pin one
 * container), the sizing and OOM containers get the plain policy (an override with no numbers),
 * and a catch-all `exclude` keeps the daemon (in `existing: replace`) off every other container
 * on this shared host. Then `podman start` makes the cgroups while the daemon runs.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isRoot, need } from '../helpers/prereq';
import { createContainer, ensureBusyboxImage, forkBombArgs, memoryHogArgs, podmanUnavailableReason, removeContainer, testContainerName, threadBombArgs, type WorkloadArgs } from '../helpers/podman';
import { startDaemon, startWebhookReceiver, type LogLine, type Received } from '../helpers/daemon';
import {
  ALERTMANAGER,
  PROMETHEUS,
  PROMTOOL,
  amActiveAlerts,
  podmanStart,
  promQuery,
  promTargets,
  promtoolCheckMetrics,
  startAlertmanager,
  startPrometheus,
  until,
} from '../helpers/prometheus';

const HMAC_ENV = 'CGWD_E2E_HMAC_SECRET';
const BOMB_LIMIT = 64;
/** The daemon re-checks a new container for 3 s (SETTLE_MS in src/daemon.ts) after finding it. */
const SETTLE_WAIT_MS = 3500;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const pidsMaxFile = (cgroupPath: string): string => path.join('/sys/fs/cgroup/pids', cgroupPath, 'pids.max');
const readPidsMax = (cgroupPath: string): string => fs.readFileSync(pidsMaxFile(cgroupPath), 'utf8').trim();
function pidsEventsMax(cgroupPath: string): number {
  const m = /^max (\d+)$/m.exec(fs.readFileSync(path.join('/sys/fs/cgroup/pids', cgroupPath, 'pids.events'), 'utf8'));
  return m ? Number(m[1]) : NaN;
}

interface C {
  id: string;
  name: string;
  cgroupPath: string;
}

/** A per-container series by the container's name: series carry the id, the names are in cgwatchdog_container_info. */
const byName = (metric: string, name: string): string => `${metric} * on(id) group_left(name, runtime) cgwatchdog_container_info{name="${name}"}`;

test('e2e: one daemon, real podman containers, a real Alertmanager and Prometheus, an HMAC webhook', async (t) => {
  need(isRoot(), 'root (the daemon writes cgroup files and reads /dev/kmsg)');
  const why = podmanUnavailableReason();
  need(why === undefined, `podman with runc and the busybox image: ${why}`);
  for (const bin of [PROMETHEUS, PROMTOOL, ALERTMANAGER]) {
    need(fs.existsSync(bin), `${bin} (apt-get install prometheus prometheus-alertmanager)`);
  }
  const tStart = Date.now();

  // ---- the consumers --------------------------------------------------------------------
  const secret = randomBytes(24).toString('hex');
  const hook = await startWebhookReceiver({ hmacSecret: secret });
  t.after(() => hook.close());
  const am = await startAlertmanager(t);

  // ---- the containers (made, not started) ------------------------------------------------
  const image = ensureBusyboxImage();
  const make = async (tag: string, w: WorkloadArgs, o: { cpus?: number; memory?: string } = {}): Promise<C> => {
    const name = testContainerName(`e2e-${tag}`);
    t.after(() => removeContainer(name));
    const { id } = await createContainer({ name, image, cmd: w.cmd, extra: w.extra, ...o });
    return { id, name, cgroupPath: `/libpod_parent/libpod-${id}` };
  };
  const sleeper: WorkloadArgs = { cmd: ['sleep', '100000'], extra: [] };
  const [size2, size8, bomb, threads, hog] = await Promise.all([
    make('cpus2', sleeper, { cpus: 2 }),
    make('cpus8', sleeper, { cpus: 8 }),
    make('forkbomb', forkBombArgs()),
    make('threadbomb', threadBombArgs({ retryMs: 200 })),
    make('oom', memoryHogArgs(), { memory: '32m' }),
  ]);
  const idsRe = (cs: C[]): string => `^/libpod_parent/libpod-(${cs.map((c) => c.id).join('|')})$`;

  // ---- the daemon -------------------------------------------------------------------------
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-e2e-state-'));
  const d = startDaemon(
    {
      mode: 'enforce',
      logLevel: 'debug',
      paths: { stateDir },
      kernel: { manage: false },
      discovery: { roots: ['/libpod_parent'] },
      policy: {
        existing: 'replace',
        overrides: [{ pathPattern: idsRe([bomb, threads]), pidsMax: BOMB_LIMIT }, { pathPattern: idsRe([size2, size8, hog]) }, { pathPattern: '^/libpod_parent/', exclude: true }],
      },
      alerts: {
        host: 'e2e-node',
        repeatIntervalSeconds: 2,
        resolveAfterSeconds: 300,
        sinks: [
          { type: 'webhook', name: 'hook', url: hook.url, hmac: { secret: { env: HMAC_ENV } }, retry: { initialDelayMs: 200, maxDelayMs: 1000 } },
          { type: 'alertmanager', name: 'am', url: am.url, retry: { initialDelayMs: 200, maxDelayMs: 1000 } },
        ],
      },
      names: { podmanBinary: 'podman' },
      metrics: { listen: '127.0.0.1:0' },
    },
    { t, env: { [HMAC_ENV]: secret } },
  );
  // The daemon writes its state on the way out: remove the directory only once it has stopped.
  t.after(async () => {
    await d.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
  });
  const listening = await d.waitForLog((l) => l.msg === 'metrics listening', 15_000);
  const metricsPort = listening.port as number;
  assert.ok(metricsPort > 0, `metrics port ${metricsPort}`);
  await d.waitForLog((l) => l.msg === 'detection running', 15_000);
  const prom = await startPrometheus({ targets: [`127.0.0.1:${metricsPort}`], scrapeInterval: '1s' }, t);
  t.diagnostic(`set-up (Alertmanager, 5 containers created, daemon, Prometheus): ${Date.now() - tStart} ms`);

  const webhookFor = (c: C, pred: (r: Received) => boolean = () => true) => (r: Received): boolean => r.alert?.container?.name === c.name && pred(r);
  const loggedAlert = (c: C, kind: string) => (l: LogLine): boolean => l.alert?.kind === kind && l.alert.container?.cgroupPath === c.cgroupPath;

  await t.test('containers started with --cpus 2 and --cpus 8 get their policy values (6144, 8192)', async () => {
    const t0 = Date.now();
    await Promise.all([podmanStart(size2.name), podmanStart(size8.name)]);
    for (const [c, want] of [
      [size2, '6144'],
      [size8, '8192'],
    ] as const) {
      await until(() => (readPidsMax(c.cgroupPath) === want ? true : undefined), 5000, () => `${c.name} pids.max ${want} (is ${readPidsMax(c.cgroupPath)})`, 5);
    }
    t.diagnostic(`podman start -> pids.max 6144 and 8192: ${Date.now() - t0} ms`);
    await sleep(Math.max(0, SETTLE_WAIT_MS - (Date.now() - t0)));
    assert.equal(readPidsMax(size2.cgroupPath), '6144', 'did not hold after the settle window');
    assert.equal(readPidsMax(size8.cgroupPath), '8192', 'did not hold after the settle window');
  });

  await t.test('a fork bomb and a thread bomb each give a pids-max alert at the webhook, by podman name, with topCommands', async () => {
    const t0 = Date.now();
    await Promise.all([podmanStart(bomb.name), podmanStart(threads.name)]);
    for (const c of [bomb, threads]) {
      await until(() => (readPidsMax(c.cgroupPath) === String(BOMB_LIMIT) ? true : undefined), 5000, () => `${c.name} pids.max ${BOMB_LIMIT} (is ${readPidsMax(c.cgroupPath)})`, 5);
    }
    const [fb, tb] = await Promise.all([
      hook.waitFor(webhookFor(bomb, (r) => r.alert.kind === 'pids-max'), 10_000),
      hook.waitFor(webhookFor(threads, (r) => r.alert.kind === 'pids-max'), 15_000),
    ]);
    t.diagnostic(`podman start -> pids-max alert at the webhook: fork bomb ${fb.at - t0} ms, thread bomb ${tb.at - t0} ms`);
    for (const [r, c] of [
      [fb, bomb],
      [tb, threads],
    ] as const) {
      const a = r.alert;
      assert.equal(r.hmacOk, true, `HMAC did not verify on ${c.name}'s alert`);
      assert.equal(r.headers['idempotency-key'], a.idempotencyKey);
      assert.equal(a.state, 'firing');
      assert.equal(a.sequence, 1);
      assert.equal(a.host, 'e2e-node');
      assert.equal(a.container.name, c.name);
      assert.equal(a.container.id, c.id);
      assert.equal(a.container.runtime, 'podman');
      assert.equal(a.container.cgroupPath, c.cgroupPath);
      assert.equal(a.counters.limit, BOMB_LIMIT);
      assert.ok(a.counters.eventsTotal >= 1, `counters ${JSON.stringify(a.counters)}`);
      assert.ok(Array.isArray(a.topCommands) && a.topCommands.length > 0, `topCommands ${JSON.stringify(a.topCommands)}`);
      const tasks = a.topCommands.reduce((s: number, x: { tasks: number }) => s + x.tasks, 0);
      assert.ok(tasks >= BOMB_LIMIT / 2, `topCommands count only ${tasks} tasks: ${JSON.stringify(a.topCommands)}`);
      t.diagnostic(`${c.name}: ${a.summary}; topCommands ${JSON.stringify(a.topCommands)}; sources ${JSON.stringify(a.sources)}`);
    }
    const fbComms = fb.alert.topCommands.map((x: { comm: string }) => x.comm);
    assert.ok(fbComms.includes('sleep'), `fork bomb topCommands ${JSON.stringify(fb.alert.topCommands)}`);
    assert.ok(pidsEventsMax(bomb.cgroupPath) >= 1 && pidsEventsMax(threads.cgroupPath) >= 1);
  });

  await t.test('an OOM kill (--memory 32m) gives an oom-kill alert naming the victim; made while the webhook is down, it arrives once it is back', async () => {
    await hook.setDown(true);
    const downAt = Date.now();
    await podmanStart(hog.name);
    const logged = await d.waitForLog(loggedAlert(hog, 'oom-kill'), 10_000);
    assert.ok(logged._at >= downAt);
    // The daemon tried the webhook while it was down.
    await d.waitForLog((l) => l.msg === 'alert delivery failed; will retry' && l.sink === 'hook' && l._at >= downAt, 10_000);
    assert.equal(
      hook.received.filter(webhookFor(hog, (r) => r.alert.kind === 'oom-kill')).length,
      0,
      'an alert arrived while the receiver was down',
    );
    await sleep(1000); // a few more failed attempts
    await hook.setDown(false);
    const upAt = Date.now();
    const r = await hook.waitFor(webhookFor(hog, (x) => x.alert.kind === 'oom-kill'), 10_000);
    t.diagnostic(`receiver back -> oom-kill alert delivered: ${r.at - upAt} ms (down for ${upAt - downAt} ms)`);
    const a = r.alert;
    assert.equal(r.hmacOk, true);
    assert.equal(a.state, 'firing');
    assert.equal(a.container.name, hog.name);
    assert.equal(a.container.cgroupPath, hog.cgroupPath);
    assert.equal(a.victim?.comm, 'dd', `victim ${JSON.stringify(a.victim)}`);
    assert.ok(a.victim.pid > 0);
    assert.ok(a.counters.eventsTotal >= 1);
    t.diagnostic(`oom-kill: ${a.summary}; victim ${JSON.stringify(a.victim)}`);
  });

  await t.test('Prometheus (its HTTP API) has the containers\' pids.max and the bombs\' limit-hit counters', async () => {
    const targets = await until(
      async () => {
        const ts = await promTargets(prom);
        return ts.length > 0 && ts.every((x) => x.health === 'up') ? ts : undefined;
      },
      10_000,
      async () => `the scrape target to be up: ${JSON.stringify(await promTargets(prom).catch(() => []))}`,
    );
    assert.equal(targets[0]!.scrapeUrl, `http://127.0.0.1:${metricsPort}/metrics`);
    const one = async (q: string): Promise<number | undefined> => {
      const r = await promQuery(prom, q);
      return r.length === 1 ? r[0]!.value : undefined;
    };
    for (const c of [size2, size8, bomb, threads, hog]) {
      const want = Number(readPidsMax(c.cgroupPath));
      const q = byName('cgwatchdog_container_pids_max', c.name);
      await until(async () => ((await one(q)) === want ? true : undefined), 10_000, async () => `${q} = ${want} (Prometheus says ${JSON.stringify(await promQuery(prom, q))})`);
      const [s] = await promQuery(prom, q);
      assert.equal(s!.metric.id, c.id);
      assert.equal(s!.metric.runtime, 'podman');
    }
    for (const c of [bomb, threads]) {
      const q = byName('cgwatchdog_container_pids_limit_hits_total', c.name);
      const v = await until(async () => {
        const x = await one(q);
        return x !== undefined && x >= 1 ? x : undefined;
      }, 10_000, async () => `${q} >= 1 (Prometheus says ${JSON.stringify(await promQuery(prom, q))})`);
      t.diagnostic(`${q} = ${v} (pids.events max ${pidsEventsMax(c.cgroupPath)})`);
      assert.ok(v <= pidsEventsMax(c.cgroupPath), `hits ${v} > the kernel's count ${pidsEventsMax(c.cgroupPath)}`);
    }
    const qk = byName('cgwatchdog_container_oom_kills_total', hog.name);
    await until(async () => {
      const x = await one(qk);
      return x !== undefined && x >= 1 ? x : undefined;
    }, 10_000, async () => `${qk} >= 1 (Prometheus says ${JSON.stringify(await promQuery(prom, qk))})`);
  });

  await t.test('promtool check metrics passes on a scrape of /metrics', async () => {
    const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, new RegExp(`^cgwatchdog_container_pids_max\\{id="${size2.id}"\\} 6144$`, 'm'));
    assert.match(text, new RegExp(`^cgwatchdog_container_info\\{id="${size2.id}",name="${size2.name}",[^}]*runtime="podman"[^}]*\\} 1$`, 'm'));
    const r = await promtoolCheckMetrics(text);
    assert.deepEqual(r.problems, [], `promtool (exit ${r.code}):\n${r.out}`);
    const health = await fetch(`http://127.0.0.1:${metricsPort}/healthz`);
    assert.equal(health.status, 200, await health.text());
  });

  await t.test('Alertmanager holds the fork bomb\'s alert by container name; after podman rm it is resolved', async () => {
    const mine = (list: Awaited<ReturnType<typeof amActiveAlerts>>) => list.find((a) => a.labels.container === bomb.name && a.labels.alertname === 'CgwatchdogPIDsMax');
    const active = await until(async () => mine(await amActiveAlerts(am)), 10_000, 'the fork bomb alert active in Alertmanager');
    assert.equal(active.status.state, 'active');
    assert.equal(active.labels.kind, 'pids-max');
    assert.equal(active.labels.severity, 'critical');
    assert.equal(active.labels.host, 'e2e-node');
    assert.equal(active.labels.container_id, bomb.id);
    assert.equal(active.labels.runtime, 'podman');
    assert.equal(active.labels.cgroup, bomb.cgroupPath);
    assert.match(active.annotations.top_commands ?? '', /sleep=\d+/);
    const hogAlert = (await amActiveAlerts(am)).find((a) => a.labels.container === hog.name && a.labels.kind === 'oom-kill');
    assert.match(hogAlert?.annotations.victim ?? '', /^dd \(pid \d+/, `oom-kill alert in Alertmanager: ${JSON.stringify(hogAlert)}`);

    const rmAt = Date.now();
    await removeContainer(bomb.name);
    await d.waitForLog((l) => l.msg === 'container gone' && l.id === bomb.id, 10_000);
    await until(async () => (mine(await amActiveAlerts(am)) ? undefined : true), 10_000, 'the fork bomb alert no longer active in Alertmanager');
    const resolved = await hook.waitFor(webhookFor(bomb, (r) => r.alert.kind === 'pids-max' && r.alert.state === 'resolved'), 10_000);
    t.diagnostic(`podman rm -> resolved at the webhook ${resolved.at - rmAt} ms, inactive in Alertmanager by ${Date.now() - rmAt} ms`);
    assert.equal(resolved.hmacOk, true);
    assert.ok(resolved.alert.endsAt, 'a resolution without endsAt');
    // Prometheus sees the series go (the next scrape lacks it: staleness).
    const q = byName('cgwatchdog_container_pids_max', bomb.name);
    await until(async () => ((await promQuery(prom, q)).length === 0 ? true : undefined), 10_000, `${q} to disappear from Prometheus`);
  });

  await t.test('nothing was lost at the webhook: every alert the daemon logged arrived, by idempotency key, signed', async () => {
    // The delivery worker logs each attempt with the alert's idempotency key.
    const keysTried = () => new Set(d.logs.filter((l) => l.sink === 'hook' && typeof l.idempotencyKey === 'string').map((l) => l.idempotencyKey as string));
    const received = () => new Set(hook.received.map((r) => r.alert?.idempotencyKey as string));
    const made = () => d.logs.filter((l) => l.alert && typeof l.alert.kind === 'string').length;
    await until(
      () => {
        const got = received();
        return [...keysTried()].every((k) => got.has(k)) && got.size >= made() ? true : undefined;
      },
      10_000,
      () => {
        const got = received();
        return `all keys at the receiver: missing ${[...keysTried()].filter((k) => !got.has(k)).join(', ') || 'none'}; the daemon made ${made()} alerts, ${got.size} distinct arrived`;
      },
    );
    const failed = d.logs.filter((l) => l.msg === 'alert delivery failed; will retry' && l.sink === 'hook');
    const retriedOk = d.logs.filter((l) => l.msg === 'alert delivered after retries' && l.sink === 'hook');
    assert.ok(failed.length >= 1 && retriedOk.length >= 1, `the outage was not exercised: ${failed.length} failures, ${retriedOk.length} late deliveries`);
    for (const r of hook.received) assert.equal(r.hmacOk, true, `HMAC failed on ${r.alert?.kind}#${r.alert?.sequence} for ${r.alert?.container?.name}`);
    assert.equal(hook.rejectedCount(), 0);

    // One alert per container and kind (one fingerprint, one first message); updates of a
    // firing alert at most every repeatIntervalSeconds (2 s; updatedAt is the daemon's clock).
    const byKey = new Map<string, Received[]>();
    for (const r of hook.received) {
      const k = `${r.alert.container.cgroupPath} ${r.alert.kind}`;
      byKey.set(k, [...(byKey.get(k) ?? []), r]);
    }
    for (const [k, rs] of byKey) {
      const uniq = [...new Map(rs.map((r) => [r.alert.idempotencyKey, r.alert])).values()].sort((a, b) => a.sequence - b.sequence);
      assert.equal(new Set(uniq.map((a) => a.fingerprint)).size, 1, `${k}: more than one fingerprint`);
      assert.deepEqual(uniq.map((a) => a.sequence), uniq.map((_, i) => i + 1), `${k}: sequences ${uniq.map((a) => a.sequence).join(',')}`);
      const firing = uniq.filter((a) => a.state === 'firing');
      for (let i = 1; i < firing.length; i++) {
        const gap = Date.parse(firing[i]!.updatedAt) - Date.parse(firing[i - 1]!.updatedAt);
        assert.ok(gap >= 1900, `${k}: update #${firing[i]!.sequence} ${gap} ms after the previous one (repeatIntervalSeconds 2)`);
      }
    }
    const dupes = hook.received.length - received().size;
    t.diagnostic(`webhook: ${hook.received.length} deliveries, ${received().size} distinct keys (${dupes} re-deliveries), daemon made ${made()} alerts; ${failed.length} failed attempts, ${retriedOk.length} delivered after retries`);
    t.diagnostic(`by kind/state: ${JSON.stringify(hook.received.reduce<Record<string, number>>((m, r) => ((m[`${r.alert.kind}/${r.alert.state}`] = (m[`${r.alert.kind}/${r.alert.state}`] ?? 0) + 1), m), {}))}`);
  });

  const errors = d.logs.filter((l) => (l.level ?? 0) >= 50);
  t.diagnostic(`daemon error lines: ${errors.length}${errors.length ? `: ${[...new Set(errors.map((l) => l.msg))].join(' | ')}` : ''}`);
  if (process.env.CGWD_E2E_LOG_DUMP) fs.writeFileSync(process.env.CGWD_E2E_LOG_DUMP, d.logs.map((l) => JSON.stringify(l)).join('\n'));
  t.diagnostic(`whole scenario: ${Date.now() - tStart} ms`);
});
