import net from 'node:net';
import type { Logger } from '../log';
import { listenRootOnly, type BoundSocket } from '../root-socket';
import type { StatusReport } from './report';

export interface StatusServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

/**
 * The status socket: each connection gets one JSON StatusReport and is closed (no request to
 * parse, nothing to be fed). Root only: the directory is made 0700 when we make it, and the
 * socket is bound under a temporary name, made 0600 and renamed into place, so it is never
 * reachable with looser bits and a stale socket of a crashed run is replaced in one step. A
 * live one (another daemon) is left alone. Never throws: a status socket that cannot be made
 * is a warning, the daemon runs on without it (returns undefined).
 */
export async function serveStatus(socketPath: string, report: () => Promise<StatusReport>, log: Logger): Promise<StatusServer | undefined> {
  const server = net.createServer((conn) => {
    conn.on('error', () => undefined); // the client went away: nothing to do
    report().then(
      (r) => conn.end(`${JSON.stringify(r)}\n`),
      (err) => {
        log.warn({ err: (err as Error).message }, 'status request failed');
        conn.end(`${JSON.stringify({ error: (err as Error).message })}\n`);
      },
    );
  });
  let bound: BoundSocket;
  try {
    bound = await listenRootOnly(server, socketPath);
  } catch (err) {
    log.warn({ socket: socketPath, err: (err as Error).message }, 'cannot serve the status socket: `cgwatchdog status` will not reach this daemon; it runs on');
    return undefined;
  }
  server.on('error', (err) => log.warn({ socket: socketPath, err: err.message }, 'status socket error'));
  log.info({ socket: socketPath }, 'status socket listening');
  return {
    socketPath,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      bound.release();
    },
  };
}
