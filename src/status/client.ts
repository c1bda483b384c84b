import net from 'node:net';
import type { StatusReport } from './report';

/** A status request that failed, with the one sentence for the operator. */
export class StatusError extends Error {}

/** Asks the daemon on `socketPath` for its report (one connection, one JSON object). */
export function fetchStatus(socketPath: string, timeoutMs = 10_000): Promise<StatusReport> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    let text = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new StatusError(`the daemon did not answer on ${socketPath} within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('data', (d: string) => (text += d));
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new StatusError(explain(err, socketPath)));
    });
    s.once('end', () => {
      clearTimeout(timer);
      let r: StatusReport & { error?: string };
      try {
        r = JSON.parse(text) as StatusReport & { error?: string };
      } catch {
        return reject(new StatusError(`the daemon on ${socketPath} sent something that is not a status report`));
      }
      if (r.error) return reject(new StatusError(`the daemon could not make its status report: ${r.error}`));
      if (r.version !== 1) return reject(new StatusError(`the daemon on ${socketPath} speaks status format ${r.version}, this cgwatchdog reads 1: run the same version's CLI`));
      resolve(r);
    });
  });
}

function explain(err: NodeJS.ErrnoException, socketPath: string): string {
  switch (err.code) {
    case 'ENOENT':
    case 'ECONNREFUSED':
      return `the daemon is not running (nothing answers on ${socketPath}); start it with: systemctl start cgwatchdog`;
    case 'EACCES':
    case 'EPERM':
      return `permission denied on the status socket ${socketPath}: it is root's only, run: sudo cgwatchdog status`;
    default:
      return `cannot reach the daemon on ${socketPath}: ${err.code ?? err.message}`;
  }
}
