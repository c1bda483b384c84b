import fs from 'node:fs/promises';
import path from 'node:path';
import type { Recogniser, Recognised } from '../runtimes/types';
import { recognise } from '../runtimes/index';

export interface Found extends Recognised {
  cgroupPath: string;
}

export interface WalkResult {
  containers: Found[];
  /** Directories that are not containers: where new containers (or their parents) can appear. */
  dirs: string[];
}

const GONE = new Set(['ENOENT', 'ENODEV', 'ENOTDIR']);

/** Whether a relative cgroup path is one of the discovery roots or lies below one. */
export function underRoots(roots: readonly string[], rel: string): boolean {
  return roots.some((r) => r === '/' || rel === r || rel.startsWith(`${r}/`));
}

/** Join a relative cgroup path and a child name, keeping the "/" root form. */
export function childPath(parent: string, name: string): string {
  return parent === '/' ? `/${name}` : `${parent}/${name}`;
}

/**
 * Walk the hierarchy under `root` (absolute) from each of `starts` (relative cgroup paths)
 * down to `maxDepth` levels. Container directories are not descended into: what is below a
 * container is the container's own business (systemd inside it, v2 leaf cgroups).
 * `beforeList` is called on each non-container directory before it is listed: a watch set
 * there catches a child made after the listing, which a watch set after the walk would miss.
 */
export async function walkCgroups(
  root: string,
  starts: string[],
  maxDepth: number,
  recognisers: Recogniser[],
  beforeList?: (rel: string) => void,
): Promise<WalkResult> {
  const out: WalkResult = { containers: [], dirs: [] };
  const seen = new Set<string>();
  const visit = async (rel: string, depth: number): Promise<void> => {
    if (seen.has(rel)) return;
    seen.add(rel);
    const hit = recognise(recognisers, rel);
    if (hit) {
      out.containers.push({ ...hit, cgroupPath: rel });
      return;
    }
    beforeList?.(rel);
    let entries;
    try {
      entries = await fs.readdir(path.join(root, rel), { withFileTypes: true });
    } catch (err) {
      if (GONE.has((err as NodeJS.ErrnoException).code ?? '')) return;
      throw err;
    }
    out.dirs.push(rel);
    if (depth >= maxDepth) return;
    await Promise.all(entries.filter((e) => e.isDirectory()).map((e) => visit(childPath(rel, e.name), depth + 1)));
  };
  for (const s of starts) await visit(s === '/' ? '/' : s.replace(/\/+$/, ''), s === '/' ? 0 : s.split('/').length - 1);
  return out;
}
