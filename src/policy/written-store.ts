import { NewerFormatError, StateFile } from '../state/state-file';
import type { StateWriteHealth } from '../state/write-health';

/** Version 1 was a bare `{ "<cgroup>": value }` object; 2 puts it under `written`. */
const FORMAT = 2;

function migrate(data: Record<string, unknown>, version: number): { written: Record<string, number> } | null {
  const raw = version === 0 ? data : version === 2 ? data.written : undefined;
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return null;
  const written: Record<string, number> = {};
  for (const [k, v] of Object.entries(raw)) if (k.startsWith('/') && Number.isSafeInteger(v)) written[k] = v as number;
  return { written };
}

/**
 * The pids.max values cgwatchdog itself wrote, by cgroup path, kept in the state directory so
 * that `existing: keep-lower` still tells our own earlier value from an operator's after a
 * restart (edit the config, restart the service: the new policy must apply). Written
 * atomically (StateFile); a missing or unreadable file is an empty store.
 */
export class WrittenStore extends Map<string, number> {
  private timer?: NodeJS.Timeout;
  private readonly store: StateFile<{ written: Record<string, number> }>;

  constructor(
    stateDir: string,
    private readonly onError: (message: string) => void = () => {},
    /** Where failed saves are counted (the daemon); without it, onError tells them. */
    private readonly writes?: StateWriteHealth,
  ) {
    super();
    this.store = new StateFile(stateDir, 'written-pids-max.json', FORMAT, migrate);
    try {
      for (const [k, v] of Object.entries(this.store.read()?.written ?? {})) super.set(k, v);
    } catch (err) {
      onError(err instanceof NewerFormatError ? err.message : `ignoring it: ${(err as Error).message}`);
    }
  }

  get file(): string {
    return this.store.file;
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
      this.store.write({ written: Object.fromEntries(this) });
      this.writes?.saved(this.file);
    } catch (err) {
      if (this.writes) this.writes.failed(this.file, err);
      else this.onError(`cannot save ${this.file}: ${(err as Error).message}`);
    }
  }
}
