import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { validateConfig } from '../../src/config/load';
import { Daemon, type DaemonHooks } from '../../src/daemon';
import { silentLogger } from '../../src/log';
import { onCleanup } from './cleanup';

export interface InProcOptions {
  /** Discovery roots (the bench's own subtree, so nothing else on the host is touched). */
  roots: string[];
  mode?: 'enforce' | 'observe';
  cgroupRoot?: string;
  kmsg?: boolean;
  inotify?: boolean;
  sweepIntervalMs?: number;
  hooks: DaemonHooks;
  /** Where the temp state dir goes (inside UML /tmp is the host's, read-only: use /run). */
  stateBase?: string;
}

/**
 * The real Daemon, in this process, with a validated config: kernel.pid_max left alone,
 * state in a temp dir, no metrics listener, a silent logger. Stopped by the returned stop()
 * (also on SIGINT).
 */
export async function startInProc(o: InProcOptions): Promise<{ daemon: Daemon; stop: () => Promise<void> }> {
  const stateDir = fs.mkdtempSync(path.join(o.stateBase ?? os.tmpdir(), 'cgwd-bench-state-'));
  const config = validateConfig(
    {
      mode: o.mode ?? 'enforce',
      logLevel: 'info',
      paths: { stateDir, hookSocket: path.join(stateDir, 'hook.sock'), ...(o.cgroupRoot ? { cgroupRoot: o.cgroupRoot } : {}) },
      kernel: { manage: false },
      discovery: { roots: o.roots },
      detection: { kmsg: o.kmsg ?? true, inotify: o.inotify ?? true, sweepIntervalMs: o.sweepIntervalMs ?? 1000 },
      names: { podmanBinary: '' },
      metrics: { enabled: false },
    },
    'bench config',
  );
  const daemon = new Daemon(config, null, silentLogger(), o.hooks);
  let stopped = false;
  const stop = onCleanup('in-process daemon', async () => {
    if (stopped) return;
    stopped = true;
    await daemon.stop();
    fs.rmSync(stateDir, { recursive: true, force: true });
  });
  try {
    await daemon.start();
  } catch (err) {
    await stop();
    throw err;
  }
  return { daemon, stop };
}
