// Does this process see the host's cgroup hierarchies, or only its own container's? A pure
// verdict from mountinfo, /proc/self/cgroup and two facts read from the mounts (judgeNamespace),
// and the I/O that gathers them once at start (checkCgroupNamespace).
//
// Kernel facts this rests on (kernel/cgroup/cgroup.c; measured on the host's 6.18 v1
// hierarchies and on cgroup2 in UML 6.1, 6.12 and 7.2, see test/kernel/cgroupns-v1.test.ts and
// test/uml/cgroupns-v2.test.ts):
// - mountinfo field 4 of a cgroup mount is printed relative to the *reader's* cgroup namespace
//   root (cgroup_show_path -> kernfs_path_from_node(mount root, ns root)): a mount of the whole
//   hierarchy read from a namespace rooted at /a/b prints "/../..". It gives the depth of our
//   namespace root, never its names.
// - A cgroupfs mounted from inside a private namespace has that namespace's root as its root and
//   prints "/": the same text as the host's own mount (runc #617 and lxc #856 met this ambiguity
//   and chose to ignore the field). The interface files settle it: the hierarchy's real root
//   has the root-only `cgroup.sane_behavior` (v1, CFTYPE_ONLY_ON_ROOT) and lacks the
//   `cgroup.events` every other cgroup has (v2, CFTYPE_NOT_ON_ROOT).
// - /proc/<pid>/cgroup is printed relative to the reader's namespace too ("0::/../c1" for a
//   sibling of our namespace root), and cgroup.procs lists pids of the reader's pid namespace.
// - The kernel log's "fork rejected by pids controller in <path>" (and the OOM killer's
//   "oom_memcg=<path>", same pr_cont_cgroup_path) is printed from the hierarchy root in every
//   namespace: with the whole hierarchy mounted it matches paths under the mount as it is
//   (the host test's limit event came from kmsg inside the namespace).
import fs from 'node:fs';
import path from 'node:path';
import { parseMountinfo, type MountEntry } from './mountinfo';
import type { CgroupLayout } from './types';

/** PROC_CGROUP_INIT_INO (include/linux/proc_ns.h): the initial cgroup namespace's inode, the same on every kernel with cgroup namespaces (4.6 on). */
export const INITIAL_CGROUP_NS_INODE = 0xeffffffb;

/** At most this many directories are listed to find our namespace root (a node with thousands of containers lists a few thousand). */
export const SEARCH_BUDGET = 100_000;

export interface ProcCgroupEntry {
  hierarchyId: number;
  /** v1: the hierarchy's controllers ("cpu,cpuacct" -> ["cpu", "cpuacct"], "name=systemd"); v2 ("0::"): []. */
  controllers: string[];
  /** Relative to the reader's cgroup namespace root; may start with "/.." components. */
  path: string;
}

/** /proc/<pid>/cgroup (cgroups(7)): "hierarchy-ID:controller-list:cgroup-path" per line; the path may hold ":". */
export function parseProcCgroup(text: string): ProcCgroupEntry[] {
  const out: ProcCgroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const a = line.indexOf(':');
    const b = a < 0 ? -1 : line.indexOf(':', a + 1);
    const id = Number(line.slice(0, a));
    if (b < 0 || !Number.isInteger(id) || !line.slice(b + 1).startsWith('/')) {
      throw new Error(`expected a /proc/<pid>/cgroup line "id:controllers:/path", got ${JSON.stringify(line)}`);
    }
    const list = line.slice(a + 1, b);
    out.push({ hierarchyId: id, controllers: list === '' ? [] : list.split(','), path: line.slice(b + 1) });
  }
  return out;
}

/** What is known about one hierarchy the agent reads, before the search for our namespace root. */
export interface HierarchyView {
  /** "v2", or the v1 controller the hierarchy was picked for ("pids", "memory", "cpu", "cpuset"). */
  hierarchy: string;
  mountPoint: string;
  /** mountinfo field 4, as printed (relative to our cgroup namespace root). */
  mountRoot: string;
  /** Our own cgroup there, from /proc/self/cgroup (namespace-relative); null when the file has no line for it. */
  selfPath: string | null;
  /** The directory at mountPoint is the hierarchy's root cgroup (root-only interface files); null: cannot tell (not a kernel cgroupfs: a fixture tree). */
  atHierarchyRoot: boolean | null;
  /**
   * The search's answer where nsRootDepth() asked for one: the directories at that depth under
   * the mount whose `selfPath` lists our pid in cgroup.procs; null when the search gave up.
   */
  candidates?: string[] | null;
}

export interface HierarchyVerdict {
  hierarchy: string;
  mountPoint: string;
  mountRoot: string;
  selfPath: string | null;
  /** Our namespace root as a path under the mount (= from the hierarchy root); null when it could not be established. */
  nsRoot: string | null;
  /** Our own cgroup as a path under the mount. */
  self: string | null;
  /** Why this hierarchy is not usable (the first half of the sentence). */
  problem?: string;
  /** Which advice fits the problem. */
  fix?: 'namespace' | 'whole-hierarchy';
}

export interface CgroupNamespaceVerdict {
  /**
   * host: every mount shows the whole hierarchy and our namespace root is its root (nothing to
   * translate); translated: a private namespace below the root of a whole-hierarchy mount whose
   * real path was found; blind: the host's containers cannot be seen (or that cannot be ruled out).
   */
  kind: 'host' | 'translated' | 'blind';
  /** From /proc/self/ns/cgroup: the initial namespace, another one, or no such file (a fixture proc, a pre-4.6 kernel). */
  namespace: 'initial' | 'private' | 'unknown';
  nsInode: number | null;
  hierarchies: HierarchyVerdict[];
  /** blind: the one sentence to stop with. */
  sentence?: string;
}

const ADVICE = {
  namespace: "run it in the host's cgroup namespace (docker/podman run --cgroupns=host --pid=host), or mount the host's /sys/fs/cgroup into its container (Kubernetes: a hostPath volume, with hostPID: true) and point paths.cgroupRoot at it",
  'whole-hierarchy': "mount the whole cgroup hierarchy (the host's /sys/fs/cgroup) and point paths.cgroupRoot at it",
} as const;

/** The cgroup namespace's inode from the readlink text "cgroup:[4026531835]". */
export function parseNsLink(link: string): number | null {
  const m = /^cgroup:\[(\d+)\]$/.exec(link.trim());
  return m ? Number(m[1]) : null;
}

/** A path as components: leading ".." (how far above our namespace root), then the rest; odd when ".." follows a name. */
function splitRel(p: string): { ups: number; rest: string[]; odd: boolean } {
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  let ups = 0;
  while (ups < parts.length && parts[ups] === '..') ups++;
  const rest = parts.slice(ups);
  return { ups, rest, odd: rest.includes('..') };
}

/** `rel` (may hold "..") resolved against the absolute `base`; null when it climbs above "/". */
export function resolveUnder(base: string, rel: string): string | null {
  const out = base.split('/').filter((s) => s !== '' && s !== '.');
  for (const c of rel.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (out.length === 0) return null;
      out.pop();
    } else {
      out.push(c);
    }
  }
  return `/${out.join('/')}`;
}

/** The line of /proc/self/cgroup for a hierarchy: v2 is "0::", a v1 hierarchy is the one listing its controller. */
function selfLine(entries: ProcCgroupEntry[], hierarchy: string): ProcCgroupEntry | undefined {
  if (hierarchy === 'v2') return entries.find((e) => e.hierarchyId === 0 && e.controllers.length === 0);
  return entries.find((e) => e.hierarchyId !== 0 && e.controllers.includes(hierarchy));
}

/**
 * The hierarchies the agent reads (v2: the cgroup2 mount; v1: pids, memory, cpu, cpuset where
 * mounted), each with its mountinfo root and our own cgroup there. The visible mount at a mount
 * point is the last one listed for it (a container mounts over what it inherited).
 */
export function hierarchyViews(mounts: MountEntry[], layout: CgroupLayout, selfCgroup: ProcCgroupEntry[]): Omit<HierarchyView, 'atHierarchyRoot' | 'candidates'>[] {
  const wanted: [string, string][] = layout.version === 'v2'
    ? layout.v2Mount === undefined ? [] : [['v2', layout.v2Mount]]
    : (['pids', 'memory', 'cpu', 'cpuset'] as const).flatMap((c) => (layout.v1Mounts[c] === undefined ? [] : [[c, layout.v1Mounts[c]] as [string, string]]));
  const fsType = layout.version === 'v2' ? 'cgroup2' : 'cgroup';
  const out: Omit<HierarchyView, 'atHierarchyRoot' | 'candidates'>[] = [];
  const seen = new Set<string>();
  for (const [hierarchy, mountPoint] of wanted) {
    if (seen.has(mountPoint)) continue;
    seen.add(mountPoint);
    const entry = mounts.filter((m) => m.mountPoint === mountPoint && m.fsType === fsType).at(-1);
    if (!entry) throw new Error(`no ${fsType} mount at ${mountPoint} in mountinfo`);
    out.push({ hierarchy, mountPoint, mountRoot: entry.root, selfPath: selfLine(selfCgroup, hierarchy)?.path ?? null });
  }
  return out;
}

/**
 * How many levels below the mount our namespace root lies, when that has to be searched: the
 * mount root is printed as "/.." components only (the mount is an ancestor of our namespace
 * root) and our own cgroup is inside our namespace. Null: no search is needed or none can help.
 */
export function nsRootDepth(v: Pick<HierarchyView, 'mountRoot' | 'selfPath'>): number | null {
  const r = splitRel(v.mountRoot);
  if (r.ups === 0 || r.rest.length > 0 || r.odd || v.selfPath === null) return null;
  return splitRel(v.selfPath).ups === 0 ? r.ups : null;
}

function judgeHierarchy(v: HierarchyView, namespace: CgroupNamespaceVerdict['namespace']): HierarchyVerdict {
  const base = { hierarchy: v.hierarchy, mountPoint: v.mountPoint, mountRoot: v.mountRoot, selfPath: v.selfPath };
  const ok = (nsRoot: string): HierarchyVerdict => ({ ...base, nsRoot, self: v.selfPath === null ? null : resolveUnder(nsRoot, v.selfPath) });
  const bad = (problem: string, fix: 'namespace' | 'whole-hierarchy'): HierarchyVerdict => ({ ...base, nsRoot: null, self: null, problem, fix });
  const M = v.mountPoint;
  const R = JSON.stringify(v.mountRoot);
  const part = (why: string): HierarchyVerdict => bad(`only part of the cgroup hierarchy is visible (the cgroup mount at ${M}${why.startsWith(',') ? '' : ' '}${why})`, namespace === 'private' ? 'namespace' : 'whole-hierarchy');
  const unplaced = (why: string): HierarchyVerdict => bad(`this container's cgroups cannot be placed in the host's hierarchy (${why})`, 'namespace');
  const r = splitRel(v.mountRoot);
  if (r.odd) return bad(`the cgroup mount at ${M} has the mountinfo root ${R}, which no kernel prints`, 'whole-hierarchy');
  if (r.ups === 0) {
    // Below our namespace root, so below the hierarchy root too: the pre-cgroupns Docker way of
    // giving a container its own cgroup as /sys/fs/cgroup/<controller>.
    if (r.rest.length > 0) return part(`is the subtree ${R}, not the hierarchy's root`);
    if (v.atHierarchyRoot === true) return ok('/');
    if (v.atHierarchyRoot === null && namespace !== 'private') return ok('/'); // a fixture tree: as the mount says
    if (v.atHierarchyRoot === null) return bad(`this container may see only its own cgroups (the cgroup mount at ${M} has mountinfo root "/" in a private cgroup namespace, and its files do not tell whether it is the hierarchy's root)`, 'namespace');
    if (namespace === 'initial') return part('is a cgroup below the hierarchy\'s root, a bind mount of a subtree');
    return bad(`only this container's own cgroups are visible (the cgroup mount at ${M} has mountinfo root "/" in a private cgroup namespace and is not the hierarchy's root)`, 'namespace');
  }
  // Printed with "..": the mount's root lies outside our namespace, which is therefore private.
  if (r.rest.length > 0) return part(`is ${R} seen from this container's cgroup namespace, not the hierarchy's root`);
  if (v.atHierarchyRoot !== true) return part(`, with mountinfo root ${R}, lies above this container's cgroup namespace but is not the hierarchy's root`);
  if (v.selfPath === null) return unplaced(`/proc/self/cgroup has no line for the cgroup mount at ${M}`);
  if (splitRel(v.selfPath).ups > 0) return unplaced(`this process's cgroup ${JSON.stringify(v.selfPath)} lies outside its own cgroup namespace`);
  const c = v.candidates;
  const below = `its cgroup namespace root lies ${r.ups} level${r.ups === 1 ? '' : 's'} below ${M}`;
  if (c === undefined || c === null) return unplaced(`${below} and more than ${SEARCH_BUDGET} cgroups would have to be searched`);
  if (c.length !== 1) return unplaced(`${below}, but ${c.length === 0 ? 'no cgroup there lists' : `${c.length} cgroups there list`} this process`);
  return ok(c[0]!);
}

/** The verdict from what was read. `nsInode` is null when /proc/self/ns/cgroup could not be read. */
export function judgeNamespace(views: HierarchyView[], nsInode: number | null): CgroupNamespaceVerdict {
  const namespace = nsInode === null ? 'unknown' : nsInode === INITIAL_CGROUP_NS_INODE ? 'initial' : 'private';
  const hierarchies = views.map((v) => judgeHierarchy(v, namespace));
  const first = hierarchies.find((h) => h.problem !== undefined);
  if (first) {
    return { kind: 'blind', namespace, nsInode, hierarchies, sentence: `${first.problem}: ${ADVICE[first.fix!]}` };
  }
  return { kind: hierarchies.every((h) => h.nsRoot === '/') ? 'host' : 'translated', namespace, nsInode, hierarchies };
}

/**
 * A path read from /proc/<pid>/cgroup inside our namespace, as a path under the mount of that
 * hierarchy (the paths the rest of the agent speaks); null when the verdict is blind, the mount
 * is not one we read, or the path climbs above the hierarchy's root.
 */
export function toMountPath(verdict: CgroupNamespaceVerdict, mountPoint: string, nsPath: string): string | null {
  const h = verdict.hierarchies.find((x) => x.mountPoint === mountPoint);
  if (!h || h.nsRoot === null) return null;
  return resolveUnder(h.nsRoot, nsPath);
}

/** Every line of a /proc/<pid>/cgroup text that belongs to a hierarchy we read, translated: mount point -> path under it. */
export function translateProcCgroup(verdict: CgroupNamespaceVerdict, text: string): Record<string, string | null> {
  const entries = parseProcCgroup(text);
  const out: Record<string, string | null> = {};
  for (const h of verdict.hierarchies) {
    const line = selfLine(entries, h.hierarchy);
    if (line) out[h.mountPoint] = toMountPath(verdict, h.mountPoint, line.path);
  }
  return out;
}

// ---- I/O ------------------------------------------------------------------------------

const exists = (p: string): boolean => {
  try {
    fs.accessSync(p);
    return true;
  } catch {
    return false;
  }
};

/** Whether `dir` is its hierarchy's root cgroup, from the root-only interface files; null when it is no kernel cgroup directory. */
export function isHierarchyRoot(dir: string, version: 'v1' | 'v2'): boolean | null {
  if (version === 'v1') {
    if (exists(path.join(dir, 'cgroup.sane_behavior'))) return true;
    return exists(path.join(dir, 'tasks')) ? false : null;
  }
  if (exists(path.join(dir, 'cgroup.events'))) return false;
  return exists(path.join(dir, 'cgroup.procs')) ? true : null;
}

function listsPid(file: string, pid: number): boolean {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').some((l) => Number(l) === pid);
  } catch {
    return false; // gone meanwhile, or no such directory under this candidate
  }
}

/**
 * The directories `depth` levels under `mountPoint` whose `selfPath` lists `pid` in cgroup.procs
 * (relative to the mount); null past SEARCH_BUDGET directories. Names come from readdir and go
 * only into paths.
 */
export function findNamespaceRoot(mountPoint: string, depth: number, selfPath: string, pid: number, budget = SEARCH_BUDGET): string[] | null {
  let level = ['/'];
  let listed = 0;
  for (let d = 0; d < depth; d++) {
    const next: string[] = [];
    for (const rel of level) {
      let ents: fs.Dirent[];
      try {
        ents = fs.readdirSync(path.join(mountPoint, rel), { withFileTypes: true });
      } catch {
        continue; // removed while we walk
      }
      for (const e of ents) {
        if (!e.isDirectory()) continue;
        if (++listed > budget) return null;
        next.push(path.posix.join(rel, e.name));
      }
    }
    level = next;
  }
  return level.filter((rel) => listsPid(path.join(mountPoint, rel, selfPath, 'cgroup.procs'), pid));
}

function readOr(file: string, fallback: string | null): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return fallback;
  }
}

/**
 * Read `<procRoot>/self/{mountinfo,cgroup,ns/cgroup}` and the mounts of `layout`, search for
 * our namespace root where needed, and judge. Missing proc files (a fixture proc root) make
 * the facts unknown, not an error.
 */
export function checkCgroupNamespace(procRoot: string, layout: CgroupLayout, pid = process.pid): CgroupNamespaceVerdict {
  const mounts = parseMountinfo(readOr(path.join(procRoot, 'self', 'mountinfo'), '') ?? '');
  const selfCgroup = parseProcCgroup(readOr(path.join(procRoot, 'self', 'cgroup'), '') ?? '');
  let nsInode: number | null = null;
  try {
    nsInode = parseNsLink(fs.readlinkSync(path.join(procRoot, 'self', 'ns', 'cgroup')));
  } catch {
    /* no cgroup namespaces (before 4.6) or a fixture proc */
  }
  const views: HierarchyView[] = hierarchyViews(mounts, layout, selfCgroup).map((v) => {
    const view: HierarchyView = { ...v, atHierarchyRoot: isHierarchyRoot(v.mountPoint, layout.version) };
    const depth = nsRootDepth(v);
    if (depth !== null && view.atHierarchyRoot === true) view.candidates = findNamespaceRoot(v.mountPoint, depth, v.selfPath!, pid);
    return view;
  });
  return judgeNamespace(views, nsInode);
}
