import type { Recognised, Recogniser } from './types';

// Kubernetes names pod cgroups two ways, after the kubelet's cgroup driver:
//   cgroupfs: /kubepods/pod<uid>, /kubepods/burstable/pod<uid>, /kubepods/besteffort/pod<uid>
//   systemd:  kubepods-pod<uid>.slice, kubepods-burstable-pod<uid>.slice, ...
// systemd treats "-" in a unit name as a hierarchy separator, so the kubelet writes the pod
// UID's dashes as underscores there; we restore them so both drivers give the same UID.
// Static (mirror) pods have a 32-hex UID without dashes, so the UID is not required to be a
// UUID.
const CGROUPFS_POD = /^pod([0-9a-f][0-9a-f-]*)$/;
const CGROUPFS_QOS = new Set(['burstable', 'besteffort']);
const SYSTEMD_POD = /^kubepods(?:-burstable|-besteffort)?-pod([0-9a-f][0-9a-f_]*)\.slice$/;

const HEX64 = /^[0-9a-f]{64}$/;
/** containerd's identifier rule (pkg/identifiers): namespaces and container ids alike. */
const IDENTIFIER = /^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,74}[A-Za-z0-9])?$/;
const CRI_CONTAINERD_SCOPE = /^cri-containerd-([0-9a-f]{64})\.scope$/;
/** nerdctl with the systemd cgroup manager: runc's "system.slice:nerdctl:<id>". */
const NERDCTL_SCOPE = /^nerdctl-([0-9a-f]{64})\.scope$/;

export interface PodCgroup {
  podUid: string;
  podPath: string;
}

export function components(path: string): string[] {
  return path.split('/').filter((c) => c !== '');
}

function joinPath(parts: string[]): string {
  return '/' + parts.join('/');
}

/** Is `parts` (path components) a Kubernetes pod cgroup? Matches on the trailing components only. */
function podFromComponents(parts: string[]): PodCgroup | null {
  const n = parts.length;
  if (n === 0) return null;
  const last = parts[n - 1];
  const sd = SYSTEMD_POD.exec(last);
  if (sd) return { podUid: sd[1].replace(/_/g, '-'), podPath: joinPath(parts) };
  const fs = CGROUPFS_POD.exec(last);
  if (!fs || n < 2) return null;
  // Require the kubepods parent (directly, or through a QoS class) so that an unrelated
  // cgroup that happens to be called "pod..." is not taken for a pod.
  const parent = parts[n - 2];
  const underKubepods = parent === 'kubepods' || (CGROUPFS_QOS.has(parent) && n >= 3 && parts[n - 3] === 'kubepods');
  return underKubepods ? { podUid: fs[1], podPath: joinPath(parts) } : null;
}

/** A Kubernetes pod's own cgroup (not a container's). Pure. */
export function isPodCgroup(path: string): PodCgroup | null {
  return podFromComponents(components(path));
}

/** The pod that directly holds the cgroup at `path`, if any. */
export function parentPod(path: string): PodCgroup | null {
  const parts = components(path);
  return parts.length < 2 ? null : podFromComponents(parts.slice(0, -1));
}

export function withPod(runtime: string, id: string, path: string): Recognised {
  const pod = parentPod(path);
  return pod ? { runtime, id, podUid: pod.podUid, podPath: pod.podPath } : { runtime, id };
}

/**
 * containerd, under Kubernetes (CRI) and alone.
 * - cgroupfs driver: the container cgroup is the bare 64-hex id inside the pod cgroup. A bare
 *   id outside a pod is not claimed: Docker's /docker/<id> is the docker recogniser's.
 * - systemd driver: cri-containerd-<id>.scope, inside a pod slice or not.
 * - nerdctl with the systemd driver: nerdctl-<id>.scope (in system.slice, or user.slice
 *   rootless).
 * - containerd alone (`ctr run`, nerdctl with cgroupfs): `/<namespace>/<id>` at the top of
 *   the hierarchy, the id any name the user gave. Only for the namespaces configured
 *   (`discovery.containerdNamespaces`): a two-level path is otherwise anybody's.
 * The pod cgroup itself is not a container. The pause (sandbox) container is: it has its
 * own cgroup with its own tasks and limits, so it is recognised like any other container.
 * Docker-shim Kubernetes nodes also give bare ids under pods in cgroupfs; the path cannot
 * tell them apart, so they are reported as containerd.
 */
export function containerdRecogniser(namespaces: readonly string[] = DEFAULT_CONTAINERD_NAMESPACES): Recogniser {
  const ns = new Set(namespaces);
  return {
    runtime: 'containerd',
    recognise(path: string): Recognised | null {
      const parts = components(path);
      const last = parts[parts.length - 1];
      if (last === undefined) return null;
      const scope = CRI_CONTAINERD_SCOPE.exec(last);
      if (scope) return withPod('containerd', scope[1], path);
      const nerdctl = NERDCTL_SCOPE.exec(last);
      if (nerdctl) return { runtime: 'containerd', id: nerdctl[1]! };
      if (HEX64.test(last)) {
        const pod = parentPod(path);
        if (pod) return { runtime: 'containerd', id: last, podUid: pod.podUid, podPath: pod.podPath };
      }
      if (parts.length === 2 && ns.has(parts[0]!) && IDENTIFIER.test(last)) return { runtime: 'containerd', id: last, namespace: parts[0] };
      return null;
    },
  };
}

/** containerd's own default namespace (`ctr`, nerdctl); Kubernetes' k8s.io puts its cgroups under kubepods instead. */
export const DEFAULT_CONTAINERD_NAMESPACES = ['default'];

export const containerd: Recogniser = containerdRecogniser();
