/**
 * Real Prometheus and Alertmanager from Debian (`/usr/bin/prometheus`,
 * `/usr/bin/prometheus-alertmanager`) for tests: on 127.0.0.1 only, on free ports, with their
 * data in a temp dir that stop() removes. Pass `t` to have stop() run in t.after, so the
 * server is gone also when the test fails; a process 'exit' hook SIGKILLs any still running.
 *
 * Also `promtoolCheckMetrics` (promtool's lint of an exposition text, with prom-client's known
 * default-metric findings allowed) and `podmanStart` (the counterpart of podman.ts's createContainer).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { run } from './podman';
import { freePort } from './daemon';

export const PROMETHEUS = '/usr/bin/prometheus';
export const ALERTMANAGER = '/usr/bin/prometheus-alertmanager';
export const PROMTOOL = '/usr/bin/promtool';

export interface Server {
  /** http://127.0.0.1:<port> */
  url: string;
  port: number;
  proc: ChildProcess;
  dir: string;
  /** All of stderr so far (both servers log there). */
  stderr(): string;
  /** SIGTERM, SIGKILL after 5 s; removes the data dir. Idempotent. */
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
let exitHook = false;
function track(p: ChildProcess): void {
  running.add(p);
  p.once('exit', () => running.delete(p));
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const c of running) c.kill('SIGKILL');
    });
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** GET with a timeout; the status and the body (parsed as JSON when it is JSON). */
export async function getJson(url: string, timeoutMs = 5000): Promise<{ status: number; body: any }> {
  const r = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await r.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* plain text (/-/ready) */
  }
  return { status: r.status, body };
}

/** Polls `f` every `everyMs` until it returns something other than undefined; throws after `timeoutMs`. */
export async function until<T>(f: () => Promise<T | undefined> | T | undefined, timeoutMs: number, what: string | (() => string | Promise<string>), everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await f();
      if (v !== undefined) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > end) {
      const w = typeof what === 'function' ? await Promise.resolve().then(what).catch((e: Error) => `(${e.message})`) : what;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${w}${lastErr ? ` (last error: ${(lastErr as Error).message})` : ''}`);
    }
    await sleep(everyMs);
  }
}

async function startServer(bin: string, name: string, args: (port: number, dir: string) => string[], setup: (dir: string) => void, t?: TestContext): Promise<Server> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `cgwd-${name}-`));
  setup(dir);
  const port = await freePort();
  let err = '';
  const proc = spawn(bin, args(port, dir), { stdio: ['ignore', 'ignore', 'pipe'], cwd: dir });
  track(proc);
  proc.stderr!.on('data', (d: Buffer) => {
    err += d.toString('utf8');
    if (err.length > 200_000) err = err.slice(-100_000);
  });
  const exited = new Promise<void>((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) resolve();
    proc.once('exit', () => resolve());
    proc.once('error', () => resolve());
  });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    })());
  t?.after(() => stop());
  const url = `http://127.0.0.1:${port}`;
  try {
    await until(
      async () => {
        if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${name} exited (${proc.exitCode ?? proc.signalCode}): ${err.slice(-2000)}`);
        return (await getJson(`${url}/-/ready`, 1000)).status === 200 ? true : undefined;
      },
      20_000,
      () => `${name} ready on ${url}: ${err.slice(-2000)}`,
    );
  } catch (e) {
    await stop();
    throw e;
  }
  return { url, port, proc, dir, stderr: () => err, stop };
}

/**
 * Alertmanager with a route to a receiver that sends nothing (its API holds the alerts), or
 * with `config` as its am.yml (routes to receivers of the test's own).
 */
export function startAlertmanager(t?: TestContext, config = "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n"): Promise<Server> {
  return startServer(
    ALERTMANAGER,
    'alertmanager',
    (port, dir) => [
      `--config.file=${path.join(dir, 'am.yml')}`,
      `--storage.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--cluster.listen-address=', // no gossip port
      '--log.level=warn',
    ],
    (dir) => fs.writeFileSync(path.join(dir, 'am.yml'), config),
    t,
  );
}

export interface PrometheusOptions {
  /** host:port targets of one scrape job. */
  targets: string[];
  job?: string;
  /** Default 1s. */
  scrapeInterval?: string;
  /** More scrape jobs, as Prometheus config objects (written as JSON, which is YAML): TLS, basic_auth... */
  scrapeConfigs?: Record<string, unknown>[];
  /** Absolute paths of rule files to load (`rule_files`); rules are evaluated every `scrapeInterval`. */
  ruleFiles?: string[];
}

/** Prometheus scraping `targets` (job `job`, default "cgwatchdog") every `scrapeInterval`. */
export function startPrometheus(o: PrometheusOptions, t?: TestContext): Promise<Server> {
  const interval = o.scrapeInterval ?? '1s';
  const yml = [
    'global:',
    `  scrape_interval: ${interval}`,
    `  evaluation_interval: ${interval}`,
    ...(o.ruleFiles?.length ? ['rule_files:', ...o.ruleFiles.map((f) => `  - ${JSON.stringify(f)}`)] : []),
    'scrape_configs:',
    `  - job_name: ${JSON.stringify(o.job ?? 'cgwatchdog')}`,
    `    scrape_interval: ${interval}`,
    `    scrape_timeout: ${interval}`,
    '    static_configs:',
    `      - targets: ${JSON.stringify(o.targets)}`,
    ...(o.scrapeConfigs ?? []).map((job) => `  - ${JSON.stringify(job)}`),
    '',
  ].join('\n');
  return startServer(
    PROMETHEUS,
    'prometheus',
    (port, dir) => [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    (dir) => fs.writeFileSync(path.join(dir, 'prometheus.yml'), yml),
    t,
  );
}

export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

/** An instant query through Prometheus's HTTP API (`/api/v1/query`): the vector's samples. */
export async function promQuery(prom: Pick<Server, 'url'>, query: string): Promise<PromSample[]> {
  const r = await getJson(`${prom.url}/api/v1/query?query=${encodeURIComponent(query)}`);
  if (r.status !== 200 || r.body?.status !== 'success') throw new Error(`query ${query}: HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 500)}`);
  if (r.body.data.resultType !== 'vector') throw new Error(`query ${query}: result type ${r.body.data.resultType}`);
  return (r.body.data.result as { metric: Record<string, string>; value: [number, string] }[]).map((s) => ({ metric: s.metric, value: Number(s.value[1]) }));
}

/** The scrape targets' health as Prometheus sees it (`/api/v1/targets`). */
export async function promTargets(prom: Pick<Server, 'url'>): Promise<{ scrapeUrl: string; health: string; lastError: string }[]> {
  const r = await getJson(`${prom.url}/api/v1/targets`);
  return (r.body?.data?.activeTargets ?? []) as { scrapeUrl: string; health: string; lastError: string }[];
}

export interface AmAlertOut {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
  status: { state: string };
}

/** Alertmanager's active alerts (`/api/v2/alerts?active=true`). */
export async function amActiveAlerts(am: Pick<Server, 'url'>): Promise<AmAlertOut[]> {
  const r = await getJson(`${am.url}/api/v2/alerts?active=true&silenced=false&inhibited=false`);
  if (r.status !== 200) throw new Error(`alertmanager /api/v2/alerts: HTTP ${r.status}`);
  return r.body as AmAlertOut[];
}

/**
 * `promtool check metrics` on an exposition text. Exit 1 is a parse error, 3 lint findings.
 * prom-client's own default gauges nodejs_active_{handles,requests,resources}_total are named
 * like counters (prom-client 15.1.3): exactly those findings are allowed, as in
 * test/integration/metrics-server.test.ts. Returns the other findings (empty: passes).
 */
export async function promtoolCheckMetrics(text: string): Promise<{ code: number | null; problems: string[]; out: string }> {
  const r = await new Promise<{ code: number | null; out: string }>((resolve, reject) => {
    const p = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, out }));
    p.stdin.end(text);
  });
  const problems = r.out
    .split('\n')
    .filter((l) => l.trim() !== '')
    .filter((l) => !/^nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/.test(l));
  if (r.code !== 0 && r.code !== 3 && problems.length === 0) problems.push(`promtool exited ${r.code}`);
  return { code: r.code, problems, out: r.out };
}

// ---- podman start (podman.ts has createContainer, not its counterpart) ---------------------

/** `podman start <name>` of a container made with podman.ts's createContainer; throws with podman's message. */
export async function podmanStart(name: string): Promise<void> {
  const r = await run('podman', ['start', name]);
  if (r.code !== 0) throw new Error(`podman start ${name} -> code ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
}
