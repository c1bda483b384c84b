import type { TestContext } from 'node:test';

/**
 * A test that needs something from the machine (root, a Debian package, a kernel feature)
 * says so here. Outside CI a missing prerequisite skips the test with the reason; in CI
 * (CI=true) it fails, because a skip there would hide a gap.
 * Returns true when the test should go on.
 */
export function prerequisite(t: TestContext, ok: boolean, what: string): boolean {
  if (ok) return true;
  if (process.env.CI === 'true') throw new Error(`missing prerequisite in CI: ${what}`);
  t.skip(`missing prerequisite: ${what}`);
  return false;
}

export const isRoot = (): boolean => typeof process.getuid === 'function' && process.getuid() === 0;
