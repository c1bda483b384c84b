/**
 * deploy/prometheus/cgwatchdog.rules.yml and deploy/grafana/cgwatchdog-dashboard.json against
 * the real thing: promtool checks and unit-tests the rules; then the real daemon on this host
 * (v1 cgroups of the test's own), scraped by a real Prometheus with the rules loaded, sees a
 * fork bomb and two OOM kills whose containers are removed at once, and Prometheus itself says
 * which alerts fire and what every dashboard query returns.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { exited, spawnInCgroup, v1Dir } from '../helpers/v1-cgroups';
import { BOMB, config, daemon, defer, hex64, makeContainer, ready, receiver, removeTasks, stateDir, testRoot, waitPidsMax, webhookSink } from '../helpers/v1-daemon';
import { PROMETHEUS, PROMTOOL, getJson, promQuery, startPrometheus, until, type Server } from '../helpers/prometheus';
import { need } from '../helpers/prereq';

const DEPLOY = path.resolve(__dirname, '..', '..', '..', 'deploy');
const RULES = path.join(DEPLOY, 'prometheus', 'cgwatchdog.rules.yml');
const RULES_TEST = path.join(DEPLOY, 'prometheus', 'cgwatchdog.rules.test.yml');
const DASHBOARD = path.join(DEPLOY, 'grafana', 'cgwatchdog-dashboard.json');

function promtool(args: string[]): { code: number | null; out: string } {
  const r = spawnSync(PROMTOOL, args, { encoding: 'utf8', timeout: 60_000, cwd: path.dirname(RULES) });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

interface Panel {
  id: number;
  type: string;
  title: string;
  targets?: { expr: string; refId: string }[];
}
interface Dashboard {
  panels: Panel[];
  templating: { list: { name: string; type: string; query: string | { query: string } }[] };
}
const dashboard = (): Dashboard => JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as Dashboard;

test('promtool: the rules file is valid and its unit tests (every rule firing and not firing) pass', () => {
  need(fs.existsSync(PROMTOOL), `${PROMTOOL} (Debian package prometheus)`);
  const check = promtool(['check', 'rules', RULES]);
  assert.equal(check.code, 0, check.out);
  assert.match(check.out, /SUCCESS: 9 rules found/);
  const unit = promtool(['test', 'rules', RULES_TEST]);
  assert.equal(unit.code, 0, unit.out);
  assert.match(unit.out, /SUCCESS/);
  // Every alert of the rules file is exercised by the unit tests.
  const alerts = [...fs.readFileSync(RULES, 'utf8').matchAll(/^\s+- alert: (\w+)$/gm)].map((m) => m[1]!);
  const tested = new Set([...fs.readFileSync(RULES_TEST, 'utf8').matchAll(/alertname: (\w+)$/gm)].map((m) => m[1]!));
  assert.deepEqual(alerts.filter((a) => !tested.has(a)), [], 'alerts without a unit test');
});

test('the dashboard: unique panel ids, every query on the $datasource variable', () => {
  const d = dashboard();
  const ids = d.panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  const text = fs.readFileSync(DASHBOARD, 'utf8');
  const uids = [...text.matchAll(/"uid": "([^"]*)"/g)].map((m) => m[1]);
  assert.ok(uids.every((u) => u === '${datasource}' || u === '-- Grafana --' || u === 'cgwatchdog'), `datasource uids: ${[...new Set(uids)].join(', ')}`);
  assert.deepEqual(d.templating.list.map((v) => v.name), ['datasource', 'job', 'instance', 'namespace', 'pod']);
  for (const p of d.panels.filter((x) => x.type !== 'row')) assert.ok(p.targets?.length, `panel "${p.title}" has no query`);
});

type Alert = { labels: Record<string, string>; annotations: Record<string, string>; state: string; activeAt: string; value: string };
async function firing(prom: Server): Promise<Alert[]> {
  const r = await getJson(`${prom.url}/api/v1/alerts`);
  return ((r.body?.data?.alerts ?? []) as Alert[]).filter((a) => a.state === 'firing');
}

/** One series' raw samples in Prometheus over the last `range` (a range-vector query). */
async function samples(prom: Server, selector: string, range = '5m'): Promise<number[]> {
  const r = await getJson(`${prom.url}/api/v1/query?query=${encodeURIComponent(`${selector}[${range}]`)}`);
  assert.equal(r.body?.status, 'success', JSON.stringify(r.body));
  const m = r.body.data.result as { values: [number, string][] }[];
  assert.equal(m.length, 1, `${selector}: ${m.length} series`);
  return m[0]!.values.map((v) => Number(v[1]));
}

test('real daemon, real Prometheus with the rules: a fork bomb and two OOM kills of containers removed at once fire their alerts; every dashboard query returns series', async (t) => {
  ready();
  need(fs.existsSync(PROMETHEUS) && fs.existsSync(PROMTOOL), `${PROMETHEUS} and ${PROMTOOL} (Debian package prometheus)`);
  const t0 = Date.now();
  const root = testRoot(t);
  // A Kubernetes pod (cgroupfs driver) whose names come from the kubelet's log directory.
  const podUid = randomUUID();
  const podDir = `${root}/kubepods/burstable/pod${podUid}`;
  const podLogs = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-test-podlogs-'));
  defer(t, () => fs.rmSync(podLogs, { recursive: true, force: true }));
  fs.mkdirSync(path.join(podLogs, `shop_web-0_${podUid}`));
  const ids = { bomb: hex64(), quick: hex64(), fresh: hex64() };
  const rel = { bomb: `${podDir}/${ids.bomb}`, quick: `${podDir}/${ids.quick}`, fresh: `${podDir}/${ids.fresh}` };
  makeContainer(rel.bomb);
  makeContainer(rel.quick);
  // The bomb's container has a memory limit too: the dashboard's memory panel shows live containers only.
  fs.writeFileSync(path.join(v1Dir('memory', rel.bomb), 'memory.limit_in_bytes'), String(256 << 20));
  fs.writeFileSync(path.join(v1Dir('memory', rel.quick), 'memory.limit_in_bytes'), String(32 << 20));

  const { hook, env } = await receiver(t);
  const cfg = await config(root, stateDir(t), {
    policy: { overrides: [{ pathPattern: `^${rel.bomb}$`, pidsMax: 20 }] },
    names: { criSockets: [], containerdSocket: '', kubernetesPodLogs: podLogs, podmanBinary: '', timeoutMs: 500 },
    alerts: { sinks: [webhookSink(hook.url)] },
  });
  const listen = cfg.metrics.listen as string;
  await daemon(t, cfg, { env });
  const daemonMetrics = async (): Promise<string> => (await fetch(`http://${listen}/metrics`)).text();
  assert.notEqual(await waitPidsMax(rel.bomb, '20', 5000), null, 'the override was not written');

  const prom = await startPrometheus({ targets: [listen], scrapeInterval: '1s', ruleFiles: [RULES] });
  defer(t, () => prom.stop());
  const groups = (await getJson(`${prom.url}/api/v1/rules`)).body?.data?.groups as { name: string }[];
  assert.deepEqual(groups.map((g) => g.name).sort(), ['cgwatchdog-containers', 'cgwatchdog-daemon', 'cgwatchdog-host']);
  // Prometheus has seen both containers at 0 and with their pod's names.
  await until(async () => ((await promQuery(prom, `cgwatchdog_container_oom_kills_total{id="${ids.quick}"} == 0 and on() cgwatchdog_container_pids_limit_hits_total{id="${ids.bomb}"} == 0`)).length ? true : undefined), 15_000, 'the first scrapes');
  await until(async () => ((await promQuery(prom, `cgwatchdog_container_info{id=~"${ids.bomb}|${ids.quick}", pod="web-0", namespace="shop"}`)).length === 2 ? true : undefined), 10_000, 'the pod names in cgwatchdog_container_info');

  // (1) A fork bomb at its pids.max of 20.
  const bomb = spawnInCgroup(rel.bomb, ['pids'], '/usr/bin/perl', BOMB);
  defer(t, () => bomb.kill('SIGKILL'));
  const bombAt = Date.now();
  await until(async () => (/cgwatchdog_container_pids_limit_hits_total\{id="[0-9a-f]+"\} [1-9]/.test(await daemonMetrics()) ? true : undefined), 10_000, 'the daemon counting the rejected forks');
  bomb.kill('SIGKILL');
  await removeTasks(rel.bomb);

  // The runtime's clean-up as fast as it can be: the cgroup goes the moment its last task has exited.
  const oomAndRemove = async (r: string): Promise<number> => {
    const dirs = ['memory', 'pids', 'cpu', 'cpuset'].map((c) => v1Dir(c, r));
    const remover = spawn('/usr/bin/perl', ['-e', 'sub busy { open(my $f, "<", "$_[0]/tasks") or return 0; my $l = <$f>; defined $l } 1 until busy($ARGV[0]); for my $d (@ARGV) { 1 until rmdir($d) || !-d $d }', ...dirs], { stdio: 'ignore' });
    defer(t, () => remover.kill('SIGKILL'));
    const hog = spawnInCgroup(r, ['pids', 'memory'], '/bin/sh', ['-c', 'exec tail < /dev/zero']);
    defer(t, () => hog.kill('SIGKILL'));
    const res = await exited(hog);
    assert.equal(res.signal, 'SIGKILL', `the hog was not OOM-killed: ${JSON.stringify(res)}`);
    await exited(remover);
    const at = Date.now();
    assert.equal(fs.existsSync(dirs[0]!), false, 'the cgroup is gone');
    return at;
  };
  const counted = (id: string) => async (): Promise<true | undefined> => (new RegExp(`^cgwatchdog_container_oom_kills_total\\{id="${id}"\\} 1$`, 'm').test(await daemonMetrics()) ? true : undefined);

  // (2) "quick": Prometheus saw it at 0; OOM-killed and removed within a second.
  const quickAt = await oomAndRemove(rel.quick);
  await until(counted(ids.quick), 10_000, 'the daemon counting the quick OOM kill');

  // (3) "fresh": made, OOM-killed and removed between two scrapes (Prometheus is paused), so
  // its series appears already at 1 and never at 0: increase() alone never sees it.
  prom.proc.kill('SIGSTOP');
  defer(t, () => prom.proc.kill('SIGCONT'));
  makeContainer(rel.fresh);
  fs.writeFileSync(path.join(v1Dir('memory', rel.fresh), 'memory.limit_in_bytes'), String(32 << 20));
  await until(async () => ((await daemonMetrics()).includes(`cgwatchdog_container_info{id="${ids.fresh}"`) ? true : undefined), 5000, 'the daemon seeing the fresh container');
  const freshAt = await oomAndRemove(rel.fresh);
  await until(counted(ids.fresh), 10_000, 'the daemon counting the fresh OOM kill');
  prom.proc.kill('SIGCONT');

  // (a) The alerts fire in Prometheus, with the pod's names joined from cgwatchdog_container_info.
  const want = [
    { alertname: 'CgwatchdogContainerPidsLimitHit', id: ids.bomb, since: bombAt },
    { alertname: 'CgwatchdogContainerOOMKill', id: ids.quick, since: quickAt },
    { alertname: 'CgwatchdogContainerOOMKill', id: ids.fresh, since: freshAt },
  ];
  for (const w of want) {
    const a = await until(async () => (await firing(prom)).find((x) => x.labels.alertname === w.alertname && x.labels.id === w.id), 20_000, async () => `${w.alertname} for ${w.id} firing; firing now: ${JSON.stringify((await firing(prom)).map((x) => [x.labels.alertname, x.labels.id]))}`);
    t.diagnostic(`${w.alertname} (${w.id.slice(0, 12)}) firing ${Date.now() - w.since} ms after the event: ${a.annotations.summary}; value ${a.value}`);
    assert.equal(a.labels.pod, 'web-0');
    assert.ok(a.annotations.summary?.includes(`${w.id} of pod shop/web-0`), a.annotations.summary);
    assert.equal(a.labels.namespace, 'shop');
    assert.equal(a.labels.severity, 'warning');
    assert.equal(a.labels.instance, listen);
    assert.ok(Number(a.value) >= 1, `value ${a.value}`);
  }
  // What made "fresh" hard: Prometheus never had a 0 of it, and increase() of it is 0.
  const fresh = await samples(prom, `cgwatchdog_container_oom_kills_total{id="${ids.fresh}"}`);
  assert.ok(fresh.length > 0 && fresh.every((v) => v === 1), `fresh samples: ${fresh.join(',')}`);
  assert.deepEqual((await promQuery(prom, `increase(cgwatchdog_container_oom_kills_total{id="${ids.fresh}"}[5m]) > 0`)).length, 0);
  const quick = await samples(prom, `cgwatchdog_container_oom_kills_total{id="${ids.quick}"}`);
  assert.ok(quick[0] === 0 && quick.at(-1) === 1, `quick samples: ${quick.join(',')}`);
  // No alert but these three (the daemon is up and healthy, the host far from pid_max).
  const others = (await firing(prom)).filter((a) => !want.some((w) => w.alertname === a.labels.alertname && w.id === a.labels.id));
  assert.deepEqual(others.map((a) => a.labels), []);

  // Every metric name the rules and the dashboard use is one the daemon exports (HELP lines
  // list also the labelled counters that have no series yet).
  const exported = new Set([...(await daemonMetrics()).matchAll(/^# HELP (\w+) /gm)].map((m) => m[1]!));
  const used = new Set([...`${fs.readFileSync(RULES, 'utf8')}${fs.readFileSync(DASHBOARD, 'utf8')}`.matchAll(/\b((?:cgwatchdog|process|nodejs)_\w+)/g)].map((m) => m[1]!));
  const unknown = [...used].filter((n) => !exported.has(n) && !exported.has(n.replace(/_(bucket|count|sum)$/, '')));
  assert.deepEqual(unknown, [], 'metric names the daemon does not export');

  // (b) Every dashboard query, with its variables set to real values, returns series.
  const label = async (name: string): Promise<string[]> => ((await getJson(`${prom.url}/api/v1/label/${name}/values?match[]=cgwatchdog_container_info`)).body.data as string[]).filter((v) => v !== '');
  const vars: Record<string, string> = { job: 'cgwatchdog', instance: listen, namespace: (await label('namespace'))[0]!, pod: (await label('pod'))[0]!, __rate_interval: '1m' };
  assert.deepEqual([vars.namespace, vars.pod], ['shop', 'web-0']);
  const subst = (q: string): string =>
    q.replace(/\$\{?(\w+)\}?/g, (_, v: string) => {
      const value = vars[v];
      if (value === undefined) throw new Error(`unknown variable $${v} in ${q}`);
      return value;
    });
  const d = dashboard();
  const queries: { what: string; expr: string; label?: string }[] = [];
  for (const p of d.panels) for (const tg of p.targets ?? []) queries.push({ what: `panel "${p.title}" ${tg.refId}`, expr: subst(tg.expr) });
  // A variable's label_values(selector, label) is the label's non-empty values among the selector's series.
  for (const v of d.templating.list.filter((x) => x.type === 'query')) {
    const q = typeof v.query === 'string' ? v.query : v.query.query;
    const m = /^label_values\((.+), (\w+)\)$/.exec(q);
    assert.ok(m, `variable ${v.name}: ${q}`);
    queries.push({ what: `variable $${v.name}`, expr: `count by (${m[2]}) (${subst(m[1]!)})`, label: m[2] });
  }
  const empty: string[] = [];
  for (const q of queries) {
    // Some panels rate over a minute: a series may need a few scrapes more.
    const got = await until(async () => ((await promQuery(prom, q.expr)).some((s) => !q.label || (s.metric[q.label] ?? '') !== '') ? true : undefined), 10_000, q.what).catch(() => false);
    if (!got) empty.push(`${q.what}: ${q.expr}`);
  }
  t.diagnostic(`${queries.length} dashboard queries, ${queries.length - empty.length} with series; test ${Date.now() - t0} ms`);
  assert.deepEqual(empty, [], 'dashboard queries with no series');
  assert.ok(hook.received.length > 0, 'the daemon\'s own alerts arrived too');
});
