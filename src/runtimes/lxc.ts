import type { Recognised, Recogniser } from './types';
import { components } from './containerd';

// LXC 4.0 and later (and LXD/Incus): /lxc.payload.<name>. LXC 3.x: /lxc.payload/<name>.
// LXC 2.x and early LXD: /lxc/<name>. The monitor (lxc.monitor.<name>, lxc.monitor/<name>)
// is LXC's own process, not the container. The id is the container name.
const PAYLOAD_PREFIX = 'lxc.payload.';

export const lxc: Recogniser = {
  runtime: 'lxc',
  recognise(path: string): Recognised | null {
    const parts = components(path);
    const n = parts.length;
    if (n === 0) return null;
    const last = parts[n - 1];
    if (last.startsWith(PAYLOAD_PREFIX) && last.length > PAYLOAD_PREFIX.length) {
      return { runtime: 'lxc', id: last.slice(PAYLOAD_PREFIX.length) };
    }
    if (n >= 2 && (parts[n - 2] === 'lxc.payload' || parts[n - 2] === 'lxc')) return { runtime: 'lxc', id: last };
    return null;
  },
};
