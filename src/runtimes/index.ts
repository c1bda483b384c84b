import type { ExtraPattern } from '../config/schema';
import type { Recognised, Recogniser } from './types';
import { containerd, containerdRecogniser } from './containerd';
import { crio } from './crio';
import { docker, dockerRecogniser } from './docker';
import { lxc } from './lxc';
import { podman } from './podman';
import { patternRecogniser } from './pattern';

export type { Recognised, Recogniser, RuntimeName } from './types';
export { isPodCgroup, type PodCgroup } from './containerd';

const BUILTIN = new Map<string, Recogniser>([docker, containerd, crio, podman, lxc].map((r) => [r.runtime, r]));

export const builtinRuntimes = [...BUILTIN.keys()];

/**
 * Recognisers in the order they are tried: config patterns first (an operator's pattern
 * overrides a built-in guess), then the named built-ins in the order given.
 */
export function buildRecognisers(names: string[], extra: ExtraPattern[], opts: { containerdNamespaces?: string[]; dockerCgroupParents?: string[] } = {}): Recogniser[] {
  const out: Recogniser[] = extra.map(patternRecogniser);
  for (const name of names) {
    const r =
      name === 'containerd' && opts.containerdNamespaces
        ? containerdRecogniser(opts.containerdNamespaces)
        : name === 'docker' && opts.dockerCgroupParents?.length
          ? dockerRecogniser(opts.dockerCgroupParents)
          : BUILTIN.get(name);
    if (!r) throw new Error(`unknown runtime "${name}": expected one of ${builtinRuntimes.join(', ')}`);
    out.push(r);
  }
  return out;
}

/** The first recogniser that claims the path, or null. `path` starts with "/". */
export function recognise(recognisers: Recogniser[], path: string): Recognised | null {
  for (const r of recognisers) {
    const hit = r.recognise(path);
    if (hit) return hit;
  }
  return null;
}
