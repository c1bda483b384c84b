import type { Recognised, Recogniser } from './types';
import { components, withPod } from './containerd';

// crio-<id>.scope (systemd driver) or crio-<id> (cgroupfs driver). conmon runs in
// crio-conmon-<id>: it is CRI-O's monitor process, not the container, and the id pattern
// (64 hex right after "crio-") does not let it through.
const CRIO = /^crio-([0-9a-f]{64})(?:\.scope)?$/;

/** CRI-O, normally under Kubernetes; the pod cgroup is reported when there is one. */
export const crio: Recogniser = {
  runtime: 'crio',
  recognise(path: string): Recognised | null {
    const parts = components(path);
    const last = parts[parts.length - 1];
    if (last === undefined) return null;
    const m = CRIO.exec(last);
    return m ? withPod('crio', m[1], path) : null;
  },
};
