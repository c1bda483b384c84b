import type { Recognised, Recogniser } from './types';
import { components, withPod } from './containerd';

const HEX64 = /^[0-9a-f]{64}$/;
const DOCKER_SCOPE = /^docker-([0-9a-f]{64})\.scope$/;

/**
 * Docker (moby).
 * - cgroupfs driver: /docker/<id>. Matched on the last two components, so a prefix
 *   (dockerd --cgroup-parent /x/docker, nested daemons, test trees) is allowed. A
 *   `docker run --cgroup-parent /tenant-a` container is /tenant-a/<id>: a bare id the path
 *   cannot tell from anybody's, so only under the parents configured
 *   (`discovery.dockerCgroupParents`).
 * - systemd driver: docker-<id>.scope, usually in system.slice; in a Kubernetes pod slice
 *   (docker-shim) it carries the pod's UID and path.
 * Only the container's own directory matches: /docker/<id>/init.scope is a sub-cgroup.
 */
export function dockerRecogniser(cgroupParents: readonly string[] = []): Recogniser {
  const parents = new Set(cgroupParents.map((p) => '/' + components(p).join('/')));
  return {
    runtime: 'docker',
    recognise(path: string): Recognised | null {
      const parts = components(path);
      const n = parts.length;
      if (n === 0) return null;
      const last = parts[n - 1]!;
      const scope = DOCKER_SCOPE.exec(last);
      if (scope) return withPod('docker', scope[1]!, path);
      if (!HEX64.test(last)) return null;
      if (n >= 2 && parts[n - 2] === 'docker') return { runtime: 'docker', id: last };
      if (parents.size > 0 && parents.has('/' + parts.slice(0, -1).join('/'))) return { runtime: 'docker', id: last };
      return null;
    },
  };
}

export const docker: Recogniser = dockerRecogniser();
