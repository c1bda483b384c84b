import { GrpcCallError, GrpcConnection, grpc, grpcService } from './grpc-unix';

// A Kubernetes CRI RuntimeService client (runtime.v1) over a unix socket: containerd's CRI
// plugin and CRI-O both serve it. Used off the detection path, for names only.

export const CRI_PROTO = 'cri-runtime-v1.proto';

/** A RuntimeService connection to one CRI socket. */
export class CriConnection extends GrpcConnection {
  constructor(socketPath: string, timeoutMs: number) {
    super(socketPath, timeoutMs, () => grpcService(CRI_PROTO, 'runtime.v1.RuntimeService'), 'CRI');
  }
}

export { GrpcCallError as CriError };

export interface CriNames {
  name?: string;
  image?: string;
  podName?: string;
  podNamespace?: string;
}

export interface ContainerStatusMsg {
  id?: string;
  metadata?: { name?: string } | null;
  image?: { image?: string } | null;
  imageRef?: string;
  labels?: Record<string, string>;
}

export interface PodSandboxStatusMsg {
  id?: string;
  metadata?: { name?: string; namespace?: string; uid?: string } | null;
  labels?: Record<string, string>;
}

/** The labels the kubelet puts on every container it creates. */
export const LABEL_POD_NAME = 'io.kubernetes.pod.name';
export const LABEL_POD_NAMESPACE = 'io.kubernetes.pod.namespace';
export const LABEL_CONTAINER_NAME = 'io.kubernetes.container.name';
/** The kubelet's container name for a pod's sandbox (pause) container. */
export const SANDBOX_NAME = 'POD';

function defined(o: CriNames): CriNames {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => typeof v === 'string' && v !== '')) as CriNames;
}

/** Pure: names from a ContainerStatus. */
export function namesFromContainerStatus(s: ContainerStatusMsg | null | undefined): CriNames {
  const labels = s?.labels ?? {};
  return defined({
    name: s?.metadata?.name || labels[LABEL_CONTAINER_NAME],
    // containerd puts the image's first tag here; imageRef is the digest.
    image: s?.image?.image || s?.imageRef,
    podName: labels[LABEL_POD_NAME],
    podNamespace: labels[LABEL_POD_NAMESPACE],
  });
}

/** Pure: names from a PodSandboxStatus; the sandbox is named as the kubelet names it. */
export function namesFromSandboxStatus(s: PodSandboxStatusMsg | null | undefined): CriNames {
  const labels = s?.labels ?? {};
  return defined({
    name: SANDBOX_NAME,
    podName: s?.metadata?.name || labels[LABEL_POD_NAME],
    podNamespace: s?.metadata?.namespace || labels[LABEL_POD_NAMESPACE],
  });
}

const HEX64 = /^[0-9a-f]{64}$/;

/**
 * Names of the container `id` from one CRI socket: ContainerStatus, and where the runtime
 * does not know it as a container, PodSandboxStatus (a pod's pause container has a cgroup of
 * its own, but CRI lists it as the sandbox only). Both calls share one deadline. Rejects with
 * a CriError, code NOT_FOUND when the runtime knows neither.
 */
export async function criNames(conn: CriConnection, id: string, timeoutMs: number): Promise<CriNames> {
  if (!HEX64.test(id)) throw new Error('not a 64-hex container id; CRI not asked');
  const deadline = Date.now() + timeoutMs;
  try {
    const r = await conn.call<{ status?: ContainerStatusMsg | null }>('ContainerStatus', { containerId: id }, deadline);
    return namesFromContainerStatus(r.status);
  } catch (err) {
    if (!(err instanceof GrpcCallError) || err.code !== grpc.status.NOT_FOUND) throw err;
  }
  const r = await conn.call<{ status?: PodSandboxStatusMsg | null }>('PodSandboxStatus', { podSandboxId: id }, deadline);
  return namesFromSandboxStatus(r.status);
}
