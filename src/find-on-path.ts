import fs from 'node:fs';
import path from 'node:path';

/** The first executable `name` in $PATH (or `fallback` when PATH is unset); null when none. */
export function findOnPath(name: string, fallback = '/usr/sbin:/usr/bin:/sbin:/bin'): string | null {
  for (const dir of (process.env.PATH ?? fallback).split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return null;
}
