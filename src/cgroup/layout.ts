import fs from 'node:fs';
import path from 'node:path';
import { parseMountinfo, type MountEntry } from './mountinfo';
import { CgroupError, type CgroupLayout, type CgroupVersion, type LayoutMode } from './types';

// Super options of a v1 cgroup mount that are not controller names.
const V1_NON_CONTROLLER = new Set(['rw', 'ro', 'none', 'noprefix', 'xattr', 'clone_children', 'cpuset_v2_mode', 'favordynmods']);

/** The controllers we read; a hybrid host uses v2 only when v2 has them all (or v1 lacks them). */
const NEEDED = ['pids', 'memory'] as const;

function under(p: string, root: string): boolean {
  if (root === '/') return true;
  return p === root || p.startsWith(root + '/');
}

function v1Controllers(superOptions: string[]): string[] {
  // "name=systemd" hierarchies carry no controller; "release_agent=..." is an option.
  return superOptions.filter((o) => !V1_NON_CONTROLLER.has(o) && !o.includes('='));
}

/**
 * The cgroup layout seen in mountinfo, counting only mounts at or under `cgroupRoot` (a v2
 * mount may sit anywhere, e.g. /run/cg inside user-mode Linux, so the root is config).
 * `v2Controllers` is the content of `<v2Mount>/cgroup.controllers`, read by the caller.
 * Throws when no cgroup mount is found there.
 */
export function layoutFromMounts(entries: MountEntry[], cgroupRoot: string, v2Controllers: string[] = []): CgroupLayout {
  const root = path.resolve(cgroupRoot);
  const v1Mounts: Record<string, string> = {};
  let v2Mount: string | undefined;
  for (const e of entries) {
    if (!under(e.mountPoint, root)) continue;
    if (e.fsType === 'cgroup') {
      // mountinfo lists mounts in order, so a later mount on the same controller shadows the earlier.
      for (const c of v1Controllers(e.superOptions)) v1Mounts[c] = e.mountPoint;
    } else if (e.fsType === 'cgroup2') {
      // Prefer a cgroup2 mount exactly at the root (pure v2) over a nested one.
      if (v2Mount === undefined || e.mountPoint === root || (v2Mount !== root && e.mountPoint.length < v2Mount.length)) {
        v2Mount = e.mountPoint;
      }
    }
  }
  const hasV1 = Object.keys(v1Mounts).length > 0;
  if (!hasV1 && v2Mount === undefined) {
    throw new Error(`no cgroup or cgroup2 mount at or under ${root}`);
  }
  const mode: LayoutMode = hasV1 && v2Mount !== undefined ? 'hybrid' : hasV1 ? 'v1' : 'v2';
  let version: CgroupVersion;
  if (mode === 'hybrid') {
    const v2Serves = NEEDED.every((c) => v2Controllers.includes(c) || v1Mounts[c] === undefined);
    version = v2Serves && NEEDED.some((c) => v2Controllers.includes(c)) ? 'v2' : 'v1';
  } else {
    version = mode;
  }
  const layout: CgroupLayout = { mode, version, v1Mounts, v2Controllers: [...v2Controllers] };
  if (v2Mount !== undefined) layout.v2Mount = v2Mount;
  return layout;
}

export function parseControllerList(text: string): string[] {
  return text.split(/\s+/).filter((s) => s !== '');
}

/** Read `<procRoot>/self/mountinfo` and `<v2Mount>/cgroup.controllers` and work out the layout. */
export function detectLayout(procRoot: string, cgroupRoot: string): CgroupLayout {
  const file = path.join(procRoot, 'self', 'mountinfo');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CgroupError(`cannot read ${file} (${code}): is paths.procRoot a mounted proc?`, file, code);
  }
  let layout: CgroupLayout;
  try {
    layout = layoutFromMounts(parseMountinfo(text), cgroupRoot);
  } catch (err) {
    throw new CgroupError(`${file}: ${(err as Error).message} (check paths.cgroupRoot)`, file);
  }
  if (layout.v2Mount === undefined) return layout;
  const ctlFile = path.join(layout.v2Mount, 'cgroup.controllers');
  let controllers: string[];
  try {
    controllers = parseControllerList(fs.readFileSync(ctlFile, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CgroupError(`cannot read ${ctlFile} (${code}): the cgroup2 mount in ${file} is not readable`, ctlFile, code);
  }
  return layoutFromMounts(parseMountinfo(text), cgroupRoot, controllers);
}
