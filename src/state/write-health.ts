import { EventEmitter } from 'node:events';
import path from 'node:path';

/** What a state file that cannot be saved costs at the next restart. */
const LOSS: Record<string, string> = {
  'alert-state.json': 'a restart would start the firing alerts afresh',
  'written-pids-max.json': "a restart would take cgwatchdog's own pids.max values for an operator's",
};

/**
 * Saves of the state files beside the outbox (alert-state.json, written-pids-max.json) that
 * the state directory refused (ENOSPC, EROFS, EIO). Their data stays in memory, so nothing
 * stops; what a restart would lose is counted and shown in /healthz until a save succeeds.
 * Emits 'failure' ({ file, code, message, first }), `first` when the file starts failing,
 * and 'recovered' (file).
 */
export class StateWriteHealth extends EventEmitter {
  private readonly failing = new Map<string, string>();

  failed(file: string, err: unknown): void {
    const name = path.basename(file);
    const code = (err as NodeJS.ErrnoException).code ?? /\b(E[A-Z]+)\b/.exec((err as Error).message)?.[1] ?? 'EUNKNOWN';
    const first = !this.failing.has(name);
    this.failing.set(name, code);
    this.emit('failure', { file: name, code, message: (err as Error).message, first });
  }

  saved(file: string): void {
    const name = path.basename(file);
    if (this.failing.delete(name)) this.emit('recovered', name);
  }

  /** One line per state file that cannot be saved, for /healthz's degraded list. */
  degraded(): string[] {
    return [...this.failing].map(([file, code]) => `state file ${file} cannot be written (${code}): kept in memory; ${LOSS[file] ?? 'a restart would lose it'}`);
  }
}
