import { GrpcConnection, grpcService } from './grpc-unix';

// containerd's own API, for containers made without Kubernetes (`ctr run`, nerdctl): their
// image, and nerdctl's name label. Off the detection path, for names only.

export const CONTAINERD_PROTO = 'containerd-containers-v1.proto';
/** nerdctl keeps the name the user gave (`--name`) in this label; the id is then a hash. */
export const LABEL_NERDCTL_NAME = 'nerdctl/name';

export class ContainerdConnection extends GrpcConnection {
  constructor(socketPath: string, timeoutMs: number) {
    super(socketPath, timeoutMs, () => grpcService(CONTAINERD_PROTO, 'containerd.services.containers.v1.Containers'), 'containerd');
  }
}

export interface ContainerMsg {
  id?: string;
  image?: string;
  labels?: Record<string, string>;
}

/** Pure: names from a containerd Container record. */
export function namesFromContainerd(c: ContainerMsg | null | undefined, id: string): { name: string; image?: string } {
  const name = c?.labels?.[LABEL_NERDCTL_NAME] || id;
  return c?.image ? { name, image: c.image } : { name };
}

/** containerd's identifier rule (pkg/identifiers), for the namespace header and the id. */
const IDENTIFIER = /^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,74}[A-Za-z0-9])?$/;

export async function containerdNames(conn: ContainerdConnection, namespace: string, id: string, timeoutMs: number): Promise<{ name: string; image?: string }> {
  if (!IDENTIFIER.test(namespace) || !IDENTIFIER.test(id)) throw new Error('not a containerd namespace and id; containerd not asked');
  const r = await conn.call<{ container?: ContainerMsg | null }>('Get', { id }, Date.now() + timeoutMs, { 'containerd-namespace': namespace });
  return namesFromContainerd(r.container, id);
}
