import { createHmac } from 'node:crypto';
import fsp from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { SecretRef, SinkConfig } from '../../config/schema';
import type { Alert } from '../alert';

// The one HTTP POST every sink uses.
//
// Signature scheme for receivers (when a sink has `hmac`): the header named by `hmac.header`
// (default X-Cgwatchdog-Signature) carries `sha256=<hex>`, the lowercase hex HMAC-SHA256 of
// the exact request body bytes, keyed with the secret's bytes (UTF-8, trailing newline
// trimmed). A receiver recomputes it over the raw body before parsing the JSON and compares
// with crypto.timingSafeEqual. Replays are recognised by the Idempotency-Key header, which
// also appears in the webhook body as `idempotencyKey`.

export type SendOutcome =
  | { result: 'delivered'; status: number }
  | { result: 'retry'; status?: number; error?: string }
  | { result: 'rejected'; status: number; error?: string };

export interface Sink {
  readonly name: string;
  readonly config: SinkConfig;
  send(alert: Alert, signal?: AbortSignal): Promise<SendOutcome>;
}

export function classifyStatus(status: number): SendOutcome['result'] {
  if (status >= 200 && status < 300) return 'delivered';
  if (status === 408 || status === 429 || status >= 500) return 'retry';
  // 1xx/3xx are not success for a POST we do not follow; retrying will not change them either.
  return 'rejected';
}

/** Reads a secret at send time, so a rotated token file is picked up without a reload. */
export async function readSecret(ref: SecretRef, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  if (ref.file !== undefined) {
    const text = await fsp.readFile(ref.file, 'utf8');
    return text.replace(/\r?\n+$/, '');
  }
  const v = ref.env !== undefined ? env[ref.env] : undefined;
  if (v === undefined || v === '') throw new Error(`environment variable ${ref.env ?? '?'} is not set`);
  return v.replace(/\r?\n+$/, '');
}

export function signBody(secret: string, body: Buffer): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export interface PostOptions {
  url: string;
  body: Buffer;
  headers?: Record<string, string>;
  bearerToken?: SecretRef;
  hmac?: { secret: SecretRef; header: string };
  timeoutMs: number;
  signal?: AbortSignal;
}

/** Response bodies are read only for the error message; cap what we keep. */
const MAX_ERROR_BODY = 512;

/**
 * POSTs the body. Never throws: every failure is an outcome, and no outcome or error text
 * contains the token or secret (the URL is not echoed either: Slack webhook URLs are secrets).
 */
export async function postBody(o: PostOptions): Promise<SendOutcome> {
  const headers: Record<string, string> = {
    'User-Agent': 'cgwatchdog',
    ...o.headers,
    'Content-Length': String(o.body.length),
  };
  try {
    if (o.bearerToken) headers.Authorization = `Bearer ${await readSecret(o.bearerToken)}`;
    if (o.hmac) headers[o.hmac.header] = signBody(await readSecret(o.hmac.secret), o.body);
  } catch (err) {
    // A missing secret file may appear (mounted later); keep the entry and retry.
    return { result: 'retry', error: `cannot read secret: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` };
  }

  let url: URL;
  try {
    url = new URL(o.url);
  } catch {
    return { result: 'rejected', status: 0, error: 'invalid URL' };
  }
  const mod = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : undefined;
  if (!mod) return { result: 'rejected', status: 0, error: `unsupported protocol ${url.protocol}` };

  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`timeout after ${o.timeoutMs} ms`)), o.timeoutMs);
  const onOuterAbort = (): void => ac.abort(new Error('aborted'));
  if (o.signal?.aborted) onOuterAbort();
  o.signal?.addEventListener('abort', onOuterAbort, { once: true });

  try {
    return await new Promise<SendOutcome>((resolve) => {
      const req = mod.request(url, { method: 'POST', headers, signal: ac.signal }, (res) => {
        const status = res.statusCode ?? 0;
        const chunks: Buffer[] = [];
        let kept = 0;
        res.on('data', (c: Buffer) => {
          if (kept < MAX_ERROR_BODY) {
            chunks.push(c);
            kept += c.length;
          }
        });
        res.on('error', (err) => resolve({ result: 'retry', status, error: errorText(err, ac.signal) }));
        res.on('end', () => {
          const result = classifyStatus(status);
          if (result === 'delivered') return resolve({ result, status });
          const text = Buffer.concat(chunks).toString('utf8').slice(0, MAX_ERROR_BODY).trim();
          const error = `HTTP ${status}${text ? `: ${text}` : ''}`;
          resolve(result === 'retry' ? { result, status, error } : { result, status, error });
        });
      });
      req.on('error', (err) => resolve({ result: 'retry', error: errorText(err, ac.signal) }));
      req.end(o.body);
    });
  } finally {
    clearTimeout(timer);
    o.signal?.removeEventListener('abort', onOuterAbort);
  }
}

function errorText(err: Error, signal: AbortSignal): string {
  if (signal.aborted) {
    const reason = signal.reason as unknown;
    return reason instanceof Error ? reason.message : 'aborted';
  }
  return (err as NodeJS.ErrnoException).code ?? err.message;
}

/** The fields all sink configs share, as postBody wants them. */
export function postOptionsFor(cfg: SinkConfig, url: string, body: Buffer, extraHeaders: Record<string, string>, signal?: AbortSignal): PostOptions {
  return {
    url,
    body,
    headers: { ...cfg.headers, ...extraHeaders },
    bearerToken: cfg.bearerToken,
    hmac: cfg.hmac,
    timeoutMs: cfg.timeoutMs,
    signal,
  };
}
