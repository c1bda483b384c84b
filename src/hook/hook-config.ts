import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/schema';
import { safeFileName } from './records';

// The hook runs at every container start, so what it loads is its cost: zod and yaml alone
// add ~30 ms to a Node start here (measured: node -e 0 vs require('zod'), require('yaml')). The
// validated config is therefore cached, keyed by the file's identity (device, inode, size,
// mtime and ctime in ns) and by this build's schema file, in a root-only directory on /run
// (a tmpfs: gone at reboot). A miss loads and validates the file as the daemon does.

export const DEFAULT_CONFIG = '/etc/cgwatchdog/config.yaml';
export const HOOK_CACHE_DIR = '/run/cgwatchdog/hook-config';

/** What a hook needs: never the sinks (a Slack URL carries its token), so the cache holds no secret. */
export type HookConfig = Pick<Config, 'mode' | 'paths' | 'policy' | 'discovery' | 'hooks'>;

export interface LoadedHookConfig {
  config: HookConfig;
  file: string | null;
  cached: boolean;
}

/** The part of a loaded config a hook sees. */
export const hookConfigOf = (c: Config): HookConfig => ({ mode: c.mode, paths: c.paths, policy: c.policy, discovery: c.discovery, hooks: c.hooks });

/** A file's identity as the cache keys it; a changed file has another. */
export function configIdentity(file: string): string {
  const s = fs.statSync(file, { bigint: true });
  return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
}

function buildId(): string {
  try {
    return configIdentity(path.join(__dirname, '..', 'config', 'schema.js'));
  } catch {
    return 'unknown-build';
  }
}

/** The config file a hook reads: the one given, else the daemon's default if present, else none (built-in defaults). */
export function configFileFor(given: string | undefined): string | null {
  if (given) return path.resolve(given);
  return fs.existsSync(DEFAULT_CONFIG) ? DEFAULT_CONFIG : null;
}

export function hookCacheFile(file: string | null, dir = HOOK_CACHE_DIR): string {
  return path.join(dir, `${safeFileName(file ?? '(built-in defaults)')}.json`);
}

/** Only a directory of our own that nobody else can write is trusted: we run as root. */
function trusted(dir: string): boolean {
  try {
    const s = fs.statSync(dir);
    return s.isDirectory() && s.uid === process.getuid?.() && (s.mode & 0o022) === 0;
  } catch {
    return false;
  }
}

function readCache(cacheFile: string): { key: string; config: HookConfig } | null {
  if (!trusted(path.dirname(cacheFile))) return null;
  try {
    const c = JSON.parse(fs.readFileSync(cacheFile, 'utf8')) as { key?: unknown; config?: HookConfig };
    return typeof c.key === 'string' && c.config ? { key: c.key, config: c.config } : null;
  } catch {
    return null;
  }
}

function writeCache(cacheFile: string, key: string, config: HookConfig): void {
  const dir = path.dirname(cacheFile);
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (!trusted(dir)) return;
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ key, config }), { mode: 0o600 });
    fs.renameSync(tmp, cacheFile);
  } catch {
    // A read-only /run costs speed, not correctness.
  }
}

/** The validated config, from the cache when the file is unchanged. Throws ConfigError as loadConfig does. */
export function loadHookConfig(given: string | undefined, cacheDir = HOOK_CACHE_DIR): LoadedHookConfig {
  const file = configFileFor(given);
  const cacheFile = hookCacheFile(file, cacheDir);
  let key: string;
  try {
    key = `${buildId()}|${file ? configIdentity(file) : 'defaults'}`;
  } catch {
    key = ''; // no such file: loadConfig says so below
  }
  const hit = key ? readCache(cacheFile) : null;
  if (hit && hit.key === key) return { config: hit.config, file, cached: true };
  const { loadConfig, validateConfig } = require('../config/load') as typeof import('../config/load');
  const config = hookConfigOf(file ? loadConfig(file) : validateConfig({}, 'built-in defaults'));
  if (key) writeCache(cacheFile, key, config);
  return { config, file, cached: false };
}

const DEFAULT_STATE_DIR = '/var/lib/cgwatchdog';

/**
 * What a hook does when the config itself cannot be used: the file's own hooks.failClosed and
 * paths.stateDir (where the failure is recorded, for the daemon to count) when it is still
 * YAML (a value of the wrong type elsewhere), else the last valid config's (the cache), else
 * fail open into the default state directory.
 */
export function brokenConfigFallback(given: string | undefined, cacheDir = HOOK_CACHE_DIR): { failClosed: boolean; stateDir: string } {
  const file = configFileFor(given);
  const last = readCache(hookCacheFile(file, cacheDir))?.config;
  type Raw = { hooks?: { failClosed?: unknown }; paths?: { stateDir?: unknown } };
  let raw: Raw | null = null;
  if (file) {
    try {
      const { parse } = require('yaml') as typeof import('yaml');
      const doc = parse(fs.readFileSync(file, 'utf8')) as unknown;
      if (doc && typeof doc === 'object') raw = doc as Raw;
    } catch {
      /* not YAML, or unreadable: the last valid config decides */
    }
  }
  const rawDir = raw?.paths?.stateDir;
  return {
    failClosed: raw ? raw.hooks?.failClosed === true : last?.hooks?.failClosed === true,
    stateDir: typeof rawDir === 'string' && rawDir.startsWith('/') ? rawDir : (last?.paths.stateDir ?? DEFAULT_STATE_DIR),
  };
}
