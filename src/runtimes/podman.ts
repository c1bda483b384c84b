import type { Recognised, Recogniser } from './types';
import { components } from './containerd';

// libpod-<id> under /libpod_parent (cgroupfs manager), libpod-<id>.scope under
// machine.slice or a user's slice (systemd manager, rootful and rootless). conmon gets
// libpod-conmon-<id>.scope, which the hex-only id excludes. On cgroup v2 podman may move
// the payload into a "container" sub-cgroup of libpod-<id>; that sub-cgroup is not matched.
const LIBPOD = /^libpod-([0-9a-f]{64})(?:\.scope)?$/;

export const podman: Recogniser = {
  runtime: 'podman',
  recognise(path: string): Recognised | null {
    const parts = components(path);
    const last = parts[parts.length - 1];
    if (last === undefined) return null;
    const m = LIBPOD.exec(last);
    return m ? { runtime: 'podman', id: m[1] } : null;
  },
};
