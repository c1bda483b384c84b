import fs from 'node:fs';
import path from 'node:path';
import { CgroupError, type SyncFileReader } from './types';

// Path safety and errno handling shared by v1.ts, v2.ts and counter-reader.ts. The agent is
// root and rel paths come from cgroup names seen in the filesystem, so they are never trusted.

/** A cgroup that vanished while we looked at it: normal for containers. */
export function isGoneCode(code: string | undefined): boolean {
  return code === 'ENOENT' || code === 'ENODEV' || code === 'ESRCH';
}

function hint(code: string | undefined): string {
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return 'permission denied: cgwatchdog must run as root with write access to the cgroup filesystem';
    case 'EROFS':
      return 'read-only filesystem: the cgroup filesystem must be mounted read-write';
    case 'EINVAL':
      return 'the kernel rejected the value';
    default:
      return 'unexpected error';
  }
}

export function ioError(op: 'read' | 'write' | 'open', file: string, err: unknown): CgroupError {
  const code = (err as NodeJS.ErrnoException).code;
  return new CgroupError(`cannot ${op} ${file}: ${code ?? String(err)} (${hint(code)})`, file, code);
}

export function parseError(file: string, err: unknown): CgroupError {
  return new CgroupError(`${file}: ${(err as Error).message}`, file, 'EPARSE');
}

/**
 * The directory of cgroup `rel` in the hierarchy mounted at `mount`. `rel` must start with
 * "/" and must not leave the mount after resolving "..".
 */
export function cgroupDir(mount: string, rel: string): string {
  if (typeof rel !== 'string' || !rel.startsWith('/') || rel.includes('\0')) {
    throw new CgroupError(`cgroup path ${JSON.stringify(rel)} must start with "/" (relative to ${mount})`, rel, 'EINVALPATH');
  }
  const base = path.resolve(mount);
  const dir = path.resolve(base, '.' + rel);
  if (dir !== base && !dir.startsWith(base === '/' ? '/' : base + '/')) {
    throw new CgroupError(`cgroup path ${JSON.stringify(rel)} escapes the hierarchy at ${base}`, rel, 'EINVALPATH');
  }
  return dir;
}

/** File content, or null when the cgroup (or this file) is gone. */
export async function readCgroupFile(file: string): Promise<string | null> {
  try {
    return await fs.promises.readFile(file, 'latin1');
  } catch (err) {
    if (isGoneCode((err as NodeJS.ErrnoException).code)) return null;
    throw ioError('read', file, err);
  }
}

/** Parse a file's content, attaching the path to a parse error. */
export async function readParsed<T>(file: string, parse: (text: string) => T): Promise<T | null> {
  const text = await readCgroupFile(file);
  if (text === null) return null;
  try {
    return parse(text);
  } catch (err) {
    throw parseError(file, err);
  }
}

/** Synchronous read through a reader (cached fds) and parse; null when gone. */
export function readSyncParsed<T>(reader: SyncFileReader, file: string, parse: (text: string) => T): T | null {
  const text = reader.read(file);
  if (text === null) return null;
  try {
    return parse(text);
  } catch (err) {
    throw parseError(file, err);
  }
}

// No O_CREAT: writing to a cgroup that vanished must fail (ENOENT), not create a plain file.
const WRITE_FLAGS = fs.constants.O_WRONLY | fs.constants.O_TRUNC;

/** Write a value; 'gone' when the cgroup was removed. */
export async function writeCgroupFile(file: string, value: string): Promise<'ok' | 'gone'> {
  try {
    const fh = await fs.promises.open(file, WRITE_FLAGS);
    try {
      await fh.write(value);
    } finally {
      await fh.close();
    }
    return 'ok';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (isGoneCode(code)) return 'gone';
    // A removed cgroup can answer a write on an fd opened just before with EINVAL; a bad value
    // gives EINVAL too, so tell them apart by whether the directory is still there.
    if (code === 'EINVAL' && !fs.existsSync(path.dirname(file))) return 'gone';
    throw ioError('write', file, err);
  }
}
