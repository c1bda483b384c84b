import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../log';
import type { MetricsSource } from './registry';

export interface MetricsServerOptions {
  /** "host:port", "[::1]:port" or ":port" (all addresses); port 0 picks a free one. */
  listen: string;
  registry: Registry;
  source: Pick<MetricsSource, 'detectionRunning'>;
  logger: Logger;
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

export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const { registry, source, logger } = opts;
  const { host, port } = parseListen(opts.listen);

  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    if (path === '/metrics') {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'Content-Type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text);
        },
        (err: unknown) => {
          logger.error({ err }, 'metrics scrape failed');
          res.writeHead(500, { 'Content-Type': 'text/plain' }).end('scrape failed\n');
        },
      );
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
  });
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
  logger.info({ listen: opts.listen, port: bound }, 'metrics server listening');

  return {
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
