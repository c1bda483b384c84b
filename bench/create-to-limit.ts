/**
 * New container to limit written: a runtime-shaped cgroup /cgwd-bench-c2l-*\/docker/<64 hex> is
 * made in the memory, cpu and pids v1 hierarchies (runc's order: pids last) by a C helper
 * (tools/mkdir-poll.c) that takes CLOCK_MONOTONIC before the first mkdir and then re-reads
 * the new pids.max in a tight loop until it is no longer "max". The daemon runs in this
 * process (enforce mode); its `applyLatency` hook (inotify seen -> pids.max written) is
 * reported next to it.
 */
import { spawn } from 'node:child_process';
import { benchRoot, hasV1, hex64, mkdirs, v1Dir } from './lib/cgroups';
import { startInProc } from './lib/inproc-daemon';
import { compile } from './lib/native';
import { sleep, summarize, type Summary } from './lib/stats';

const ORDER = ['memory', 'cpu', 'pids'];

export interface CreateToLimitResult {
  samples: number;
  /** mkdir (first of three) -> new pids.max seen by the tight poller, ms. */
  external: Summary;
  /** The daemon's own: IN_CREATE handled -> pids.max written (applyLatency hook), ms. */
  hook: Summary;
  /** The three mkdirs themselves, ms. */
  mkdir: Summary;
  missed: number;
  value: string | null;
  target: string;
  targetMet: boolean | null;
  skipped?: string;
}

function runPoll(bin: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (b: Buffer) => (out += b));
    c.stderr.on('data', (b: Buffer) => (err += b));
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`mkdir-poll exited ${code}: ${err.trim()}`))));
  });
}

export async function createToLimit(samples = 100): Promise<CreateToLimitResult> {
  const target = 'p99 < 20 ms';
  if (!hasV1(ORDER)) {
    const e = summarize([]);
    return { samples: 0, external: e, hook: e, mkdir: e, missed: 0, value: null, target, targetMet: null, skipped: 'no cgroup v1 pids/cpu/memory hierarchies' };
  }
  const root = benchRoot('c2l', ORDER);
  let stop: (() => Promise<void>) | undefined;
  try {
    const parent = `${root.rel}/docker`;
    for (const c of ORDER) mkdirs(c, parent);
    const hook: number[] = [];
    const d = await startInProc({ roots: [root.rel], hooks: { applyLatency: (s) => hook.push(s * 1000) } });
    stop = d.stop;
    const bin = compile('tools/mkdir-poll');
    const ext: number[] = [];
    const mk: number[] = [];
    let missed = 0;
    let value: string | null = null;
    for (let i = 0; i < samples; i++) {
      const rel = `${parent}/${hex64()}`;
      const out = await runPoll(bin, [`${v1Dir('pids', rel)}/pids.max`, '2000', ...ORDER.map((c) => v1Dir(c, rel))]);
      const [mkNs, seenNs, v] = out.split(' ');
      mk.push(Number(mkNs) / 1e6);
      if (Number(seenNs) < 0) missed++;
      else ext.push(Number(seenNs) / 1e6);
      value = v ?? null;
      // Not back to back: each container is its own event, as runtimes make them.
      await sleep(30);
    }
    await sleep(100);
    const external = summarize(ext);
    return {
      samples,
      external,
      hook: summarize(hook),
      mkdir: summarize(mk),
      missed,
      value,
      target,
      targetMet: external.p99 !== null && missed === 0 ? external.p99 < 20 : false,
    };
  } finally {
    await stop?.();
    await root.remove();
  }
}
