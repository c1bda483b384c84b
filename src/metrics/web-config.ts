import { parseDocument } from 'yaml';

/**
 * The Prometheus exporter-toolkit web config (the file node_exporter takes with
 * --web.config.file), parsed from its text: pure, no I/O. cgwatchdog serves a subset of it;
 * every other key is refused by name, never ignored: an operator who wrote client_auth_type
 * expects client certificates to be checked, and a silently ignored key would leave the
 * endpoint more open than the file says.
 */
export interface WebConfig {
  /** Paths as written (relative ones are relative to the web config file's directory, as in exporter-toolkit). */
  tls?: { certFile: string; keyFile: string };
  /** user -> bcrypt hash. */
  users?: Record<string, string>;
}

/** A problem with the file's content; the message names the key and says what was expected. */
export class WebConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WebConfigError';
  }
}

// exporter-toolkit keys (v0.13) that cgwatchdog does not implement: refused with their name.
const UNSUPPORTED_TOP = ['http_server_config', 'rate_limit'];
const UNSUPPORTED_TLS = [
  'cert',
  'key',
  'client_ca',
  'client_ca_file',
  'client_auth_type',
  'client_allowed_sans',
  'cipher_suites',
  'curve_preferences',
  'min_version',
  'max_version',
  'prefer_server_cipher_suites',
];

// $2a$, $2b$ and $2y$ are the bcrypt revisions bcryptjs verifies (2x is a broken-implementation marker);
// cost 04..31; 22 characters of salt and 31 of hash in bcrypt's base64.
const BCRYPT = /^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$/;

const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function checkKeys(map: Record<string, unknown>, where: string, supported: string[], unsupported: string[]): void {
  for (const key of Object.keys(map)) {
    if (supported.includes(key)) continue;
    const name = where ? `${where}.${key}` : key;
    if (unsupported.includes(key)) throw new WebConfigError(`${name} is not supported by cgwatchdog (it serves ${supported.join(' and ')} only)`);
    throw new WebConfigError(`${name} is not a web config key cgwatchdog knows (it serves ${supported.join(' and ')} only)`);
  }
}

function nonEmptyString(map: Record<string, unknown>, key: string, where: string): string {
  const v = map[key];
  if (v === undefined || v === null || v === '') throw new WebConfigError(`${where}.${key} is missing: TLS needs both cert_file and key_file`);
  if (typeof v !== 'string') throw new WebConfigError(`${where}.${key} is ${JSON.stringify(v)}: expected a file path`);
  return v;
}

/** Parse and validate the text of a web config file. Throws WebConfigError naming the key. */
export function parseWebConfig(text: string): WebConfig {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const line = first.linePos?.[0];
    throw new WebConfigError(`not valid YAML${line ? ` (line ${line.line}, column ${line.col})` : ''}: ${first.message.split('\n')[0]}`);
  }
  const raw: unknown = doc.toJS();
  // An empty file is exporter-toolkit's "no TLS, no auth" too.
  if (raw === null || raw === undefined) return {};
  if (!isMap(raw)) throw new WebConfigError(`expected a mapping with tls_server_config and/or basic_auth_users at the top, got ${Array.isArray(raw) ? 'a list' : JSON.stringify(raw)}`);
  checkKeys(raw, '', ['tls_server_config', 'basic_auth_users'], UNSUPPORTED_TOP);

  const out: WebConfig = {};
  const tls = raw.tls_server_config;
  // Present but empty (null) is "no TLS" in exporter-toolkit; a mapping must be complete here.
  if (tls !== undefined && tls !== null) {
    if (!isMap(tls)) throw new WebConfigError(`tls_server_config is ${JSON.stringify(tls)}: expected a mapping with cert_file and key_file`);
    checkKeys(tls, 'tls_server_config', ['cert_file', 'key_file'], UNSUPPORTED_TLS);
    out.tls = { certFile: nonEmptyString(tls, 'cert_file', 'tls_server_config'), keyFile: nonEmptyString(tls, 'key_file', 'tls_server_config') };
  }

  const users = raw.basic_auth_users;
  if (users !== undefined && users !== null) {
    if (!isMap(users)) throw new WebConfigError(`basic_auth_users is ${JSON.stringify(users)}: expected a mapping of user name to bcrypt hash`);
    out.users = {};
    for (const [user, hash] of Object.entries(users)) {
      // A colon ends the user name in an Authorization header (RFC 7617): such a user could never log in.
      if (user === '' || user.includes(':')) throw new WebConfigError(`basic_auth_users has the user ${JSON.stringify(user)}: a user name must be non-empty and without ":"`);
      // Never echo the value: it may be a password pasted where its hash belongs.
      if (typeof hash !== 'string' || !BCRYPT.test(hash)) throw new WebConfigError(`basic_auth_users.${user} is not a bcrypt hash (expected "$2y$10$" and 53 more characters, as htpasswd -nBC 10 makes; value not shown)`);
      out.users[user] = hash;
    }
  }
  return out;
}
