import fs from 'node:fs';
import path from 'node:path';

/** read() found a file of a newer format than this release writes (its message says what happens). */
export class NewerFormatError extends Error {}

/**
 * A small JSON state file in the state directory, with a format version: `{ "version": N,
 * ...data }`. Written atomically (temp, fsync, rename, fsync of the directory) so a crash or
 * kill -9 leaves the old file or the new one, never half of one. Reading gives the data and
 * the version it was written with; `migrate` turns older formats into the current one.
 *
 * Upgrade and downgrade by one version: a newer cgwatchdog reads every older format; this one,
 * finding a file of a NEWER format (version + 1, after a downgrade), neither guesses at it nor
 * loses it: read() refuses it (NewerFormatError, whose message names the file and says what
 * happens, for the caller's one warning), and the first write() afterwards renames it to
 * `<name>.v<N>` before writing its own. Going up again, the newer release migrates ours.
 */
export class StateFile<T> {
  readonly file: string;
  /** A newer format found by read(): kept aside at the first write. */
  private newer?: number;

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
    if (v > this.version) {
      this.newer = v;
      throw new NewerFormatError(`${this.file} has format version ${v}, newer than this cgwatchdog's ${this.version} (written by a later release): not read, starting without it; it is kept as ${this.asideName(v)} at the first save`);
    }
    const out = this.migrate(obj, v);
    if (out === null) throw new Error(`${this.file}: format version ${v} not understood`);
    return out;
  }

  /** Where a newer file goes at the first write. */
  asideName(version: number): string {
    return `${this.file}.v${version}`;
  }

  write(data: T): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    if (this.newer !== undefined) {
      // Renamed, not copied: atomic, and the newer release's data is whole under its new name.
      try {
        fs.renameSync(this.file, this.asideName(this.newer));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot keep ${this.file} (format ${this.newer}) aside as ${this.asideName(this.newer)}, so it is not overwritten: ${(err as Error).message}`);
      }
      this.newer = undefined;
    }
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
