/**
 * What the real-daemon tests on this host's v1 hierarchies share: test roots and container
 * cgroups under /cgwd-test-<random>, a config confined to them, the daemon as a child process,
 * and clean-ups that run even when an earlier one failed (daemons stop before their state dir
 * and cgroups go).
 */
import { after, type TestContext } from 'node:test';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { hasV1, makeV1Cgroup, removeV1Cgroup, uniqueTestRoot, v1Dir } from './v1-cgroups';
import { isRoot, need } from './prereq';
import { freePort, startDaemon, startWebhookReceiver, stopAllDaemons, type DaemonHandle, type LogLine } from './daemon';

export const hex64 = (): string => randomBytes(32).toString('hex');
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
export const HMAC_ENV = 'CGWD_TEST_HMAC_SECRET';

// Whatever happens in a test, no daemon outlives the file.
after(() => stopAllDaemons());

/**
 * Clean-ups of one test, run last-registered-first in a single t.after hook, each one even
 * when an earlier one failed: daemons stop before their state dir and cgroups go.
 */
const cleanupStacks = new WeakMap<TestContext, (() => unknown)[]>();
export function defer(t: TestContext, fn: () => unknown): void {
  let stack = cleanupStacks.get(t);
  if (!stack) {
    const s: (() => unknown)[] = [];
    cleanupStacks.set(t, s);
    stack = s;
    t.after(async () => {
      const errors: unknown[] = [];
      for (const f of s.reverse()) {
        try {
          await f();
        } catch (err) {
          errors.push(err);
        }
      }
      if (errors.length) throw errors.length === 1 ? errors[0] : new AggregateError(errors, 'clean-up failed');
    });
  }
  stack.push(fn);
}

export function ready(): void {
  need(isRoot() && hasV1(), 'root and v1 pids, cpu, cpuset and memory hierarchies under /sys/fs/cgroup');
}

/** A fresh test root, removed (tasks killed) after the test, also on failure. */
export function testRoot(t: TestContext): string {
  const root = uniqueTestRoot();
  defer(t, () => removeV1Cgroup(root));
  return root;
}

/** Make a container cgroup in pids, cpu, cpuset and memory; an optional CPU quota in cores. */
export function makeContainer(rel: string, quotaCores?: number): void {
  makeV1Cgroup(rel);
  if (quotaCores !== undefined) setQuota(rel, quotaCores);
}

export function setQuota(rel: string, cores: number): void {
  fs.writeFileSync(path.join(v1Dir('cpu', rel), 'cpu.cfs_period_us'), '100000');
  fs.writeFileSync(path.join(v1Dir('cpu', rel), 'cpu.cfs_quota_us'), String(cores * 100000));
}

export const pidsMaxFile = (rel: string): string => path.join(v1Dir('pids', rel), 'pids.max');
export const readPidsMax = (rel: string): string => fs.readFileSync(pidsMaxFile(rel), 'utf8').trim();
export const writePidsMax = (rel: string, v: string | number): void => fs.writeFileSync(pidsMaxFile(rel), String(v));

/** pids.events "max N" of a v1 pids cgroup. */
export function pidsEventsMax(rel: string): number {
  const m = /^max (\d+)$/m.exec(fs.readFileSync(path.join(v1Dir('pids', rel), 'pids.events'), 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** Poll a pids.max file until it is `want`; the ms it took, or null after `timeoutMs`. */
export async function waitPidsMax(rel: string, want: string, timeoutMs: number, everyMs = 1): Promise<number | null> {
  const t0 = performance.now();
  for (;;) {
    let v: string | null = null;
    try {
      v = readPidsMax(rel);
    } catch {
      v = null;
    }
    if (v === want) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) return null;
    await sleep(everyMs);
  }
}

/** A state directory for one daemon, removed after the test. */
export function stateDir(t: TestContext, mode = 0o700): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-state-'));
  fs.chmodSync(d, mode);
  defer(t, () => fs.rmSync(d, { recursive: true, force: true, maxRetries: 5 }));
  return d;
}

export type Obj = Record<string, any>;
export function merge(a: Obj, b: Obj): Obj {
  const out: Obj = { ...a };
  for (const [k, v] of Object.entries(b)) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && a[k] && typeof a[k] === 'object' && !Array.isArray(a[k]) ? merge(a[k], v) : v;
  }
  return out;
}

/** A config that confines the daemon to the test root and leaves kernel.pid_max alone. */
export async function config(root: string, state: string, extra: Obj = {}): Promise<Obj> {
  return merge(
    {
      mode: 'enforce',
      logLevel: 'debug',
      // The status socket in the test's own state dir, not the host's /run/cgwatchdog.
      paths: { stateDir: state, statusSocket: path.join(state, 'status.sock') },
      kernel: { manage: false },
      discovery: { roots: [root] },
      names: { podmanBinary: '' },
      metrics: { listen: `127.0.0.1:${await freePort()}` },
    },
    extra,
  );
}

export async function daemon(t: TestContext, cfg: Obj, opts: { env?: Record<string, string>; configPath?: string } = {}): Promise<DaemonHandle> {
  const d = startDaemon(cfg, opts);
  defer(t, () => d.stop());
  await d.waitForLog((l) => l.msg === 'detection running', 15_000);
  return d;
}

export const isMsg = (msg: string, also: (l: LogLine) => boolean = () => true) => (l: LogLine): boolean => l.msg === msg && also(l);
export const alertLog = (kind: string) => (l: LogLine): boolean => l.alert?.kind === kind;

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}
export const r1 = (n: number): number => Math.round(n * 10) / 10;

/** A fork bomb that keeps trying: perl retries a failed fork at once; each child sleeps. */
export const BOMB = ['-e', 'for (;;) { my $p = fork(); next unless defined $p; if ($p == 0) { exec "sleep", "100"; } }'];

export function webhookSink(url: string): Obj {
  return { type: 'webhook', url, hmac: { secret: { env: HMAC_ENV } }, retry: { initialDelayMs: 200, maxDelayMs: 1000 } };
}

/** A real webhook receiver checking HMACs with a fresh secret, closed after the test; `env` gives the daemon the secret. */
export async function receiver(t: Parameters<typeof defer>[0]) {
  const secret = randomBytes(16).toString('hex');
  const hook = await startWebhookReceiver({ hmacSecret: secret });
  defer(t, () => hook.close());
  return { hook, env: { [HMAC_ENV]: secret } };
}

/** SIGKILL every task in a test cgroup until it is empty (up to 2 s). */
export async function removeTasks(rel: string): Promise<void> {
  const tasks = path.join(v1Dir('pids', rel), 'tasks');
  for (let i = 0; i < 100; i++) {
    const pids = fs.readFileSync(tasks, 'utf8').split('\n').filter(Boolean);
    if (pids.length === 0) return;
    for (const p of pids) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
