import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { parseWebConfig, WebConfigError } from './web-config';

/** A web config file read with its certificate and key: what the metrics server serves with. */
export interface LoadedWebConfig {
  file: string;
  tls?: { cert: Buffer; key: Buffer };
  users?: Record<string, string>;
  /** Changes when the file or the certificate or key it names changes: a reload restarts the server then. */
  fingerprint: string;
}

function readOrFail(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new WebConfigError(`${what} ${JSON.stringify(file)} cannot be read (${code === 'ENOENT' ? 'no such file' : code ?? (err as Error).message})`);
  }
}

/**
 * Read the web config file and the certificate and key it names, and check that they make a
 * TLS context (a key that does not match its certificate fails here, not at the first scrape).
 * Throws WebConfigError naming the key.
 */
export function readWebConfig(file: string): LoadedWebConfig {
  const text = readOrFail(file, 'the file').toString('utf8');
  const parsed = parseWebConfig(text);
  const hash = createHash('sha256').update(text);
  const out: LoadedWebConfig = { file, fingerprint: '' };
  if (parsed.tls) {
    // Relative to the web config's directory, as exporter-toolkit resolves them.
    const dir = path.dirname(file);
    const cert = readOrFail(path.resolve(dir, parsed.tls.certFile), 'tls_server_config.cert_file');
    const key = readOrFail(path.resolve(dir, parsed.tls.keyFile), 'tls_server_config.key_file');
    try {
      tls.createSecureContext({ cert, key });
    } catch (err) {
      // OpenSSL's reason (e.g. "key values mismatch", "no start line"), never the key itself.
      throw new WebConfigError(`tls_server_config.cert_file and key_file do not make a TLS certificate and key: ${(err as Error).message}`);
    }
    out.tls = { cert, key };
    hash.update(cert).update(key);
  }
  if (parsed.users) out.users = parsed.users;
  out.fingerprint = hash.digest('hex');
  return out;
}
