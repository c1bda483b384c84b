import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** bench/ in the source tree (the C files are not copied to dist/). */
export const BENCH_SRC = path.resolve(__dirname, '..', '..', '..', 'bench');

let dir: string | undefined;
const built = new Map<string, string>();

/** A temp dir for this run's binaries; removed by cleanupNative(). Readable from inside UML (hostfs root). */
export function nativeDir(): string {
  dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-bench-bin-'));
  return dir;
}

/**
 * Compile bench/<rel>.c with gcc (static, so it also runs in a busybox container) into this
 * run's temp dir, once per run. Returns the binary's path.
 */
export function compile(rel: string): string {
  const have = built.get(rel);
  if (have) return have;
  const src = path.join(BENCH_SRC, `${rel}.c`);
  const out = path.join(nativeDir(), path.basename(rel));
  const r = spawnSync('gcc', ['-O2', '-Wall', '-static', '-o', out, src], { encoding: 'utf8' });
  if (r.error) throw new Error(`cannot run gcc for ${src}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`gcc ${src} failed: ${r.stderr.trim()}`);
  built.set(rel, out);
  return out;
}

export function cleanupNative(): void {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = undefined;
  built.clear();
}
