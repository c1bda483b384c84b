import type { Recognised, Recogniser } from './types';
import { components, withPod } from './containerd';

const HEX64 = /^[0-9a-f]{64}$/;
const DOCKER_SCOPE = /^docker-([0-9a-f]{64})\.scope$/;

/**
 * Docker (moby).
 * - cgroupfs driver: /docker/<id>. Matched on the last two components, so a prefix
 *   (--cgroup-parent, nested daemons, test trees) is allowed.
 * - systemd driver: docker-<id>.scope, usually in system.slice; in a Kubernetes pod slice
 *   (docker-shim) it carries the pod's UID and path.
 * Only the container's own directory matches: /docker/<id>/init.scope is a sub-cgroup.
 */
export const docker: Recogniser = {
  runtime: 'docker',
  recognise(path: string): Recognised | null {
    const parts = components(path);
    const n = parts.length;
    if (n === 0) return null;
    const last = parts[n - 1];
    const scope = DOCKER_SCOPE.exec(last);
    if (scope) return withPod('docker', scope[1], path);
    if (n >= 2 && parts[n - 2] === 'docker' && HEX64.test(last)) return { runtime: 'docker', id: last };
    return null;
  },
};
