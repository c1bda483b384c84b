import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { removeV1Cgroup } from '../../test/helpers/v1-cgroups';
import { onCleanup } from './cleanup';

// Real v1 cgroups for the benchmarks. Every name begins with /cgwd-bench- so a benchmark can
// never write to a cgroup it did not create.

export const V1_ROOT = '/sys/fs/cgroup';
export const PREFIX = '/cgwd-bench-';

export function hex64(): string {
  return randomBytes(32).toString('hex');
}

function check(rel: string): void {
  if (!rel.startsWith(PREFIX) || rel.split('/').includes('..') || rel.includes('\0')) {
    throw new Error(`bench cgroup path ${JSON.stringify(rel)} must begin with ${PREFIX} and contain no ".."`);
  }
}

export function v1Dir(controller: string, rel: string): string {
  check(rel);
  return path.join(V1_ROOT, controller, rel);
}

export function hasV1(controllers: string[]): boolean {
  return controllers.every((c) => fs.existsSync(path.join(V1_ROOT, c, 'tasks')));
}

/**
 * A bench root "/cgwd-bench-<tag>-<random>": created in each controller, removed (tasks
 * killed, directories deepest first) by the returned remove(), also on SIGINT.
 */
export function benchRoot(tag: string, controllers: string[]): { rel: string; remove: () => Promise<void> } {
  const rel = `${PREFIX}${tag}-${randomBytes(4).toString('hex')}`;
  const remove = onCleanup(`cgroup ${rel}`, () => removeTree(rel));
  for (const c of controllers) mkdirs(c, rel);
  return { rel, remove };
}

/** mkdir -p of `rel` in one controller (a cpuset copies its parent's cpus and mems). */
export function mkdirs(controller: string, rel: string): string {
  check(rel);
  let dir = path.join(V1_ROOT, controller);
  for (const part of rel.split('/').filter(Boolean)) {
    const parent = dir;
    dir = path.join(dir, part);
    if (fs.existsSync(dir)) continue;
    fs.mkdirSync(dir);
    if (controller === 'cpuset') {
      for (const f of ['cpuset.mems', 'cpuset.cpus']) fs.writeFileSync(path.join(dir, f), fs.readFileSync(path.join(parent, f), 'utf8').trim());
    }
  }
  return dir;
}

/** Kill every task below `rel` in every v1 hierarchy and remove the directories (the tests' own helper). */
export const removeTree = removeV1Cgroup;

/** Move a process into `rel` in each controller (v1: write its pid to cgroup.procs). */
export function joinCgroup(pid: number, rel: string, controllers: string[]): void {
  for (const c of controllers) fs.writeFileSync(path.join(v1Dir(c, rel), 'cgroup.procs'), String(pid));
}
