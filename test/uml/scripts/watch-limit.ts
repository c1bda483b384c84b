/**
 * Runs inside user-mode Linux (see test/uml/watch-limit.test.ts): the daemon meets
 * fs.inotify.max_user_watches, the guest's own knob. Phases (one result each):
 *   setup, limited (parents made past the limit: the daemon lives, says so once, and still
 *   limits a container under an unwatched parent), raised (the limit back up: watching
 *   resumes, a new container gets its limit at once), cleanup.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cgroupRoot, emit, inUml, nowMs, sleep } from '../in-uml';
import { DaemonProc, hex64, mkCgroup, pollFile, removeTree, runMain, writeConfig } from './daemon-util';

const TEST = '/cgwd-test';
const WATCHES = '/proc/sys/fs/inotify/max_user_watches';
const PORT = 19392;

interface Seen {
  failures: number | null;
  inotifyUp: number | null;
  health: { httpStatus: number; body: Record<string, unknown> } | null;
  error?: string;
}

/** What an operator scrapes: the watch-failure count, inotify's source_up, and /healthz. */
async function scrape(): Promise<Seen> {
  try {
    const metrics = await (await fetch(`http://127.0.0.1:${PORT}/metrics`)).text();
    const failures = [...metrics.matchAll(/^cgwatchdog_watch_failures_total\{code="[^"]+"\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
    const up = /^cgwatchdog_source_up\{source="inotify"\} (\d+)$/m.exec(metrics);
    const res = await fetch(`http://127.0.0.1:${PORT}/healthz`);
    return { failures, inotifyUp: up ? Number(up[1]) : null, health: { httpStatus: res.status, body: await res.json() as Record<string, unknown> } };
  } catch (e) {
    return { failures: null, inotifyUp: null, health: null, error: (e as Error).message };
  }
}

/** source_up is set after each sweep (1 s): scrape until `ok`, or return the last seen at the timeout. */
async function scrapeUntil(ok: (s: Seen) => boolean, timeoutMs: number): Promise<Seen> {
  const end = nowMs() + timeoutMs;
  let s = await scrape();
  while (!ok(s) && nowMs() < end) {
    await sleep(200);
    s = await scrape();
  }
  return s;
}

async function main(): Promise<void> {
  if (!inUml()) throw new Error('run this through test/helpers/uml.ts runInUml()');
  const root = cgroupRoot();
  const abs = (rel: string): string => path.join(root, rel);
  mkCgroup(root, `${TEST}/kubepods`);
  fs.mkdirSync('/run/cgwd-state');
  const original = fs.readFileSync(WATCHES, 'utf8').trim();
  const cfg = writeConfig('watch-limit', {
    mode: 'enforce',
    logLevel: 'debug',
    paths: { cgroupRoot: root, procRoot: '/proc', kmsg: '/dev/kmsg', stateDir: '/run/cgwd-state' },
    kernel: { manage: false },
    policy: { overrides: [{ pathPattern: `^${TEST}/`, pidsMax: 321 }] },
    discovery: { roots: [TEST], reconcileSchedule: '0 0 1 1 *' },
    metrics: { listen: `127.0.0.1:${PORT}` },
  });
  const d = new DaemonProc(cfg, 'watch-limit');
  try {
    const started = await d.waitMsg('detection running', 60_000);
    // Room for a few more watches only: the daemon's own (and its kmsg reader's) are made.
    const used = 12;
    fs.writeFileSync(WATCHES, String(used + 4));
    emit({ check: 'setup', started: started !== null, original, ...(started ? {} : { lastLines: d.lines.slice(-15), stderr: d.stderr.slice(-1500) }) });

    // Kubernetes-shaped pod parents, more than the limit leaves room for.
    const pods: string[] = [];
    for (let i = 0; i < 20; i++) {
      const pod = `${TEST}/kubepods/pod${hex64().slice(0, 8)}-0000-0000-0000-${hex64().slice(0, 12)}`;
      mkCgroup(root, pod);
      pods.push(pod);
      await sleep(20);
    }
    const warned = await d.waitMsg('cannot watch a cgroup path: rescanning it instead (logged once per error until watching recovers)', 10_000);
    // A container in the last pod, whose directory surely could not be watched.
    const late = `${pods[pods.length - 1]}/${hex64()}`;
    const t0 = nowMs();
    mkCgroup(root, late);
    const lateAt = await pollFile(path.join(abs(late), 'pids.max'), (s) => s === '321', 30_000, 5);
    const seenLimited = await scrapeUntil((s) => s.inotifyUp === 0 && s.health?.body.status === 'degraded', 5000);
    emit({
      check: 'limited',
      alive: d.child.exitCode === null && d.child.signalCode === null,
      warned: warned ? { code: warned.code, hint: warned.hint } : null,
      warnings: d.lines.filter((l) => l.msg?.startsWith('cannot watch')).length,
      // From the poll's own time: the scrape above must not count.
      lateMs: lateAt === null ? null : Math.round(lateAt - t0),
      stderr: d.stderr.slice(-500),
      seen: seenLimited,
    });

    fs.writeFileSync(WATCHES, original);
    const recovered = await d.waitMsg('every cgroup path is watched again', 20_000);
    const fresh = `${pods[0]}/${hex64()}`;
    const t1 = nowMs();
    mkCgroup(root, fresh);
    const freshAt = await pollFile(path.join(abs(fresh), 'pids.max'), (s) => s === '321', 10_000, 1);
    const seenRaised = await scrapeUntil((s) => s.inotifyUp === 1 && s.health?.body.status === 'ok', 5000);
    emit({ check: 'raised', recovered: recovered !== null, freshMs: freshAt === null ? null : Math.round(freshAt - t1), alive: d.child.exitCode === null, seen: seenRaised });
  } finally {
    fs.writeFileSync(WATCHES, original);
    const stop = await d.stop();
    d.save();
    await removeTree(abs(TEST));
    emit({ check: 'cleanup', stop, gone: !fs.existsSync(abs(TEST)), watches: fs.readFileSync(WATCHES, 'utf8').trim() });
  }
}

runMain(main, emit);
