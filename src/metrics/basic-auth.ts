import { createHash, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcryptjs';

// A bcrypt hash of a password nobody has: an unknown user costs the same bcrypt as a known
// one, so response times do not tell which users exist (exporter-toolkit does the same).
const FAKE_HASH = '$2b$10$3PbLk8b5p8JYv.hOaeaVBO43rpmtumFZXSzugEjm/tT4.gdu.XOVi';

// bcrypt at cost 10 is ~50-100 ms of CPU on purpose; Prometheus scrapes with the same
// credentials every interval, so a verified (user, password) is remembered, as a digest.
const CACHE_MAX = 100;

/** "Basic <base64 user:password>" -> user and password; undefined for anything else. */
export function parseBasicAuth(header: string | undefined): { user: string; password: string } | undefined {
  const m = header ? /^Basic +([A-Za-z0-9+/]+=*) *$/i.exec(header) : null;
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** HTTP basic authentication against exporter-toolkit's basic_auth_users (user -> bcrypt hash). */
export class BasicAuth {
  private readonly verified = new Map<string, Buffer>();
  // One bcrypt at a time, as exporter-toolkit's mutex: a flood of wrong passwords queues
  // instead of taking every core from detection.
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly users: Readonly<Record<string, string>>) {}

  /** Whether the Authorization header carries a user of the file with its password. Never logs either. */
  async check(header: string | undefined): Promise<boolean> {
    const creds = parseBasicAuth(header);
    if (!creds) return false;
    const known = Object.hasOwn(this.users, creds.user);
    const hash = known ? this.users[creds.user]! : FAKE_HASH;
    // Keyed by the hash too, so the entry of an old hash never lets the old password in.
    const digest = createHash('sha256').update(JSON.stringify([creds.user, hash, creds.password])).digest();
    const cacheKey = createHash('sha256').update(JSON.stringify([creds.user, hash])).digest('hex');
    const seen = this.verified.get(cacheKey);
    if (known && seen && timingSafeEqual(seen, digest)) return true;
    const ok = await this.serialized(() => bcrypt.compare(creds.password, hash));
    if (!ok || !known) return false;
    if (this.verified.size >= CACHE_MAX) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(cacheKey, digest);
    return true;
  }

  private serialized<T>(f: () => Promise<T>): Promise<T> {
    const p = this.queue.then(f);
    this.queue = p.catch(() => undefined);
    return p;
  }
}
