import type { CpuQuota, Limit } from '../cgroup/types';
import { countCpuList } from '../cgroup/parsers';

/**
 * The OCI runtime spec (config.json) as far as the PID policy reads it. Pure: text in, values
 * out; the hook and the Docker wrapper do the I/O.
 */
export interface SpecPolicyInputs {
  /** The cgroup the runtime will make, relative to the hierarchy root. */
  cgroupPath: string | null;
  quota: CpuQuota | null;
  cpusetCount: number | null;
  /** What runc will write to pids.max: `pids.limit` > 0, else "max" (0 writes nothing: a new cgroup is "max"; -1 writes "max"). */
  pidsLimit: Limit;
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json | undefined => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/**
 * runc's systemd driver (libcontainer/cgroups/systemd, runc 1.1) takes `cgroupsPath` as
 * "slice:prefix:name": the unit is "<prefix>-<name>.scope" (a name ending in ".slice" is the
 * unit itself), in the slice expanded by dashes ("a-b.slice" -> /a.slice/a-b.slice); an empty
 * slice is system.slice. A cgroupfs path starts with "/". Null when neither.
 */
export function cgroupsPathToCgroup(cgroupsPath: string | undefined, id?: string): string | null {
  if (cgroupsPath === undefined || cgroupsPath === '') return id && /^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id) ? `/${id}` : null;
  if (cgroupsPath.includes('\0')) return null;
  if (cgroupsPath.startsWith('/')) return normalize(cgroupsPath);
  const parts = cgroupsPath.split(':');
  if (parts.length !== 3) return normalize(`/${cgroupsPath}`);
  const [slice, prefix, name] = parts as [string, string, string];
  if (name === '' || name.includes('/') || prefix.includes('/')) return null;
  const parent = expandSlice(slice === '' ? 'system.slice' : slice);
  if (parent === null) return null;
  const unit = name.endsWith('.slice') ? name : `${prefix}-${name}.scope`;
  return parent === '/' ? `/${unit}` : `${parent}/${unit}`;
}

/** systemd's slice nesting, as runc's ExpandSlice: "a-b-c.slice" -> /a.slice/a-b.slice/a-b-c.slice, "-.slice" -> /. */
export function expandSlice(slice: string): string | null {
  if (!slice.endsWith('.slice') || slice.includes('/')) return null;
  const base = slice.slice(0, -'.slice'.length);
  if (base === '-') return '/';
  let out = '';
  let prefix = '';
  for (const c of base.split('-')) {
    if (c === '') return null;
    out += `/${prefix}${c}.slice`;
    prefix += `${c}-`;
  }
  return out;
}

function normalize(p: string): string | null {
  const out: string[] = [];
  for (const c of p.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') return null;
    out.push(c);
  }
  return `/${out.join('/')}`;
}

/** The policy's inputs from a parsed config.json. Throws with the field when one has the wrong shape. */
export function specPolicyInputs(spec: unknown, id?: string): SpecPolicyInputs {
  const root = obj(spec);
  if (!root) throw new Error('config.json is not a JSON object');
  const linux = obj(root.linux) ?? {};
  const res = obj(linux.resources) ?? {};
  const cpu = obj(res.cpu) ?? {};
  const quotaUs = num(cpu.quota);
  const periodUs = num(cpu.period) ?? 100_000;
  // runc writes no quota for 0 and "max" (-1 on v1) for a negative one.
  const quota: CpuQuota | null = quotaUs !== undefined && quotaUs !== 0 && periodUs > 0 ? { quotaUs: quotaUs < 0 ? 'max' : quotaUs, periodUs } : null;
  let cpusetCount: number | null = null;
  if (typeof cpu.cpus === 'string' && cpu.cpus.trim() !== '') cpusetCount = countCpuList(cpu.cpus);
  const limit = num(obj(res.pids)?.limit);
  if (linux.cgroupsPath !== undefined && typeof linux.cgroupsPath !== 'string') throw new Error('linux.cgroupsPath is not a string');
  return {
    cgroupPath: cgroupsPathToCgroup(linux.cgroupsPath as string | undefined, id),
    quota,
    cpusetCount,
    pidsLimit: limit !== undefined && limit > 0 ? limit : 'max',
  };
}

/** Sets linux.resources.pids.limit in a parsed config.json (made where missing). */
export function setSpecPidsLimit(spec: Json, value: number): void {
  const linux = (obj(spec.linux) ?? (spec.linux = {})) as Json;
  const res = (obj(linux.resources) ?? (linux.resources = {})) as Json;
  const pids = (obj(res.pids) ?? (res.pids = {})) as Json;
  pids.limit = value;
}

/**
 * JSON.parse and JSON.stringify that keep integers beyond 2^53 exact: a spec carries uint64
 * values (an rlimit of RLIM_INFINITY is 18446744073709551615) that a double would round to
 * ...552000, which runc then rejects as out of range. Long integers outside strings become
 * marked strings on the way in and numbers again on the way out.
 */
export function parseJsonLossless(text: string): { value: unknown; stringify(v: unknown): string } {
  const mark = `@cgwd-int-${Math.random().toString(36).slice(2)}:`;
  const safe = text.replace(/"(?:[^"\\]|\\.)*"|-?\d{16,}(?![.eE\d])/g, (m) => (m.startsWith('"') ? m : `"${mark}${m}"`));
  const value = JSON.parse(safe) as unknown;
  const back = new RegExp(`"${mark}(-?\\d+)"`, 'g');
  return { value, stringify: (v) => JSON.stringify(v).replace(back, '$1') };
}
