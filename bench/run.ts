/**
 * `npm run bench`: runs the benchmarks (not part of CI), prints JSON and a markdown table, and
 * writes both to bench/results/ (latest.json, latest.md and a dated copy of each).
 *
 * Environment:
 *   BENCH_ONLY=detection,create,scale,churn,alternatives   which to run (default: all)
 *   BENCH_SAMPLES=60          latency samples per source (>= 50 for the report)
 *   BENCH_SCALE=1000,5000,10000 container counts for the scale benchmark
 *   BENCH_IDLE_S=120          idle CPU window, seconds (with the C floor in the same window)
 *   BENCH_IDLE_RUNS=3         idle windows per scale step; the median is reported
 *   BENCH_CHURN_S=300         churn run length, seconds (100 cgroups a second)
 *   BENCH_OOM_SAMPLES=10      podman OOM containers
 *   BENCH_UML=0               skip the user-mode Linux (cgroup v2 inotify) run
 *   BENCH_HOOK_SAMPLES=30     container starts per variant in the hooks part (podman, docker; with and without)
 *   (BENCH_ONLY also takes "hooks": container start with and without the OCI hook / Docker wrapper)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { podmanOom, type PodmanOomResult } from './alternatives';
import { createToLimit, type CreateToLimitResult } from './create-to-limit';
import { detectionLatency, type DetectionResult } from './detection-latency';
import { hooksBench, type HooksResult } from './hooks';
import { cleanupAll, installSignalCleanup } from './lib/cleanup';
import { BENCH_SRC, cleanupNative } from './lib/native';
import type { Summary } from './lib/stats';
import { churn, type ChurnResult } from './churn';
import { scale, type ScaleRow } from './scale';

interface Results {
  startedAt: string;
  finishedAt?: string;
  durationSeconds?: number;
  host: Record<string, unknown>;
  settings: Record<string, unknown>;
  detection?: DetectionResult | { error: string };
  createToLimit?: CreateToLimitResult | { error: string };
  scale?: { rows: ScaleRow[]; skipped?: string } | { error: string };
  alternatives?: { podmanOom: PodmanOomResult | { error: string } };
  hooks?: HooksResult | { error: string };
  churn?: ChurnResult | { skipped: string } | { error: string };
}

const env = process.env;
const ONLY = new Set((env.BENCH_ONLY ?? 'detection,create,scale,churn,alternatives,hooks').split(',').map((s) => s.trim()));
const SAMPLES = Number(env.BENCH_SAMPLES ?? 60);
const SIZES = (env.BENCH_SCALE ?? '1000,5000,10000').split(',').map(Number).filter((n) => n > 0);
const IDLE_S = Number(env.BENCH_IDLE_S ?? 120);
const IDLE_RUNS = Number(env.BENCH_IDLE_RUNS ?? 3);
const CHURN_S = Number(env.BENCH_CHURN_S ?? 300);
const OOM_SAMPLES = Number(env.BENCH_OOM_SAMPLES ?? 10);
const UML = env.BENCH_UML !== '0';
const HOOK_SAMPLES = Number(env.BENCH_HOOK_SAMPLES ?? 30);

function hostFacts(): Record<string, unknown> {
  const read = (f: string): string | null => {
    try {
      return fs.readFileSync(f, 'utf8').trim();
    } catch {
      return null;
    }
  };
  return {
    hostname: os.hostname(),
    kernel: os.release(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memGb: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    pidMax: read('/proc/sys/kernel/pid_max'),
    /** Other work on the machine skews the numbers: look here first when they jump. */
    loadavgAtStart: read('/proc/loadavg'),
    gitHead: read(path.join(BENCH_SRC, '..', '.git', 'HEAD')),
  };
}

async function step<T>(name: string, fn: () => Promise<T>): Promise<T | { error: string }> {
  const t0 = Date.now();
  process.stderr.write(`bench: ${name}...\n`);
  try {
    const r = await fn();
    process.stderr.write(`bench: ${name} done in ${Math.round((Date.now() - t0) / 1000)} s\n`);
    return r;
  } catch (err) {
    process.stderr.write(`bench: ${name} FAILED: ${(err as Error).stack}\n`);
    return { error: (err as Error).message };
  } finally {
    await cleanupAll();
  }
}

// ---- the table ------------------------------------------------------------------------

const ms = (x: number | null | undefined): string => (x === null || x === undefined ? 'n/a' : `${x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)} ms`);
const pp = (s: Summary | null | undefined): string => (!s || s.n === 0 ? 'n/a' : `${ms(s.p50)} / ${ms(s.p99)} (n=${s.n})`);
const met = (b: boolean | null | undefined): string => (b === true ? 'yes' : b === false ? '**NO**' : 'n/a');
/** A step that threw: `{ error }` and nothing else. */
const isErr = (x: unknown): x is { error: string } => typeof x === 'object' && x !== null && Object.keys(x).length === 1 && 'error' in x;

function table(r: Results): string {
  const out: string[] = [];
  out.push(`# cgwatchdog benchmark, ${r.startedAt}`);
  out.push('');
  out.push(`Host: ${r.host.kernel}, ${r.host.cpus} CPUs (${r.host.cpuModel}), ${r.host.memGb} GiB, Node ${r.host.node}. Run took ${r.durationSeconds ?? '?'} s. Load average at start / end: ${String(r.host.loadavgAtStart ?? '?').split(' ').slice(0, 3).join(' ')} / ${String(r.host.loadavgAtEnd ?? '?').split(' ').slice(0, 3).join(' ')}.`);
  out.push('');

  out.push('## 1. Detection latency (kernel event -> `event` hook, alert enqueued in the same tick), p50 / p99');
  out.push('');
  out.push('| source | where | ours p50 / p99 | floor p50 / p99 | ratio p50 / p99 | target | met |');
  out.push('|---|---|---|---|---|---|---|');
  const d = r.detection;
  if (d && isErr(d)) out.push(`| error | ${d.error} | | | | | |`);
  else if (d) {
    for (const s of d.sources) {
      const extra = s.otherSource || s.timedOut ? ` (${s.otherSource} via another source, ${s.timedOut} timed out)` : '';
      out.push(`| ${s.source} | ${s.where}${extra} | ${pp(s.ours)} | ${s.floor ? pp(s.floor) : 'the interval: 0..1000 ms'} | ${s.ratioP50 ?? '-'} / ${s.ratioP99 ?? '-'} | ${s.target} | ${met(s.targetMet)} |`);
    }
    for (const k of d.skipped ?? []) out.push(`| skipped | ${k.split('\n')[0]} | | | | | |`);
  }
  out.push('');

  out.push('## 2. New container -> pids.max written');
  out.push('');
  out.push('| measure | p50 / p99 | target | met |');
  out.push('|---|---|---|---|');
  const c = r.createToLimit;
  if (c && isErr(c)) out.push(`| error: ${c.error} | | | |`);
  else if (c) {
    if (c.skipped) out.push(`| skipped: ${c.skipped} | | | |`);
    else {
      out.push(`| mkdir (memory, cpu, pids) -> new pids.max read back (C poller, every 100 us)${c.missed ? `, ${c.missed} missed` : ''} | ${pp(c.external)} | ${c.target} | ${met(c.targetMet)} |`);
      out.push(`| daemon's own: IN_CREATE handled -> pids.max written (applyLatency hook) | ${pp(c.hook)} | | |`);
      out.push(`| the three mkdirs alone | ${pp(c.mkdir)} | | |`);
    }
  }
  out.push('');

  out.push('## 3. Scale (real daemon process, real v1 cgroups)');
  out.push('');
  const sc = r.scale;
  if (sc && isErr(sc)) out.push(`error: ${sc.error}`);
  else if (sc) {
    if (sc.skipped) out.push(`skipped: ${sc.skipped}`);
    out.push('| containers | start (spawn -> ready) | reconcile at start | limits written | idle CPU (% core), median | C 1 s sweep floor, same windows | RSS | fds | /metrics p50 / p99, size | swept every 1 s / safety net | reconcile mean (n) | sweep mean | apply --dry-run |');
    out.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const x of sc.rows) {
      if (x.error) {
        out.push(`| ${x.containers} | error: ${x.error.split('\n')[0]} | | | | | | | | | | | |`);
        continue;
      }
      const t = x.targets;
      const tag = (k: string): string => (t[k] ? ` (target ${t[k]!.target}: ${met(t[k]!.met)})` : '');
      out.push(
        `| ${x.containers} | ${ms(x.startMs)}${tag('start')} | ${ms(x.reconcileAtStartMs)} | ${x.limitsWritten}/${x.containers}${tag('limits')} | ${x.idleCpuPercent ?? 'n/a'} % (${(x.idleCpuRuns ?? []).join(', ')}; ${x.idleCpuRuns?.length ?? 0} x ${x.idleSeconds} s)${tag('idleCpu')}${x.catCpuPercent !== null ? ` (+ cat ${x.catCpuPercent} %)` : ''} | ${x.floorCpuPercent ?? 'n/a'} % (${(x.floorCpuRuns ?? []).join(', ')}) | ${x.rssMb ?? 'n/a'} MB${tag('rss')} | ${x.fds ?? 'n/a'}${tag('fds')} | ${ms(x.scrapeMs.p50)} / ${ms(x.scrapeMs.p99)} (n=${x.scrapeMs.n}), ${x.scrapeBytes !== null ? `${Math.round(x.scrapeBytes / 1024)} KiB` : 'n/a'}${tag('scrape')} | ${x.fastSwept ?? '?'} / ${x.netSwept ?? '?'} | ${ms(x.reconcileMeanMs)} (${x.reconcileCount ?? '?'}) | ${ms(x.sweepMeanMs)} | ${ms(x.applyDryRunMs)} (exit ${x.applyDryRunExit}) |`,
      );
    }
    out.push('');
    out.push(`(making the cgroups, 3 hierarchies: ${sc.rows.map((x) => `${x.containers}: ${x.mkdirSeconds} s`).join(', ')})`);
  }
  out.push('');
  out.push('## 3b. Churn (container cgroups made and removed by a C generator, a real daemon)');
  out.push('');
  const ch = r.churn;
  if (ch && 'error' in ch) out.push(`error: ${ch.error}`);
  else if (ch && 'skipped' in ch) out.push(`skipped: ${ch.skipped}`);
  else if (ch) {
    const snap = (x: ChurnResult['before']): string => `RSS ${x.rssMb} MB, ${x.fds} fds, ${x.inotifyWatches} inotify watches; ${Object.entries(x.entries).map(([k, v]) => `${k} ${v}`).join(', ')}`;
    out.push('| measure | figure | target | met |');
    out.push('|---|---|---|---|');
    out.push(`| cgroups made / limited / missed / removed (${ch.rate}/s for ${ch.seconds} s) | ${ch.made} / ${ch.limited} / ${ch.missed} / ${ch.removed} | none missed | ${met(ch.missed === 0 && ch.limited === ch.made)} |`);
    out.push(`| mkdir -> pids.max written, read back by the generator | ${pp(ch.latencyMs)} | p99 < 20 ms | ${met(ch.latencyMs.p99 !== null ? ch.latencyMs.p99 < 20 : null)} |`);
    out.push(`| daemon CPU during the churn | ${ch.daemonCpuPercent ?? 'n/a'} % of a core | | |`);
    out.push(`| before | ${snap(ch.before)} | | |`);
    out.push(`| half way | ${snap(ch.during)} | | |`);
    out.push(`| after (40 s later) | ${snap(ch.after)} | back to before (RSS within 15 MB) | ${met(ch.leaks.length === 0)}${ch.leaks.length ? `: ${ch.leaks.join('; ')}` : ''} |`);
  }
  out.push('');

  out.push('## 4. Against what operators use instead (same events, same run)');
  out.push('');
  out.push('| event | ours p50 / p99 | alternative | alternative p50 / p99 | floor p50 / p99 |');
  out.push('|---|---|---|---|---|');
  if (d && !isErr(d) && d.diyPoll) {
    out.push(`| PID-limit hits (v1, kmsg + sweep samples) | ${pp(d.diyPoll.ours)} | DIY loop reading pids.events every ${d.diyPoll.intervalMs} ms | ${pp(d.diyPoll.diy)} | - |`);
  }
  const a = r.alternatives?.podmanOom;
  if (a && isErr(a)) out.push(`| OOM kill, podman container | error: ${a.error} | | | |`);
  else if (a && !a.available) out.push(`| OOM kill, podman container | not measured | podman not usable here: ${a.why} | | |`);
  else if (a) {
    out.push(`| OOM kill, podman (runc) container, --memory 32m${a.oursMissed ? `, ours missed ${a.oursMissed}` : ''} | ${pp(a.ours)} | \`podman events --filter event=oom\` (${a.podmanVersion})${a.podmanMissed ? `: printed nothing for ${a.podmanMissed} of ${a.samples} OOM kills` : ''} | ${pp(a.podman)} | ${pp(a.floor)} |`);
    out.push(`| same containers (the OOM-killed hog is the main process) | | \`podman events\` "died" (exit 137, not labelled OOM; State.OOMKilled true for ${a.podmanOomKilledFlag} of ${a.samples}) | ${pp(a.podmanDied)} | |`);
  }
  out.push('');
  out.push(...hooksTable(r.hooks));
  return out.join('\n');
}

function hooksTable(h: Results['hooks']): string[] {
  if (!h) return [];
  const out = ['## 5. Zero window: container start -> first output, with and without the hook (the first command prints its pids.max)', ''];
  if (isErr(h)) return [...out, `error: ${h.error}`, ''];
  out.push('| runtime | hook | start -> first output p50 / p99 | first process saw the policy value | printed |');
  out.push('|---|---|---|---|---|');
  for (const v of h.variants) {
    const pct = v.samples ? Math.round((1000 * v.sawPolicy) / v.samples) / 10 : 0;
    const hook = v.hook ? `${h.client ?? 'node'} ${v.runtime === 'docker' ? 'wrapper' : 'precreate hook'}` : 'none (the daemon\'s inotify path only)';
    out.push(`| ${v.runtime} ${v.args.join(' ')} (policy ${v.policy}) | ${hook} | ${pp(v.startToOutput)} | ${v.sawPolicy}/${v.samples} (${pct} %)${v.hook ? ` (target 100 %: ${met(v.sawPolicy === v.samples)})` : ''} | ${Object.entries(v.values).map(([k, n]) => `${k} x${n}`).join(', ')} |`);
  }
  for (const a of h.added) out.push(`| ${a.runtime} | added by the hook (with - without) | ${ms(a.p50)} / ${ms(a.p99)} (target p99 < 30 ms: ${met(a.p99 !== null && a.p99 < 30)}) | | |`);
  if (h.podmanHookFloor) out.push(`| podman | floor of any precreate hook: \`/bin/cat\` as the hook (podman's hook machinery), start ${pp(h.podmanHookFloor.startToOutput)} | added ${ms(h.podmanHookFloor.p50)} / ${ms(h.podmanHookFloor.p99)} | | |`);
  if (h.daemonAnswer) for (const rt of ['podman', 'docker'] as const) if (h.daemonAnswer[rt].p50 !== null) out.push(`| ${rt} | the daemon's answer on the hook socket (connection -> answer, during the starts) | ${pp(h.daemonAnswer[rt])} | | |`);
  out.push(`| - | floor: \`node -e 0\` | ${pp(h.nodeFloor)} | | |`);
  if (h.nativeAlone) out.push(`| - | the native client alone (\`cgwatchdog-hook ... hook precreate\`, a podman spec, the daemon answering) | ${pp(h.nativeAlone)} | | |`);
  out.push(`| - | the Node hook alone (\`cgwatchdog hook precreate\`, a podman spec, config cached; the native client's fallback) | ${pp(h.hookAlone)} | | |`);
  for (const k of h.skipped ?? []) out.push(`| skipped | ${k.split('\n')[0]} | | | |`);
  return [...out, '', h.note, ''];
}

async function main(): Promise<void> {
  installSignalCleanup();
  const started = Date.now();
  const r: Results = {
    startedAt: new Date(started).toISOString(),
    host: hostFacts(),
    settings: { only: [...ONLY], samples: SAMPLES, scale: SIZES, idleSeconds: IDLE_S, idleRuns: IDLE_RUNS, oomSamples: OOM_SAMPLES, uml: UML, hookSamples: HOOK_SAMPLES },
  };
  try {
    if (ONLY.has('detection')) r.detection = await step('detection latency', () => detectionLatency({ samples: SAMPLES, uml: UML }));
    if (ONLY.has('create')) r.createToLimit = await step('create to limit', () => createToLimit(Math.max(SAMPLES, 100)));
    if (ONLY.has('alternatives')) r.alternatives = { podmanOom: await step('podman OOM vs us', () => podmanOom(OOM_SAMPLES)) };
    if (ONLY.has('hooks')) r.hooks = await step('hooks (zero window)', () => hooksBench(HOOK_SAMPLES));
    if (ONLY.has('scale')) r.scale = await step('scale', () => scale(SIZES, IDLE_S, IDLE_RUNS));
    if (ONLY.has('churn')) r.churn = await step('churn', () => churn({ seconds: CHURN_S, log: (l) => process.stderr.write(`${l}\n`) }));
  } finally {
    await cleanupAll();
    cleanupNative();
  }
  r.finishedAt = new Date().toISOString();
  r.host.loadavgAtEnd = fs.readFileSync('/proc/loadavg', 'utf8').trim();
  r.durationSeconds = Math.round((Date.now() - started) / 1000);
  const md = table(r);
  const json = JSON.stringify(r, null, 2);
  process.stdout.write(`${json}\n\n${md}\n`);
  const dir = path.join(BENCH_SRC, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const stamp = r.startedAt.replace(/[:]/g, '-').replace(/\..*$/, '');
  for (const [name, text] of [
    ['latest.json', json],
    ['latest.md', md],
    [`${stamp}.json`, json],
    [`${stamp}.md`, md],
  ] as const) {
    fs.writeFileSync(path.join(dir, name), `${text}\n`);
  }
  process.stderr.write(`bench: results in ${path.relative(process.cwd(), dir) || dir}/latest.{json,md}\n`);
}

main().then(
  () => process.exit(0),
  async (err) => {
    process.stderr.write(`bench failed: ${(err as Error).stack}\n`);
    await cleanupAll();
    cleanupNative();
    process.exit(1);
  },
);
