import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log';
import type { MetricsRegistry, MetricsSource } from './registry';
import { BasicAuth } from './basic-auth';
import type { LoadedWebConfig } from './web-config-file';

export interface MetricsServerOptions {
  /** "host:port", "[::1]:port" or ":port" (all addresses); port 0 picks a free one. */
  listen: string;
  registry: MetricsRegistry;
  source: Pick<MetricsSource, 'detectionRunning'>;
  logger: Logger;
  /** metrics.webConfigFile, read: TLS and/or basic auth for every endpoint. */
  web?: Pick<LoadedWebConfig, 'tls' | 'users'>;
}

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/** Split "host:port"; throws a one-sentence error naming the value on anything else. */
export function parseListen(listen: string): { host?: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(listen);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`metrics.listen: expected "host:port" (e.g. "0.0.0.0:9464"), got "${listen}"`);
  const host = m[1] ?? m[2];
  return host ? { host, port } : { port };
}

/**
 * The text written piece by piece as it is made, waiting for the socket to drain: a scrape
 * never holds the whole text (6.5 MB at 5,000 containers) in memory. A client that goes away
 * mid-scrape ends it.
 */
async function streamMetrics(registry: MetricsRegistry, req: http.IncomingMessage, res: http.ServerResponse, logger: MetricsServerOptions['logger']): Promise<void> {
  let started = false;
  try {
    for await (const chunk of registry.textChunks()) {
      if (!started) {
        res.writeHead(200, { 'Content-Type': registry.contentType });
        started = true;
        if (req.method === 'HEAD') break;
      }
      if (res.destroyed) return;
      if (!res.write(chunk)) await new Promise<void>((resolve) => {
        const done = (): void => {
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.on('drain', done);
        res.on('close', done);
      });
    }
    res.end();
  } catch (err) {
    logger.error({ err }, 'metrics scrape failed');
    if (!started) res.writeHead(500, { 'Content-Type': 'text/plain' }).end('scrape failed\n');
    else res.destroy();
  }
}

export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const { registry, source, logger } = opts;
  const { host, port } = parseListen(opts.listen);

  const auth = opts.web?.users ? new BasicAuth(opts.web.users) : undefined;
  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    if (!auth) return route(req, res);
    auth.check(req.headers.authorization).then(
      (ok) => {
        if (ok) return route(req, res);
        res.writeHead(401, { 'WWW-Authenticate': 'Basic', 'Content-Type': 'text/plain' }).end('unauthorized\n');
      },
      (err: unknown) => {
        logger.error({ err: (err as Error).message }, 'metrics basic auth check failed');
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end('auth check failed\n');
      },
    );
  };
  const route = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    if (path === '/metrics') {
      void streamMetrics(registry, req, res, logger);
      return;
    }
    if (path === '/healthz') {
      let h: { ok: boolean; detail: string; degraded?: string[] };
      try {
        h = source.detectionRunning();
      } catch (err) {
        h = { ok: false, detail: `health check failed: ${(err as Error).message}` };
      }
      // Degraded is still 200: a liveness probe that restarted us would restart into the same wall.
      const status = !h.ok ? 'down' : h.degraded?.length ? 'degraded' : 'ok';
      res.writeHead(h.ok ? 200 : 503, { 'Content-Type': 'application/json' }).end(`${JSON.stringify({ ok: h.ok, status, detail: h.detail, ...(h.degraded?.length ? { degraded: h.degraded } : {}) })}\n`);
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
  };
  const tls = opts.web?.tls;
  const server = tls ? https.createServer({ cert: tls.cert, key: tls.key }, handler) : http.createServer(handler);
  // A scraper keeping connections alive must not hold the daemon's shutdown.
  server.keepAliveTimeout = 5000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'metrics server error'));
  const bound = (server.address() as AddressInfo).port;
  logger.info({ listen: opts.listen, port: bound, tls: tls !== undefined, basicAuth: auth !== undefined }, 'metrics server listening');

  return {
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
