import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from '../log';
import type { StatusReport } from './report';

export interface StatusServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

/** Whether something answers on the socket (another daemon running), within 500 ms. */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    const done = (v: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done(true), 500);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
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
  const dir = path.dirname(socketPath);
  const tmp = `${socketPath}.${process.pid}.tmp`;
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
  try {
    if (!fs.existsSync(dir)) {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      fs.chmodSync(dir, 0o700); // mkdir's mode is under the umask
    }
    if (fs.existsSync(socketPath)) {
      if (!fs.lstatSync(socketPath).isSocket()) throw new Error(`${socketPath} exists and is not a socket`);
      if (await answers(socketPath)) throw new Error(`another process answers on ${socketPath} (a second daemon?)`);
    }
    fs.rmSync(tmp, { force: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(tmp, () => {
        server.off('error', reject);
        resolve();
      });
    });
    fs.chmodSync(tmp, 0o600);
    fs.renameSync(tmp, socketPath);
  } catch (err) {
    server.close();
    try {
      fs.rmSync(tmp, { force: true });
    } catch {
      /* its directory is what failed (ENOTDIR, EACCES): nothing was made */
    }
    log.warn({ socket: socketPath, err: (err as Error).message }, 'cannot serve the status socket: `cgwatchdog status` will not reach this daemon; it runs on');
    return undefined;
  }
  const ino = fs.statSync(socketPath).ino;
  server.on('error', (err) => log.warn({ socket: socketPath, err: err.message }, 'status socket error'));
  log.info({ socket: socketPath }, 'status socket listening');
  return {
    socketPath,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      // Only our own: a daemon started after us may have bound the path meanwhile.
      try {
        if (fs.statSync(socketPath).ino === ino) fs.rmSync(socketPath, { force: true });
      } catch {
        /* gone already */
      }
    },
  };
}
