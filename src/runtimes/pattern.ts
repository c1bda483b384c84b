import type { ExtraPattern } from '../config/schema';
import type { Recognised, Recogniser } from './types';
import { components } from './containerd';

/**
 * A recogniser from config: `pattern` is tested against the last path component only (so a
 * container's sub-cgroups do not match unless the pattern says so). The named group "id" is
 * the container id; without it the whole component is. Anchor the pattern (^...$) to avoid
 * partial matches.
 */
export function patternRecogniser(extra: ExtraPattern): Recogniser {
  let re: RegExp;
  try {
    re = new RegExp(extra.pattern);
  } catch (err) {
    throw new Error(`runtime "${extra.runtime}": invalid pattern ${JSON.stringify(extra.pattern)}: ${(err as Error).message}`);
  }
  return {
    runtime: extra.runtime,
    recognise(path: string): Recognised | null {
      const parts = components(path);
      const last = parts[parts.length - 1];
      if (last === undefined) return null;
      const m = re.exec(last);
      if (!m) return null;
      const id = m.groups?.id ?? last;
      return id === '' ? null : { runtime: extra.runtime, id };
    },
  };
}
