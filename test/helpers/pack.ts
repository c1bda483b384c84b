import { spawnSync } from 'node:child_process';
import path from 'node:path';

/**
 * `npm pack` as a release makes it, without rebuilding dist/ under the other tests: the
 * bundled dependencies pruned as prepack prunes them (scripts/prune-bundle.js), then restored,
 * also on failure. Returns the tarball's path.
 */
export function packPruned(root: string, dest: string): string {
  const node = (args: string[]): void => {
    const r = spawnSync(process.execPath, ['scripts/prune-bundle.js', ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });
    if (r.status !== 0) throw new Error(`prune-bundle ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  };
  node(['stash']);
  try {
    const pack = spawnSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dest], { cwd: root, encoding: 'utf8', timeout: 120_000 });
    if (pack.status !== 0) throw new Error(`npm pack: exit ${pack.status}: ${pack.stderr}`);
    return path.join(dest, (JSON.parse(pack.stdout) as { filename: string }[])[0]!.filename);
  } finally {
    node(['restore']);
  }
}
