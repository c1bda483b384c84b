import fs from 'node:fs';
import path from 'node:path';

export interface BuildInfo {
  version: string;
  node: string;
  /** The git commit dist/ was built from (dist/COMMIT, written by `npm run build`), when known. */
  commit?: string;
}

let cached: BuildInfo | undefined;

/** From dist/src/build-info.js: package.json two levels up, dist/COMMIT one. */
export function buildInfo(): BuildInfo {
  if (cached) return cached;
  const root = path.join(__dirname, '..', '..');
  let version = 'unknown';
  try {
    version = (JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    /* an unusual install: the gauge says "unknown" rather than the daemon failing */
  }
  let commit: string | undefined;
  try {
    const c = fs.readFileSync(path.join(__dirname, '..', 'COMMIT'), 'utf8').trim();
    if (/^[0-9a-f]{7,64}$/.test(c)) commit = c;
  } catch {
    /* built outside a git checkout, or copied without it */
  }
  cached = { version, node: process.version, commit };
  return cached;
}
