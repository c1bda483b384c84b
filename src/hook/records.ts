import fs from 'node:fs';
import path from 'node:path';

/**
 * What a hook did for one container, left in `<stateDir>/hooks/` for the daemon and `apply`:
 * which containers had their limit from their creation (and so which only got it afterwards),
 * and the failures to count. One small file per container, named by its cgroup path, written
 * atomically (a container's hooks run one after another, so no two writers meet); the daemon
 * removes it with the container.
 */
export interface HookRecord {
  v: 1;
  /** precreate, prestart, createRuntime, or runc-create (the Docker wrapper). */
  stage: string;
  cgroupPath: string | null;
  id?: string;
  runtime?: string;
  /** ms since the epoch. */
  at: number;
  /** The policy's action (set, unchanged, kept-lower, excluded, too-low), or error. */
  action: string;
  /** The pids limit in place when the first process runs, when the hook knows it. */
  value?: number | 'max';
  policyValue?: number | null;
  /** Whether the hook itself put `value` there (in the spec, or in pids.max). */
  wrote: boolean;
  reason: string;
  /** The hook could not do its job; the container was refused when failClosed. */
  failed?: boolean;
  refused?: boolean;
}

export const recordsDir = (stateDir: string): string => path.join(stateDir, 'hooks');

/**
 * A file name for any string, readable and without collisions: every byte outside
 * [A-Za-z0-9._-] as %XX ("/" too). Long ones get a hash (FNV-1a, 2 x 32 bits) in place of
 * their middle; node:crypto is not loaded for it, it costs a hook ~10 ms here.
 */
export function safeFileName(s: string): string {
  // Per character, not per byte: 15 µs -> 2 µs a path (the daemon names 5,000 at start).
  const enc = s.replace(/[^A-Za-z0-9._-]/gu, (ch) => Array.from(Buffer.from(ch, 'utf8'), (b) => `%${b.toString(16).padStart(2, '0')}`).join(''));
  if (enc.length <= 200) return enc;
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193 ^ s.length;
  for (let i = 0; i < s.length; i++) {
    h1 = Math.imul(h1 ^ s.charCodeAt(i), 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ s.charCodeAt(s.length - 1 - i), 0x01000193) >>> 0;
  }
  return `${enc.slice(0, 90)}~${h1.toString(16).padStart(8, '0')}${h2.toString(16).padStart(8, '0')}~${enc.slice(-90)}`;
}

export function recordFileName(cgroupPath: string): string {
  return `${safeFileName(cgroupPath)}.json`;
}

/** The daemon's hook socket writes every hook's records from one process: two failures in one ms must not share a name. */
let failedSeq = 0;

export function writeRecord(stateDir: string, rec: HookRecord): string {
  const dir = recordsDir(stateDir);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const name = rec.cgroupPath ? recordFileName(rec.cgroupPath) : `~failed-${rec.at}-${process.pid}-${failedSeq++}.json`;
  const file = path.join(dir, name);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(rec)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
  return file;
}

function parse(text: string): HookRecord | undefined {
  try {
    const r = JSON.parse(text) as HookRecord;
    return r && r.v === 1 && typeof r.stage === 'string' ? r : undefined;
  } catch {
    return undefined;
  }
}

/** The container's record, if a hook ran for it. */
export function readRecord(stateDir: string, cgroupPath: string): HookRecord | undefined {
  try {
    return parse(fs.readFileSync(path.join(recordsDir(stateDir), recordFileName(cgroupPath)), 'utf8'));
  } catch {
    return undefined;
  }
}

/** The record files there are (null: no records directory), to look each container up without an open. */
export function recordNames(stateDir: string): Set<string> | null {
  try {
    return new Set(fs.readdirSync(recordsDir(stateDir)));
  } catch {
    return null;
  }
}

export function listRecords(stateDir: string): { name: string; rec: HookRecord }[] {
  let names: string[];
  try {
    names = fs.readdirSync(recordsDir(stateDir)).filter((n) => n.endsWith('.json'));
  } catch {
    return [];
  }
  const out: { name: string; rec: HookRecord }[] = [];
  for (const name of names) {
    try {
      const rec = parse(fs.readFileSync(path.join(recordsDir(stateDir), name), 'utf8'));
      if (rec) out.push({ name, rec });
    } catch {
      /* removed meanwhile */
    }
  }
  return out;
}

export function removeRecord(stateDir: string, name: string): void {
  fs.rmSync(path.join(recordsDir(stateDir), name), { force: true });
}

/** Where a container's limit came from: a hook before its first process, the daemon after it started, or the runtime (kept). */
export type LimitOrigin = 'creation' | 'daemon' | 'runtime';

/** Pure: the hook's record (if any) and the policy's result (written or not, and its action). */
export function limitOrigin(rec: HookRecord | undefined, r: { action: string; written: boolean }, daemonWroteBefore: boolean): LimitOrigin | undefined {
  if (rec && !rec.failed && ['set', 'unchanged', 'kept-lower'].includes(rec.action)) return 'creation';
  if (r.written || daemonWroteBefore) return 'daemon';
  if (r.action === 'unchanged' || r.action === 'kept-lower') return 'runtime';
  return undefined;
}
