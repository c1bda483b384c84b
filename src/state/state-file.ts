import fs from 'node:fs';
import path from 'node:path';

/**
 * A small JSON state file in the state directory, with a format version: `{ "version": N,
 * ...data }`. Written atomically (temp, fsync, rename, fsync of the directory) so a crash or
 * kill -9 leaves the old file or the new one, never half of one. Reading gives the data and
 * the version it was written with; `migrate` turns older formats into the current one.
 */
export class StateFile<T> {
  readonly file: string;

  constructor(
    stateDir: string,
    name: string,
    readonly version: number,
    /** Data of any version (0: a file without a version field, from before versions) -> current, or null if unusable. */
    private readonly migrate: (data: Record<string, unknown>, version: number) => T | null,
  ) {
    this.file = path.join(stateDir, name);
  }

  /** The saved data, or null when there is none. Throws with the file's path when it cannot be used. */
  read(): T | null {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new Error(`cannot read ${this.file}: ${(err as Error).message}`);
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new Error(`${this.file} is not JSON: ${(err as Error).message}`);
    }
    if (!data || typeof data !== 'object' || Array.isArray(data)) throw new Error(`${this.file}: expected a JSON object`);
    const obj = data as Record<string, unknown>;
    const v = typeof obj.version === 'number' ? obj.version : 0;
    if (v > this.version) throw new Error(`${this.file} has format version ${v}, newer than this cgwatchdog's ${this.version}`);
    const out = this.migrate(obj, v);
    if (out === null) throw new Error(`${this.file}: format version ${v} not understood`);
    return out;
  }

  write(data: T): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp`;
    const fd = fs.openSync(tmp, 'w', 0o600);
    try {
      fs.writeSync(fd, JSON.stringify({ version: this.version, ...data }));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
    const dir = fs.openSync(path.dirname(this.file), 'r');
    try {
      fs.fsyncSync(dir);
    } finally {
      fs.closeSync(dir);
    }
  }
}
