/**
 * A real daemon process for the benchmarks: `node <unit's flags> dist/src/cli.js run` on the
 * shipped defaults (config/default.yaml is the schema's defaults), confined to the bench's
 * own roots, kernel.pid_max left alone, metrics on a free 127.0.0.1 port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { freePort, productionNodeFlags } from '../../test/helpers/daemon';
import { trackChild } from './cleanup';
import { onLines } from './lines';
import { sleep } from './stats';

const CLI = path.resolve(__dirname, '..', '..', 'src', 'cli.js');

export interface BenchDaemon {
  child: ChildProcess;
  port: number;
  configPath: string;
  /** process.hrtime.bigint() at spawn. */
  spawnAt: bigint;
  /** The "initial reconcile done" log line. */
  ready: Promise<Record<string, unknown>>;
  stop(): Promise<void>;
}

export async function startBenchDaemon(tag: string, roots: string[], tmp: string): Promise<BenchDaemon> {
  const port = await freePort();
  const configPath = path.join(tmp, 'config.yaml');
  fs.mkdirSync(path.join(tmp, 'state'), { recursive: true });
  fs.writeFileSync(
    configPath,
    YAML.stringify({
      mode: 'enforce',
      logLevel: 'info',
      paths: { stateDir: path.join(tmp, 'state') },
      kernel: { manage: false },
      discovery: { roots },
      names: { podmanBinary: '' },
      metrics: { enabled: true, listen: `127.0.0.1:${port}` },
    }),
  );
  const spawnAt = process.hrtime.bigint();
  // BENCH_CPU_PROF=<dir>: write a V8 CPU profile of each daemon there (node --cpu-prof).
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`, `--cpu-prof-name=${tag}.cpuprofile`] : [];
  const c = spawn(process.execPath, [...prof, ...productionNodeFlags(), CLI, 'run', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  const untrack = trackChild(c, `daemon ${tag}`);
  let stderr = '';
  c.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-2000)));
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    onLines(c.stdout!, (line) => {
      try {
        const j = JSON.parse(line) as Record<string, unknown>;
        if (j.msg === 'initial reconcile done') resolve(j);
      } catch {
        /* not JSON */
      }
    });
    c.once('exit', (code) => reject(new Error(`daemon exited ${code} before it was ready: ${stderr.trim()}`)));
    setTimeout(() => reject(new Error(`daemon not ready within 120 s: ${stderr.trim()}`)), 120_000).unref();
  });
  ready.catch(() => undefined);
  return {
    child: c,
    port,
    configPath,
    spawnAt,
    ready,
    stop: async () => {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGTERM');
        await Promise.race([new Promise((r) => c.once('exit', r)), sleep(10_000)]);
      }
      await untrack();
    },
  };
}
