import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

// Real v1 cgroups for tests on the host. Every name begins with /cgwd-test- so a test can
// never write to a cgroup it did not create.

export const V1_ROOT = '/sys/fs/cgroup';
export type V1Controller = 'pids' | 'cpu' | 'cpuset' | 'memory' | (string & {});
export const DEFAULT_CONTROLLERS: V1Controller[] = ['pids', 'cpu', 'cpuset', 'memory'];

/** A fresh top-level test cgroup name, "/cgwd-test-<random>". */
export function uniqueTestRoot(): string {
  return `/cgwd-test-${randomBytes(6).toString('hex')}`;
}

// Tests and the benchmark only ever touch cgroups under names of their own.
function checkRel(rel: string): void {
  if (!/^\/cgwd-(test|bench)-/.test(rel) || rel.split('/').includes('..') || rel.includes('\0')) {
    throw new Error(`test cgroup path ${JSON.stringify(rel)} must begin with "/cgwd-test-" or "/cgwd-bench-" and contain no ".."`);
  }
}

export function v1Dir(controller: V1Controller, rel: string): string {
  checkRel(rel);
  return path.join(V1_ROOT, controller, rel);
}

/** Whether this machine has the v1 hierarchies the helper needs. */
export function hasV1(controllers: V1Controller[] = DEFAULT_CONTROLLERS): boolean {
  return controllers.every((c) => fs.existsSync(path.join(V1_ROOT, c, 'tasks')));
}

/** Create `rel` (and missing parents) in each controller's hierarchy. Returns controller -> dir. */
export function makeV1Cgroup(rel: string, controllers: V1Controller[] = DEFAULT_CONTROLLERS): Record<string, string> {
  checkRel(rel);
  const dirs: Record<string, string> = {};
  for (const c of controllers) {
    let dir = path.join(V1_ROOT, c);
    for (const part of rel.split('/').filter((p) => p !== '')) {
      const parent = dir;
      dir = path.join(dir, part);
      if (fs.existsSync(dir)) continue;
      fs.mkdirSync(dir);
      // A v1 cpuset starts with empty cpus and mems (unless clone_children), and no task can
      // join it until both are set.
      if (c === 'cpuset') {
        for (const f of ['cpuset.mems', 'cpuset.cpus']) {
          fs.writeFileSync(path.join(dir, f), fs.readFileSync(path.join(parent, f), 'utf8').trim());
        }
      }
    }
    dirs[c] = dir;
  }
  return dirs;
}

function readIds(file: string): number[] {
  try {
    return fs
      .readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map(Number);
  } catch {
    return [];
  }
}

/** Directories of the tree at `top`, deepest first. */
function subtreeDeepestFirst(top: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name));
    }
    out.push(d);
  };
  walk(top);
  return out;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * Kill every task in `rel` and its children (SIGKILL, waiting up to 5 s for them to leave)
 * and remove the directories deepest first, in every v1 hierarchy that has them.
 */
export async function removeV1Cgroup(rel: string): Promise<void> {
  checkRel(rel);
  const problems: string[] = [];
  for (const c of fs.readdirSync(V1_ROOT)) {
    const top = path.join(V1_ROOT, c, rel);
    // runc (1.1, cgroupfs driver on a hybrid host) also makes the path in the unified v2 tree,
    // where tasks are listed in cgroup.procs: that copy goes too.
    if (!fs.existsSync(top)) continue;
    const tasksFile = c === 'unified' ? 'cgroup.procs' : 'tasks';
    const dirs = subtreeDeepestFirst(top);
    const deadline = Date.now() + 5000;
    for (;;) {
      let left = 0;
      for (const d of dirs) {
        for (const pid of readIds(path.join(d, tasksFile))) {
          left++;
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // Already exited.
          }
        }
      }
      if (left === 0 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const d of dirs) {
      for (;;) {
        try {
          fs.rmdirSync(d);
          break;
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ENOENT') break;
          if (code === 'EBUSY' && Date.now() < deadline) {
            sleepSync(20);
            continue;
          }
          problems.push(`${d}: ${code}`);
          break;
        }
      }
    }
  }
  if (problems.length > 0) throw new Error(`could not remove test cgroup ${rel}: ${problems.join(', ')}`);
}

// The child joins every cgroup before it execs `cmd`, so all it forks is inside from the
// start. The script holds no cgroup names: the paths arrive as positional arguments.
const JOIN_THEN_EXEC = 'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 97; shift; n=$((n-1)); done; exec "$@"';

/** Start `cmd args` as a process that is in `rel` in each controller's hierarchy before it runs. */
export function spawnInCgroup(rel: string, controllers: V1Controller[], cmd: string, args: string[]): ChildProcess {
  const procsFiles = controllers.map((c) => path.join(v1Dir(c, rel), 'cgroup.procs'));
  return spawn('/bin/sh', ['-c', JOIN_THEN_EXEC, 'sh', String(procsFiles.length), ...procsFiles, cmd, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Wait until `pid` is listed in `rel`'s tasks in `controller` (the join happens after spawn). */
export async function waitForTask(rel: string, controller: V1Controller, pid: number, timeoutMs = 5000): Promise<void> {
  const file = path.join(v1Dir(controller, rel), 'tasks');
  const deadline = Date.now() + timeoutMs;
  while (!readIds(file).includes(pid)) {
    if (Date.now() > deadline) throw new Error(`pid ${pid} did not join ${file} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Wait for a child to exit; resolves with its code and signal. */
export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}
