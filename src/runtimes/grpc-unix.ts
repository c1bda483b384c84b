import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

// gRPC clients over a runtime's unix socket (containerd's own API, its CRI plugin, CRI-O), off
// the detection path: names only. The protos are our own subsets, shipped in proto/.

/** proto/<file> of the installed package, found from this module's own place, never the cwd. */
export function protoPath(file: string): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const p = path.join(dir, 'proto', file);
    if (fs.existsSync(p)) return p;
    dir = path.dirname(dir);
  }
  throw new Error(`${file} not found in a proto/ directory above ${__dirname}`);
}

const services = new Map<string, grpc.ServiceClientConstructor>();

/**
 * `service` ("runtime.v1.RuntimeService") of proto/<file>, loaded at the first call: a host
 * without that runtime never parses it.
 */
export function grpcService(file: string, service: string): grpc.ServiceClientConstructor {
  const key = `${file}#${service}`;
  let ctor = services.get(key);
  if (!ctor) {
    const def = protoLoader.loadSync(protoPath(file), { longs: String, enums: String, defaults: true });
    let node: unknown = grpc.loadPackageDefinition(def);
    for (const part of service.split('.')) node = (node as Record<string, unknown> | undefined)?.[part];
    if (typeof node !== 'function') throw new Error(`no service ${service} in ${file}`);
    ctor = node as grpc.ServiceClientConstructor;
    services.set(key, ctor);
  }
  return ctor;
}

/** A failed call: the method, the socket and the gRPC status. */
export class GrpcCallError extends Error {
  constructor(
    readonly method: string,
    readonly socketPath: string,
    readonly code: grpc.status,
    details: string,
    prefix = 'gRPC',
  ) {
    super(`${prefix} ${method} on ${socketPath}: ${grpc.status[code] ?? code}: ${details}`);
  }
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type Unary = (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => grpc.ClientUnaryCall;

/** One channel to one socket for one service, opened at the first call; every call has a deadline. */
export class GrpcConnection {
  private client?: grpc.Client;

  constructor(
    readonly socketPath: string,
    private readonly timeoutMs: number,
    private readonly service: () => grpc.ServiceClientConstructor,
    /** Names the API in errors ("CRI", "containerd"). */
    private readonly api = 'gRPC',
  ) {}

  /** A unary call, by its proto name (camelCase fields). Rejects with GrpcCallError. */
  call<Res>(method: string, req: object, deadline: number = Date.now() + this.timeoutMs, headers: Record<string, string> = {}): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      let fn: Unary | undefined;
      try {
        this.client ??= new (this.service())(`unix://${this.socketPath}`, grpc.credentials.createInsecure());
        fn = (this.client as unknown as Record<string, Unary | undefined>)[method];
      } catch (err) {
        return reject(err as Error);
      }
      if (typeof fn !== 'function') return reject(new Error(`no ${this.api} method ${method}`));
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(headers)) md.set(k, v);
      fn.call(this.client, req, md, { deadline }, (err, res) =>
        err ? reject(new GrpcCallError(method, this.socketPath, err.code, err.details || err.message, this.api)) : resolve(res as Res),
      );
    });
  }

  close(): void {
    this.client?.close();
    this.client = undefined;
  }
}

export { grpc };
