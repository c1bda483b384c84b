import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { Container } from '../discovery/container';
import type { Logger } from '../log';
import type { CriConnection } from '../runtimes/cri-client';
import type { ContainerdConnection } from '../runtimes/containerd-client';
import { ContainersStorage } from '../runtimes/containers-storage';

// Human names for containers, looked up off the detection path: detection never awaits a
// lookup; alerts carry whatever is known when they are built. Each source is asked with a
// timeout; any failure leaves the id as the name (logged at debug: a runtime that is not
// installed is normal).

export interface NameInfo {
  name?: string;
  image?: string;
  podName?: string;
  podNamespace?: string;
}

export interface NameResolverOptions {
  dockerSocket: string;
  podmanSocket: string;
  /** Empty: never run podman inspect. */
  podmanBinary: string;
  /** containers/storage's graph root, read for podman's names before the socket or inspect; empty: never. */
  containersStorage?: string;
  kubernetesPodLogs: string;
  /**
   * CRI sockets (containerd's CRI plugin, CRI-O), asked in this order for Kubernetes
   * containers; those that do not exist are passed over. Empty or absent: CRI is never asked.
   */
  criSockets?: string[];
  /** containerd's own socket, for `ctr`/nerdctl containers (`/<namespace>/<id>`); empty: never asked. */
  containerdSocket?: string;
  timeoutMs: number;
  log: Logger;
  /** A failed lookup is retried after this long (ms). Default 60 s. */
  failureTtlMs?: number;
  now?: () => number;
}

const HEX_ID = /^[0-9a-f]{12,64}$/;
const POD_UID = /^[0-9a-fA-F-]{8,64}$/;

/** Runtime ids that may go into a URL path or a program's arguments. */
export function isHexId(id: string): boolean {
  return HEX_ID.test(id);
}

/** Docker and Podman (compat and libpod) inspect bodies share these fields. */
interface InspectBody {
  Name?: string;
  ImageName?: string;
  Config?: { Image?: string; Labels?: Record<string, string> | null };
}

function fromInspect(b: InspectBody): NameInfo {
  const labels = b.Config?.Labels ?? {};
  const info: NameInfo = {};
  const name = b.Name?.replace(/^\//, '');
  if (name) info.name = name;
  const image = b.Config?.Image || b.ImageName;
  if (image) info.image = image;
  if (labels['io.kubernetes.pod.name']) info.podName = labels['io.kubernetes.pod.name'];
  if (labels['io.kubernetes.pod.namespace']) info.podNamespace = labels['io.kubernetes.pod.namespace'];
  return info;
}

/** GET over a unix socket; resolves with the parsed JSON of a 200, rejects otherwise. */
export function getJsonOverSocket(socketPath: string, urlPath: string, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: urlPath, method: 'GET', headers: { Host: 'localhost' }, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > 4 << 20) req.destroy(new Error('response too large'));
        else chunks.push(c);
      });
      res.on('error', reject);
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode ?? '?'} from ${socketPath}${urlPath}`));
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch {
          reject(new Error(`invalid JSON from ${socketPath}${urlPath}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms on ${socketPath}`)));
    req.on('error', reject);
    req.end();
  });
}

/** Pod namespace and name from the kubelet's /var/log/pods/<namespace>_<name>_<uid> directory names. */
export async function podFromLogDir(dir: string, podUid: string): Promise<{ podName: string; podNamespace: string } | undefined> {
  const want = podUid.toLowerCase();
  // Namespaces and pod names are DNS labels/subdomains: they never contain "_".
  for (const entry of await fsp.readdir(dir)) {
    const parts = entry.split('_');
    if (parts.length !== 3) continue;
    const [ns, name, uid] = parts as [string, string, string];
    if (uid.toLowerCase() === want || uid.toLowerCase().replace(/-/g, '') === want.replace(/-/g, '')) return { podName: name, podNamespace: ns };
  }
  return undefined;
}

// gRPC (@grpc/grpc-js and proto-loader) is loaded at the first CRI or containerd lookup, not at
// start: requiring it took ~145 ms of every daemon start here, on hosts that may never ask.
const criClient = (): typeof import('../runtimes/cri-client') => require('../runtimes/cri-client') as typeof import('../runtimes/cri-client');
const containerdClient = (): typeof import('../runtimes/containerd-client') => require('../runtimes/containerd-client') as typeof import('../runtimes/containerd-client');

interface CacheEntry {
  promise: Promise<NameInfo>;
  /** Set once settled with nothing found: when to ask again. */
  retryAt?: number;
}

/**
 * Lookups in flight at once. A host with a thousand containers starting up would otherwise
 * open a thousand sockets (or fork a thousand `podman inspect`s) in the same instant and run
 * out of file descriptors.
 */
const MAX_IN_FLIGHT = 4;

export class NameResolver {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly now: () => number;
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly criConnections = new Map<string, CriConnection>();
  private containerdConnection?: ContainerdConnection;
  private readonly storage?: ContainersStorage;

  constructor(private readonly opts: NameResolverOptions) {
    this.now = opts.now ?? Date.now;
    if (opts.containersStorage) this.storage = new ContainersStorage(opts.containersStorage);
  }

  /**
   * Never rejects: what could not be found is simply absent. Cached per container id; `again`
   * asks once more even though the last answer was empty (a container just made may not be
   * inspectable yet).
   */
  lookup(c: Pick<Container, 'id' | 'runtime' | 'podUid' | 'namespace'>, again = false): Promise<NameInfo> {
    const hit = this.cache.get(c.id);
    if (hit && (hit.retryAt === undefined || (!again && this.now() < hit.retryAt))) return hit.promise;
    const entry: CacheEntry = { promise: Promise.resolve({}) };
    entry.promise = this.limited(() => this.resolve(c)).then((info) => {
      if (Object.keys(info).length === 0) entry.retryAt = this.now() + (this.opts.failureTtlMs ?? 60_000);
      return info;
    });
    this.cache.set(c.id, entry);
    return entry.promise;
  }

  private async limited<T>(f: () => Promise<T>): Promise<T> {
    if (this.inFlight >= MAX_IN_FLIGHT) await new Promise<void>((r) => this.waiting.push(r));
    this.inFlight++;
    try {
      return await f();
    } finally {
      this.inFlight--;
      this.waiting.shift()?.();
    }
  }

  /**
   * Whether a source could name the container now: a socket that exists, podman to run, a
   * name that is the id. Cheap (stat calls); false means a lookup would find nothing.
   */
  canAsk(c: Pick<Container, 'runtime' | 'podUid' | 'namespace'> & { id?: string }): boolean {
    const o = this.opts;
    const has = (p: string | undefined): boolean => !!p && fs.existsSync(p);
    const cri = (): boolean => (o.criSockets ?? []).some(has);
    const pods = (): boolean => !!c.podUid && has(o.kubernetesPodLogs);
    switch (c.runtime) {
      case 'docker':
        return has(o.dockerSocket) || pods();
      case 'podman':
        return has(o.podmanSocket) || o.podmanBinary !== '' || (c.id !== undefined && this.storage?.lookup(c.id) !== undefined);
      case 'containerd':
        return c.podUid ? cri() || pods() : !!c.namespace || has(o.containerdSocket);
      case 'crio':
        return cri() || pods();
      case 'lxc':
        return true;
      default:
        return pods();
    }
  }

  /** The container is gone. */
  forget(id: string): void {
    this.cache.delete(id);
  }

  get cached(): number {
    return this.cache.size;
  }

  /** Closes the CRI channels (lookups still under way fail, quietly). */
  close(): void {
    for (const c of this.criConnections.values()) c.close();
    this.criConnections.clear();
    this.containerdConnection?.close();
    this.containerdConnection = undefined;
  }

  private async resolve(c: Pick<Container, 'id' | 'runtime' | 'podUid' | 'namespace'>): Promise<NameInfo> {
    const info: NameInfo = {};
    const attempt = async (source: string, fn: () => Promise<NameInfo | undefined>): Promise<void> => {
      try {
        const got = await fn();
        if (got) for (const [k, v] of Object.entries(got)) if (v && !(info as Record<string, string>)[k]) (info as Record<string, string>)[k] = v;
      } catch (err) {
        this.opts.log.debug({ id: c.id, runtime: c.runtime, source, err: (err as Error).message }, 'name lookup failed; the id stays the name');
      }
    };
    if (c.runtime === 'docker') await attempt('docker', () => this.docker(c.id));
    else if (c.runtime === 'podman') await attempt('podman', () => this.podman(c.id));
    else if (c.runtime === 'containerd' && !c.podUid) {
      // ctr and nerdctl: /<namespace>/<id>, or nerdctl's systemd scope (its default namespace).
      if (this.opts.containerdSocket) await attempt('containerd', () => this.containerd(c.namespace ?? 'default', c.id));
      if (c.namespace) info.name ??= c.id;
    } else if (c.runtime === 'lxc') info.name = c.id;
    else if ((c.runtime === 'crio' || (c.runtime === 'containerd' && c.podUid)) && (this.opts.criSockets?.length ?? 0) > 0) await attempt('cri', () => this.cri(c.id));
    // The kubelet's log directories, where CRI did not answer.
    if (c.podUid && (!info.podName || !info.podNamespace)) await attempt('kubernetes', () => this.kubernetes(c.podUid!));
    return info;
  }

  private async docker(id: string): Promise<NameInfo> {
    if (!isHexId(id)) throw new Error('not a hex container id');
    if (!fs.existsSync(this.opts.dockerSocket)) throw new Error(`no Docker socket at ${this.opts.dockerSocket}`);
    const body = await getJsonOverSocket(this.opts.dockerSocket, `/containers/${id}/json`, this.opts.timeoutMs);
    return fromInspect(body as InspectBody);
  }

  private async containerd(namespace: string, id: string): Promise<NameInfo> {
    const sock = this.opts.containerdSocket!;
    if (!fs.existsSync(sock)) throw new Error(`no containerd socket at ${sock}`);
    const { ContainerdConnection, containerdNames } = containerdClient();
    this.containerdConnection ??= new ContainerdConnection(sock, this.opts.timeoutMs);
    return containerdNames(this.containerdConnection, namespace, id, this.opts.timeoutMs);
  }

  /**
   * The CRI sockets that exist, in order, each within names.timeoutMs. One that does not know
   * the id (NOT_FOUND), serves no CRI (UNIMPLEMENTED: the containerd.io package Docker ships
   * disables the CRI plugin, and a node may run CRI-O beside it) or fails, hands on to the next.
   */
  private async cri(id: string): Promise<NameInfo> {
    if (!/^[0-9a-f]{64}$/.test(id)) throw new Error('not a 64-hex container id');
    const all = this.opts.criSockets ?? [];
    const sockets = all.filter((s) => fs.existsSync(s));
    if (sockets.length === 0) throw new Error(`no CRI socket at ${all.join(', ')}`);
    const errors: string[] = [];
    const { CriConnection, CriError, criNames } = criClient();
    for (const s of sockets) {
      let conn = this.criConnections.get(s);
      if (!conn) this.criConnections.set(s, (conn = new CriConnection(s, this.opts.timeoutMs)));
      try {
        return await criNames(conn, id, this.opts.timeoutMs);
      } catch (err) {
        errors.push(err instanceof CriError ? err.message : `${s}: ${(err as Error).message}`);
      }
    }
    throw new Error(errors.join('; '));
  }

  private async podman(id: string): Promise<NameInfo> {
    if (!isHexId(id)) throw new Error('not a hex container id');
    const stored = this.storage?.lookup(id);
    if (stored?.name) return stored;
    if (fs.existsSync(this.opts.podmanSocket)) {
      const body = await getJsonOverSocket(this.opts.podmanSocket, `/v4.0.0/libpod/containers/${id}/json`, this.opts.timeoutMs);
      return fromInspect(body as InspectBody);
    }
    if (!this.opts.podmanBinary) throw new Error('no podman socket and podman inspect is disabled');
    return this.podmanInspect(id);
  }

  /** `podman inspect` with an argument array: no shell ever sees the id. */
  podmanInspect(id: string): Promise<NameInfo> {
    if (!isHexId(id)) return Promise.reject(new Error('not a hex container id; podman not run'));
    return new Promise((resolve, reject) => {
      execFile(
        this.opts.podmanBinary,
        ['inspect', '--format', 'json', id],
        { timeout: this.opts.timeoutMs, maxBuffer: 4 << 20, env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' } },
        (err, stdout) => {
          if (err) return reject(new Error(`podman inspect: ${err.message.split('\n')[0]}`));
          // podman exits 0 with nothing printed when the timeout's SIGTERM reaches it
          // (measured in UML 6.1, where one inspect takes ~2 s: names.timeoutMs).
          if (stdout.trim() === '') return reject(new Error(`podman inspect printed nothing (stopped at the ${this.opts.timeoutMs} ms timeout?)`));
          try {
            const arr = JSON.parse(stdout) as InspectBody[];
            if (!Array.isArray(arr) || !arr[0]) return reject(new Error('podman inspect: empty result'));
            resolve(fromInspect(arr[0]));
          } catch {
            reject(new Error(`podman inspect: invalid JSON: ${JSON.stringify(stdout.slice(0, 160))}`));
          }
        },
      );
    });
  }

  private async kubernetes(podUid: string): Promise<NameInfo | undefined> {
    if (!POD_UID.test(podUid)) throw new Error('not a pod uid');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timeout after ${this.opts.timeoutMs} ms reading ${this.opts.kubernetesPodLogs}`)), this.opts.timeoutMs);
    });
    try {
      return await Promise.race([podFromLogDir(this.opts.kubernetesPodLogs, podUid), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
