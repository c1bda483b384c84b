import fs from 'node:fs';
import path from 'node:path';

/**
 * The pids.max values cgwatchdog itself wrote, by cgroup path, kept in the state directory so
 * that `existing: keep-lower` still tells our own earlier value from an operator's after a
 * restart (edit the config, restart the service: the new policy must apply). Written
 * atomically (temp + rename); a missing or unreadable file is an empty store.
 */
export class WrittenStore extends Map<string, number> {
  private timer?: NodeJS.Timeout;
  readonly file: string;

  constructor(stateDir: string, private readonly onError: (message: string) => void = () => {}) {
    super();
    this.file = path.join(stateDir, 'written-pids-max.json');
    try {
      const data = JSON.parse(fs.readFileSync(this.file, 'utf8')) as unknown;
      if (data && typeof data === 'object' && !Array.isArray(data)) {
        for (const [k, v] of Object.entries(data)) if (k.startsWith('/') && Number.isSafeInteger(v)) super.set(k, v as number);
      }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') onError(`ignoring ${this.file}: ${(err as Error).message}`);
    }
  }

  override set(key: string, value: number): this {
    if (super.get(key) !== value) this.schedule();
    return super.set(key, value);
  }

  override delete(key: string): boolean {
    const had = super.delete(key);
    if (had) this.schedule();
    return had;
  }

  /** Batches a burst of writes (thousands of containers at start) into one file write. */
  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => this.flush(), 500);
    this.timer.unref();
  }

  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    try {
      fs.mkdirSync(path.dirname(this.file), { recursive: true });
      const tmp = `${this.file}.tmp`;
      fs.writeFileSync(tmp, JSON.stringify(Object.fromEntries(this)));
      fs.renameSync(tmp, this.file);
    } catch (err) {
      this.onError(`cannot save ${this.file}: ${(err as Error).message}`);
    }
  }
}
