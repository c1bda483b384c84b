import fs from 'node:fs';
import cron from 'node-cron';
import { parseDocument } from 'yaml';
import type { z } from 'zod';
import { ConfigSchema, type Config } from './schema';
import { readWebConfig, type LoadedWebConfig } from '../metrics/web-config-file';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Walk a parsed document to the value a zod issue points at, for the error message. */
function valueAt(doc: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = doc;
  for (const key of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[key];
  }
  return cur;
}

function keyName(path: readonly PropertyKey[]): string {
  return path.reduce<string>((acc, k) => (typeof k === 'number' ? `${acc}[${k}]` : acc ? `${acc}.${String(k)}` : String(k)), '');
}

function describeIssue(issue: z.core.$ZodIssue, raw: unknown): string {
  if (issue.code === 'unrecognized_keys') {
    const where = keyName(issue.path);
    const keys = issue.keys.map((k) => (where ? `${where}.${k}` : k)).join(', ');
    return `unknown key ${keys}`;
  }
  const key = keyName(issue.path) || '(top level)';
  const value = valueAt(raw, issue.path);
  // A sink's URL (Slack's carries its token) and header values are secrets: never echo them.
  const secret = issue.path.includes('headers') || issue.path[issue.path.length - 1] === 'url';
  const shown = value === undefined ? 'nothing' : secret ? '(value not shown)' : JSON.stringify(value);
  return `${key} is ${shown}: ${issue.message}`;
}

/** Validate an already-parsed object. Throws ConfigError naming the key, the value and what was expected. */
export function validateConfig(raw: unknown, source = 'config'): Config {
  const result = ConfigSchema.safeParse(raw ?? {});
  if (result.success) {
    for (const [i, o] of result.data.policy.overrides.entries()) checkRegex(o.pathPattern, `policy.overrides[${i}].pathPattern`, source);
    for (const [i, p] of result.data.discovery.extraPatterns.entries()) checkRegex(p.pattern, `discovery.extraPatterns[${i}].pattern`, source);
    const schedule = result.data.discovery.reconcileSchedule;
    if (!cron.validate(schedule)) throw new ConfigError(`invalid ${source}: discovery.reconcileSchedule is ${JSON.stringify(schedule)}: expected a cron expression such as "* * * * *"`);
    return result.data;
  }
  // One problem can come back from several branches of a union: say it once.
  const lines = [...new Set(result.error.issues.map((issue) => describeIssue(issue, raw)))];
  throw new ConfigError(`invalid ${source}: ${lines.join('; ')}`);
}

/**
 * A sink whose secret cannot be read would fail at every send: the daemon refuses it at start
 * and reload instead (not `apply`, which sends nothing and may run from a shell without the
 * daemon's environment). Checks that the file is readable or the variable set, never the content.
 */
export function checkSecrets(config: Config, source: string): void {
  for (const [i, s] of config.alerts.sinks.entries()) {
    for (const [key, ref] of [['bearerToken', s.bearerToken], ['hmac.secret', s.hmac?.secret]] as const) {
      if (!ref) continue;
      const at = `alerts.sinks[${i}].${key}`;
      if (ref.env !== undefined && !process.env[ref.env]) throw new ConfigError(`invalid ${source}: ${at}.env is ${JSON.stringify(ref.env)}: that environment variable is not set`);
      if (ref.file !== undefined) {
        try {
          fs.accessSync(ref.file, fs.constants.R_OK);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          throw new ConfigError(`invalid ${source}: ${at}.file is ${JSON.stringify(ref.file)}: ${code === 'ENOENT' ? 'no such file' : `not readable (${code})`}`);
        }
      }
    }
  }
}

function checkRegex(pattern: string | undefined, key: string, source: string): void {
  if (pattern === undefined) return;
  try {
    new RegExp(pattern);
  } catch (err) {
    throw new ConfigError(`invalid ${source}: ${key} is ${JSON.stringify(pattern)}: not a regular expression (${(err as Error).message})`);
  }
}

/** Read, parse and validate a YAML config file. */
export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ConfigError(`cannot read config ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const line = first.linePos?.[0];
    throw new ConfigError(`config ${file} is not valid YAML${line ? ` (line ${line.line}, column ${line.col})` : ''}: ${first.message.split('\n')[0]}`);
  }
  const config = validateConfig(doc.toJS(), `config ${file}`);
  // Read here too, so `apply` and every config check refuse a bad web config as `run` does.
  loadWebConfig(config, `config ${file}`);
  return config;
}

/**
 * metrics.webConfigFile read with the certificate and key it names (undefined without one).
 * Throws ConfigError naming the config, the web config file and its key.
 */
export function loadWebConfig(config: Config, source: string): LoadedWebConfig | undefined {
  const file = config.metrics.webConfigFile;
  if (file === undefined) return undefined;
  try {
    return readWebConfig(file);
  } catch (err) {
    throw new ConfigError(`invalid ${source}: metrics.webConfigFile ${file}: ${(err as Error).message}`);
  }
}
