import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

// The daemon's unix sockets (status, hooks) are root only. Node has no SO_PEERCRED (no API
// for a unix socket's peer credentials as of Node 20), so access is the file's: the socket is
// bound under a temporary name, made 0600 and renamed into place in a directory made 0700
// when we make it, so it is never reachable with looser bits, and a stale socket of a crashed
// run is replaced in one step. A live one (another daemon) is left alone.

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

/** A bound socket: `release()` removes its path if it is still ours (a later daemon may have bound it meanwhile). */
export interface BoundSocket {
  release(): void;
}

/** Binds `server` at `socketPath` as above; throws (the server closed, nothing left behind) with why it could not. */
export async function listenRootOnly(server: net.Server, socketPath: string): Promise<BoundSocket> {
  const dir = path.dirname(socketPath);
  const tmp = `${socketPath}.${process.pid}.tmp`;
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
    throw err;
  }
  const ino = fs.statSync(socketPath).ino;
  return {
    release() {
      try {
        if (fs.statSync(socketPath).ino === ino) fs.rmSync(socketPath, { force: true });
      } catch {
        /* gone already */
      }
    },
  };
}
