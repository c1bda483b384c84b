import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Config } from '../config/schema';
import type { Logger } from '../log';
import { listenRootOnly, type BoundSocket } from '../root-socket';
import { configFileFor, configIdentity, hookConfigOf } from './hook-config';
import { fileConfigSource, runHookWith, type HookConfigSource, type HookRun } from './oci-hook';
import { wrapperPolicy } from './runc-wrapper';

/**
 * The daemon's hook socket: the native client (native/hook-client.c) sends what the Node hook
 * would read (the hook's stdin, or the bundle's config.json for the Docker wrapper) and prints
 * what comes back. A Node start costs 116-151 ms here (`node -e 0`), the hook's target is 30 ms
 * p99 for the whole start: the policy stays in TypeScript, run in the process that has it loaded.
 *
 * Framing, both ways: a 4-byte big-endian length, then that many bytes of UTF-8 JSON; one
 * request and one response per connection. Request {v: 1, stage, input, config, id?, logFormat?}
 * (config: the hook's --config or null), response {exitCode, stdout, log[]}.
 */
export const HOOK_FRAME_MAX = 4 * 1024 * 1024;
/** A connection that has not sent its whole request by then is dropped (the client then runs the Node hook). */
export const HOOK_REQUEST_TIMEOUT_MS = 10_000;
export const WRAPPER_STAGES = ['runc-create', 'runc-run'] as const;

export interface HookRequest {
  v: 1;
  stage: string;
  input: string;
  config: string | null;
  /** The Docker wrapper: runc's container id and --log-format. */
  id?: string;
  logFormat?: string;
}

export type HookResponse = HookRun;

export class FrameError extends Error {}

export function encodeFrame(value: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  if (body.length > HOOK_FRAME_MAX) throw new FrameError(`frame of ${body.length} bytes is over the ${HOOK_FRAME_MAX}-byte cap`);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

/** Pure: bytes in, one whole frame out once it is there; throws FrameError as soon as a length is over the cap. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private have = 0;
  private want: number | undefined;

  constructor(private readonly max = HOOK_FRAME_MAX) {}

  /** The frame's body when complete (bytes after it are an error: one frame a connection). */
  push(chunk: Buffer): Buffer | undefined {
    this.chunks.push(chunk);
    this.have += chunk.length;
    if (this.want === undefined && this.have >= 4) {
      const all = Buffer.concat(this.chunks);
      this.chunks = [all];
      this.want = all.readUInt32BE(0);
      if (this.want > this.max) throw new FrameError(`request of ${this.want} bytes is over the ${this.max}-byte cap`);
    }
    if (this.want === undefined || this.have < 4 + this.want) return undefined;
    if (this.have > 4 + this.want) throw new FrameError(`${this.have - 4 - this.want} bytes after the request (one request a connection)`);
    return Buffer.concat(this.chunks).subarray(4);
  }
}

/** Pure: a request frame's body, checked field by field; throws FrameError saying what is wrong. */
export function parseHookRequest(body: Buffer): HookRequest {
  let j: unknown;
  try {
    j = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new FrameError(`request is not JSON: ${(err as Error).message}`);
  }
  if (!j || typeof j !== 'object' || Array.isArray(j)) throw new FrameError('request is not a JSON object');
  const r = j as Record<string, unknown>;
  if (r.v !== 1) throw new FrameError(`request version ${JSON.stringify(r.v)}: expected 1`);
  if (typeof r.stage !== 'string' || r.stage.length === 0 || r.stage.length > 64) throw new FrameError('request.stage: expected a short string');
  if (typeof r.input !== 'string') throw new FrameError('request.input: expected a string');
  if (r.config !== null && (typeof r.config !== 'string' || !path.isAbsolute(r.config) || r.config.includes('\0'))) throw new FrameError('request.config: expected an absolute path or null');
  for (const k of ['id', 'logFormat'] as const) if (r[k] !== undefined && typeof r[k] !== 'string') throw new FrameError(`request.${k}: expected a string`);
  return { v: 1, stage: r.stage, input: r.input, config: r.config, id: r.id as string | undefined, logFormat: r.logFormat as string | undefined };
}

/** The config the daemon runs on: the object, its file (null: built-in defaults) and the file's identity when it was read. */
export interface DaemonConfigView {
  config: Config;
  file: string | null;
  identity: string | null;
}

/**
 * The hook's config, as the Node hook would load it: the daemon's own when the hook names the
 * daemon's file and the file is unchanged since the daemon read it (the usual case: one
 * /etc/cgwatchdog/config.yaml), else the file itself through the hook's config cache (another
 * file, or an edit not reloaded yet: the Node hook would read the new text, so do we).
 */
export function configSourceFor(req: HookRequest, daemon: DaemonConfigView, cacheDir?: string): { source: HookConfigSource; from: 'daemon' | 'file' } {
  const wanted = configFileFor(req.config ?? undefined);
  const mine = daemon.file === null ? null : path.resolve(daemon.file);
  if (wanted === mine) {
    let same = wanted === null;
    if (wanted !== null) {
      try {
        same = configIdentity(wanted) === daemon.identity;
      } catch {
        same = false;
      }
    }
    if (same) {
      const config = hookConfigOf(daemon.config);
      return { source: { load: () => config, broken: () => ({ failClosed: config.hooks.failClosed, stateDir: config.paths.stateDir }) }, from: 'daemon' };
    }
  }
  return { source: fileConfigSource(req.config ?? undefined, cacheDir), from: 'file' };
}

/**
 * A hook's config file the daemon cannot see: the unit's sandbox (PrivateTmp=, ProtectHome=)
 * gives the daemon another /tmp and /home than the runtime that runs the hook. The Node hook,
 * in the runtime's view, answers instead: the daemon closes the connection unanswered.
 */
export function unseenConfig(req: HookRequest): boolean {
  const wanted = configFileFor(req.config ?? undefined);
  return req.config !== null && wanted !== null && !fs.existsSync(wanted);
}

/** One request's answer: the Node hook's (or Node wrapper's) very work, in this process. */
export async function answerHookRequest(req: HookRequest, daemon: DaemonConfigView, cacheDir?: string): Promise<HookResponse & { from: 'daemon' | 'file' }> {
  const { source, from } = configSourceFor(req, daemon, cacheDir);
  if ((WRAPPER_STAGES as readonly string[]).includes(req.stage)) {
    const r = await wrapperPolicy({ command: req.stage.slice('runc-'.length), id: req.id, logFormat: req.logFormat }, () => req.input, source);
    return { exitCode: r.refused ? 1 : 0, stdout: r.write ?? '', log: r.log, from };
  }
  return { ...(await runHookWith(req.stage, req.input, source)), from };
}

export interface HookServer {
  readonly socketPath: string;
  /** Requests answered since the start (the tests and `status` read it). */
  readonly served: number;
  close(): Promise<void>;
}

/**
 * Serves the hook socket. Root only: Node has no SO_PEERCRED (no API for a unix socket's peer
 * credentials as of Node 20), so the socket is bound under a temporary name, made 0600 and
 * renamed into place in a directory made 0700, as the status socket: only root can connect.
 * Never throws, and no request can stop the daemon: a bad one is logged and its connection
 * closed (the client then runs the Node hook). Returns undefined when the socket cannot be
 * made (a warning; the hooks then run the Node hook).
 */
export async function serveHooks(socketPath: string, daemon: () => DaemonConfigView, log: Logger, opts: { cacheDir?: string; timeoutMs?: number; maxFrame?: number } = {}): Promise<HookServer | undefined> {
  let served = 0;
  const open = new Set<net.Socket>();
  const server = net.createServer((conn) => {
    open.add(conn);
    conn.on('close', () => open.delete(conn));
    const t0 = process.hrtime.bigint();
    const decoder = new FrameDecoder(opts.maxFrame ?? HOOK_FRAME_MAX);
    let done = false;
    const drop = (why: string): void => {
      if (done) return;
      done = true;
      log.warn({ err: why }, 'hook socket: bad request, connection closed (the client runs the Node hook)');
      conn.destroy();
    };
    conn.setTimeout(opts.timeoutMs ?? HOOK_REQUEST_TIMEOUT_MS, () => drop(`no whole request within ${opts.timeoutMs ?? HOOK_REQUEST_TIMEOUT_MS} ms`));
    conn.on('error', () => undefined); // the client went away: it runs the Node hook
    conn.on('data', (chunk: Buffer) => {
      if (done) return;
      let req: HookRequest;
      try {
        const body = decoder.push(chunk);
        if (!body) return;
        req = parseHookRequest(body);
      } catch (err) {
        drop((err as Error).message);
        return;
      }
      done = true;
      if (unseenConfig(req)) {
        log.debug({ stage: req.stage, config: req.config }, 'hook request for a config file the daemon does not see: closed unanswered, the client runs the Node hook');
        conn.destroy();
        return;
      }
      answerHookRequest(req, daemon(), opts.cacheDir).then(
        ({ from, ...r }) => {
          served++;
          log.debug({ stage: req.stage, config: from, exitCode: r.exitCode, ms: Number(process.hrtime.bigint() - t0) / 1e6 }, 'hook request served');
          conn.end(encodeFrame(r));
        },
        (err) => {
          // runHookWith and wrapperPolicy never throw: this is a bug, survived.
          log.error({ err: (err as Error).message, stage: req.stage }, 'hook request failed (a bug): connection closed, the client runs the Node hook');
          conn.destroy();
        },
      );
    });
    conn.on('end', () => {
      if (!done) drop('the client closed before a whole request');
    });
  });
  server.maxConnections = 256;
  let bound: BoundSocket;
  try {
    bound = await listenRootOnly(server, socketPath);
  } catch (err) {
    log.warn({ socket: socketPath, err: (err as Error).message }, 'cannot serve the hook socket: the native hooks run the Node hook instead; the daemon runs on');
    return undefined;
  }
  server.on('error', (err) => log.warn({ socket: socketPath, err: err.message }, 'hook socket error'));
  log.info({ socket: socketPath }, 'hook socket listening');
  return {
    socketPath,
    get served() {
      return served;
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // A client still sending gets nothing: it runs the Node hook, as when no daemon runs.
      for (const c of open) c.destroy();
      await closed;
      bound.release();
    },
  };
}
