import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

// A Kubernetes CRI RuntimeService client (runtime.v1) over a unix socket: containerd's CRI
// plugin and CRI-O both serve it. Used off the detection path, for names only.

export const CRI_PROTO = 'cri-runtime-v1.proto';

/**
 * proto/cri-runtime-v1.proto of the installed package, found from this module's own place
 * (dist/src/runtimes/ when built, src/runtimes/ from source), never from the cwd.
 */
export function criProtoPath(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const p = path.join(dir, 'proto', CRI_PROTO);
    if (fs.existsSync(p)) return p;
    dir = path.dirname(dir);
  }
  throw new Error(`${CRI_PROTO} not found in a proto/ directory above ${__dirname}`);
}

let serviceCtor: grpc.ServiceClientConstructor | undefined;

/** Loaded at the first lookup, not at start: a host without Kubernetes never parses the proto. */
function runtimeService(): grpc.ServiceClientConstructor {
  if (!serviceCtor) {
    const def = protoLoader.loadSync(criProtoPath(), { longs: String, enums: String, defaults: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { runtime: { v1: { RuntimeService: grpc.ServiceClientConstructor } } };
    serviceCtor = pkg.runtime.v1.RuntimeService;
  }
  return serviceCtor;
}

/** A failed CRI call: the method, the socket and the gRPC status. */
export class CriError extends Error {
  constructor(
    readonly method: string,
    readonly socketPath: string,
    readonly code: grpc.status,
    details: string,
  ) {
    super(`CRI ${method} on ${socketPath}: ${grpc.status[code] ?? code}: ${details}`);
  }
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type Unary = (req: object, opts: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall;

/** One channel to one CRI socket, opened at the first call; every call has a deadline. */
export class CriConnection {
  private client?: grpc.Client;

  constructor(
    readonly socketPath: string,
    private readonly timeoutMs: number,
  ) {}

  /** A unary RuntimeService call, by its proto name (camelCase fields). Rejects with CriError. */
  call<Res>(method: string, req: object, deadline: number = Date.now() + this.timeoutMs): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      let fn: Unary | undefined;
      try {
        this.client ??= new (runtimeService())(`unix://${this.socketPath}`, grpc.credentials.createInsecure());
        fn = (this.client as unknown as Record<string, Unary | undefined>)[method];
      } catch (err) {
        return reject(err as Error);
      }
      if (typeof fn !== 'function') return reject(new Error(`no CRI method ${method} in ${CRI_PROTO}`));
      fn.call(this.client, req, { deadline }, (err, res) => (err ? reject(new CriError(method, this.socketPath, err.code, err.details || err.message)) : resolve(res as Res)));
    });
  }

  close(): void {
    this.client?.close();
    this.client = undefined;
  }
}

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
    if (!(err instanceof CriError) || err.code !== grpc.status.NOT_FOUND) throw err;
  }
  const r = await conn.call<{ status?: PodSandboxStatusMsg | null }>('PodSandboxStatus', { podSandboxId: id }, deadline);
  return namesFromSandboxStatus(r.status);
}
