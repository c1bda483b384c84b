import { fetchStatus } from './client';
import { renderStatus } from './render';

export interface StatusOptions {
  json: boolean;
  /** Redraw every intervalMs until interrupted. */
  watch: boolean;
  intervalMs: number;
}

const write = (s: string): Promise<void> => new Promise((resolve) => process.stdout.write(s, () => resolve()));

/**
 * `cgwatchdog status`: one report, or with --watch one every interval (a terminal is cleared
 * between frames; a pipe gets them one after another, --json one object a line). Throws a
 * StatusError (one sentence) when the daemon cannot be asked.
 */
export async function statusCommand(socketPath: string, o: StatusOptions): Promise<number> {
  const tty = process.stdout.isTTY === true;
  for (let frame = 0; ; frame++) {
    const t0 = Date.now();
    const r = await fetchStatus(socketPath);
    if (o.json) await write(o.watch ? `${JSON.stringify(r)}\n` : `${JSON.stringify(r, null, 2)}\n`);
    else {
      const lines = renderStatus(r, { limit: tty && o.watch ? Math.max(1, (process.stdout.rows ?? 40) - 9) : undefined });
      const prefix = o.watch ? (tty ? '\x1b[H\x1b[2J' : frame > 0 ? '\n' : '') : '';
      await write(`${prefix}${lines.join('\n')}\n`);
    }
    if (!o.watch) return 0;
    await new Promise((r) => setTimeout(r, Math.max(0, o.intervalMs - (Date.now() - t0))));
  }
}
