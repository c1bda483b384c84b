import { EventEmitter } from 'node:events';
import fs from 'node:fs';

// Node's fs.watch is inotify on Linux (one inotify instance per process). The npm `inotify`
// package does not build on Node 20, so every watch in cgwatchdog goes through this module.

export interface Watch {
  close(): void;
}

export type WatchHandler = (event: 'rename' | 'change', filename: string | null) => void;

const GONE = new Set(['ENOENT', 'ENODEV', 'ENOTDIR']);

/**
 * Watches that could not be made, process-wide (inotify is one instance per process, and its
 * limits, fs.inotify.max_user_watches and max_user_instances, are per user): ENOSPC when the
 * watch limit is reached, EMFILE, EACCES. Emits 'failure' ({ path, code, first }) for each
 * failed watch, `first` on the first failure of a code since the last recovery of all.
 */
export class WatchHealth extends EventEmitter {
  readonly failuresTotal = new Map<string, number>();
  private readonly failing = new Map<string, string>();

  failed(path: string, code: string): void {
    const first = ![...this.failing.values()].includes(code);
    this.failing.set(path, code);
    this.failuresTotal.set(code, (this.failuresTotal.get(code) ?? 0) + 1);
    this.emit('failure', { path, code, first });
  }

  /** The path is watched now, or no longer wanted. */
  settled(path: string): void {
    if (this.failing.delete(path) && this.failing.size === 0) this.emit('recovered');
  }

  /** Why watching is degraded, or undefined when every wanted watch is in place. */
  degraded(): string | undefined {
    if (this.failing.size === 0) return undefined;
    const codes = [...new Set(this.failing.values())].join(', ');
    return `${this.failing.size} cgroup paths cannot be watched (${codes}): covered by rescans and the sweep`;
  }
}

export const watchHealth = new WatchHealth();

/**
 * Watch a file or directory. Returns 'gone' if the path is gone (ENOENT/ENODEV): the caller's
 * cgroup disappeared, which is normal. Returns 'failed' when inotify refuses (the watch limit,
 * EMFILE, EACCES): counted in watchHealth, never thrown, so a callback that makes watches
 * cannot crash the daemon. Errors after the watch is set (the watched cgroup is removed:
 * inotify sends IN_IGNORED) close the watch and call `onGone`.
 */
export function watchPath(path: string, onEvent: WatchHandler, onGone?: () => void): Watch | 'gone' | 'failed' {
  let watcher: fs.FSWatcher;
  try {
    watcher = fs.watch(path, { persistent: false }, (event, filename) => onEvent(event as 'rename' | 'change', filename ?? null));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
    if (GONE.has(code)) {
      watchHealth.settled(path);
      return 'gone';
    }
    watchHealth.failed(path, code);
    return 'failed';
  }
  watchHealth.settled(path);
  watcher.on('error', () => {
    watcher.close();
    onGone?.();
  });
  return { close: () => watcher.close() };
}
