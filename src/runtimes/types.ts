// One recogniser per container runtime: given a cgroup path, is it one of ours?

export type RuntimeName = 'docker' | 'containerd' | 'crio' | 'podman' | 'lxc' | string;

export interface Recognised {
  runtime: RuntimeName;
  /** The runtime's container id (64 hex for docker/containerd/crio/podman; the name for LXC). */
  id: string;
  /** Kubernetes pod UID (dashes restored), where the path has one. */
  podUid?: string;
  /** The pod's cgroup path, for pod-level limits (Kubernetes), where there is one. */
  podPath?: string;
  /** containerd alone: the namespace (`/<namespace>/<id>`); the id is then the name the user gave. */
  namespace?: string;
}

export interface Recogniser {
  readonly runtime: RuntimeName;
  /** `path` is relative to the hierarchy root and starts with "/". Pure: no I/O. */
  recognise(path: string): Recognised | null;
}
