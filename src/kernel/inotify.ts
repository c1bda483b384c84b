import fs from 'node:fs';

// Node's fs.watch is inotify on Linux (one inotify instance per process). The npm `inotify`
// package does not build on Node 20, so every watch in cgwatchdog goes through this module.

export interface Watch {
  close(): void;
}

export type WatchHandler = (event: 'rename' | 'change', filename: string | null) => void;

/**
 * Watch a file or directory. Returns null if the path is gone (ENOENT/ENODEV): the caller's
 * cgroup disappeared, which is normal. Errors after the watch is set (the watched cgroup is
 * removed: inotify sends IN_IGNORED) close the watch and call `onGone`.
 */
export function watchPath(path: string, onEvent: WatchHandler, onGone?: () => void): Watch | null {
  let watcher: fs.FSWatcher;
  try {
    watcher = fs.watch(path, { persistent: false }, (event, filename) => onEvent(event as 'rename' | 'change', filename ?? null));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENODEV' || code === 'ENOTDIR') return null;
    throw err;
  }
  watcher.on('error', () => {
    watcher.close();
    onGone?.();
  });
  return { close: () => watcher.close() };
}
