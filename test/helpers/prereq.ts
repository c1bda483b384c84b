/**
 * A test that needs something from the machine (root, a Debian package, a kernel feature)
 * says so here. A missing prerequisite fails the test with the reason, with or without CI:
 * a skip would hide a gap, and `npm test` installs what it can first (test/setup/prepare-host.sh).
 */
export function need(ok: boolean, what: string): void {
  if (!ok) throw new Error(`missing prerequisite: ${what}`);
}

export const isRoot = (): boolean => typeof process.getuid === 'function' && process.getuid() === 0;
