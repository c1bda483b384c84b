/**
 * A private containerd with its CRI plugin for one test, driven over CRI as a kubelet would
 * (../shared/docs/host-notes.md, "containerd without Kubernetes"). Everything it makes is the
 * test's own: root, state, sockets, runc root, CNI dirs and logs in a temp dir; pods under a
 * cgroup parent `/cgwd-test-<random>/kubepods/burstable/pod<uid>`; host-network sandboxes, so
 * no CNI. The image is a busybox OCI image built here (no Docker needed) and imported with
 * `ctr images import` into `k8s.io`; it is also the sandbox (pause) image: its command is a
 * long sleep. stop() removes pods and containers, stops containerd, kills shims left behind,
 * unmounts what is still mounted under the temp dir, removes the cgroups and the directory,
 * and throws naming anything it could not clean.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CriConnection } from '../../src/runtimes/cri-client';
import { need } from './prereq';
import { removeV1Cgroup, uniqueTestRoot, V1_ROOT } from './v1-cgroups';

export const CONTAINERD = '/usr/bin/containerd';
export const CTR = '/usr/bin/ctr';
const SHIM = '/usr/bin/containerd-shim-runc-v2';
const RUNC = '/usr/sbin/runc';
const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find((p) => fs.existsSync(p));
/** CRI names an image by its normalised reference. */
export const CRI_IMAGE = 'docker.io/library/cgwd-busybox:1';
const K8S_NS = 'k8s.io';

export function containerdUnavailableReason(): string | undefined {
  const missing = [CONTAINERD, CTR, SHIM].filter((p) => !fs.existsSync(p));
  if (missing.length) return `${missing.join(', ')} (apt-get install containerd)`;
  if (!fs.existsSync(RUNC)) return `${RUNC} (apt-get install runc)`;
  if (!BUSYBOX) return 'a static busybox (apt-get install busybox-static)';
  return undefined;
}

export interface Pod {
  id: string;
  uid: string;
  name: string;
  namespace: string;
  /** The pod's cgroup, relative to each v1 hierarchy. */
  cgroupParent: string;
  config: Record<string, unknown>;
}

export interface ContainerSpec {
  name: string;
  command: string[];
  cpuQuota?: number;
  cpuPeriod?: number;
  memoryLimitBytes?: number;
}

export interface PrivateContainerd {
  dir: string;
  sock: string;
  /** The test's cgroup root (`/cgwd-test-<random>`): the daemon's discovery root. */
  root: string;
  cri: CriConnection;
  /** ms from spawn to the CRI plugin answering Version. */
  startMs: number;
  version: { runtimeName: string; runtimeVersion: string; runtimeApiVersion: string };
  runPod(name: string, namespace: string): Promise<Pod>;
  createContainer(pod: Pod, spec: ContainerSpec): Promise<string>;
  startContainer(id: string): Promise<void>;
  /**
   * Stop containerd only (SIGKILL: as in a crash, its socket file stays): its shims and
   * containers keep running, as in a containerd restart; stop() starts it again to remove them.
   */
  stopContainerd(signal?: NodeJS.Signals): Promise<void>;
  log(): string;
  stop(): Promise<void>;
}

const toml = (s: string): string => JSON.stringify(s);

function config(dir: string): string {
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return `version = 2
root = ${toml(path.join(dir, 'root'))}
state = ${toml(path.join(dir, 'state'))}
# What CRI on one host-network pod does not use; opt would make /opt/containerd. (Not the
# v1 runtime io.containerd.runtime.v1.linux: in 1.6 the tasks service needs it, and without it
# the CRI plugin fails to load while containerd still boots, with a warning.)
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.overlayfs",
]

[grpc]
  address = ${toml(path.join(dir, 'containerd.sock'))}
[ttrpc]
  address = ${toml(path.join(dir, 'containerd.sock.ttrpc'))}
[debug]
  level = "info"

[${cri}]
  sandbox_image = ${toml(CRI_IMAGE)}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  enable_selinux = false
  # The sandbox's OCI spec asks for oom_score_adj -998, and this host runs root without
  # CAP_SYS_RESOURCE (CapEff 0x1fffeffffff): runc init then fails with "can't get final
  # child's PID from pipe: EOF". This clamps it to containerd's own.
  restrict_oom_score_adj = true
  [${cri}.containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [${cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [${cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = ${toml(RUNC)}
        Root = ${toml(path.join(dir, 'runc'))}
  [${cri}.cni]
    bin_dir = ${toml(path.join(dir, 'cni', 'bin'))}
    conf_dir = ${toml(path.join(dir, 'cni', 'conf'))}
`;
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

const GOARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

/** An OCI image layout tar of a busybox rootfs, named `ref` for `ctr images import`. */
export function buildBusyboxImage(dir: string, ref: string, cmd: string[]): string {
  const rootfs = path.join(dir, 'rootfs');
  for (const d of ['bin', 'tmp', 'proc', 'sys', 'dev', 'etc']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
  fs.copyFileSync(BUSYBOX!, path.join(rootfs, 'bin', 'busybox'));
  fs.chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
  for (const a of ['sh', 'sleep', 'cat', 'grep', 'true']) fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
  const layerFile = path.join(dir, 'layer.tar');
  const tar = spawnSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', rootfs, '-cf', layerFile, '.'], { encoding: 'utf8' });
  if (tar.status !== 0) throw new Error(`tar of the image layer: ${tar.stderr}`);
  const layout = path.join(dir, 'oci');
  const blobs = path.join(layout, 'blobs', 'sha256');
  fs.mkdirSync(blobs, { recursive: true });
  const blob = (b: Buffer): { digest: string; size: number } => {
    const h = sha256(b);
    fs.writeFileSync(path.join(blobs, h), b);
    return { digest: `sha256:${h}`, size: b.length };
  };
  const layer = blob(fs.readFileSync(layerFile));
  const architecture = GOARCH[process.arch] ?? process.arch;
  const cfg = blob(Buffer.from(JSON.stringify({ architecture, os: 'linux', config: { Cmd: cmd, Env: ['PATH=/bin'] }, rootfs: { type: 'layers', diff_ids: [layer.digest] } })));
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
      }),
    ),
  );
  const index = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, platform: { architecture, os: 'linux' }, annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': ref.split(':').pop() } }],
  };
  fs.writeFileSync(path.join(layout, 'index.json'), JSON.stringify(index));
  fs.writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const out = path.join(dir, 'image.tar');
  const t2 = spawnSync('tar', ['--numeric-owner', '--owner=0', '--group=0', '-C', layout, '-cf', out, 'oci-layout', 'index.json', 'blobs'], { encoding: 'utf8' });
  if (t2.status !== 0) throw new Error(`tar of the OCI layout: ${t2.stderr}`);
  return out;
}

/** Processes whose command line names `needle` (the shims of this containerd: `-address <sock>`). */
export function processesMentioning(needle: string): { pid: number; cmd: string }[] {
  const out: { pid: number; cmd: string }[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0').join(' ');
      if (cmd.includes(needle)) out.push({ pid: Number(e), cmd });
    } catch {
      /* gone */
    }
  }
  return out;
}

/** Mount points at or below `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => unescape(l.split(' ')[4] ?? ''))
    .filter((m) => m === dir || m.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
}

/** The shim socket containerd 1.6 makes for a task: /run/containerd/s/<sha256(address/ns/id)>, whatever its --state. */
function shimSocket(sock: string, id: string): string {
  return path.join('/run/containerd/s', createHash('sha256').update(path.join(sock, K8S_NS, id)).digest('hex'));
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startContainerd(): Promise<PrivateContainerd> {
  const why = containerdUnavailableReason();
  need(why === undefined, why ?? '');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-test-cri-'));
  const root = uniqueTestRoot();
  const sock = path.join(dir, 'containerd.sock');
  fs.mkdirSync(path.join(dir, 'cni', 'bin'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'cni', 'conf'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'logs'));
  fs.writeFileSync(path.join(dir, 'config.toml'), config(dir));
  const logFile = path.join(dir, 'containerd.log');
  const cri = new CriConnection(sock, 5000);
  const log = (): string => {
    try {
      return fs.readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  let child: ChildProcess;
  let exited: Promise<void>;
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  const launch = (): void => {
    const fd = fs.openSync(logFile, 'a');
    child = spawn(CONTAINERD, ['--config', path.join(dir, 'config.toml')], { stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    const c = child;
    exited = new Promise<void>((r) => c.once('exit', () => r()));
  };
  const answering = async (): Promise<PrivateContainerd['version']> => {
    const end = Date.now() + 20_000;
    for (;;) {
      if (!running()) throw new Error(`containerd exited with ${child.exitCode ?? child.signalCode}: ${log().slice(-1500)}`);
      if (/failed to load plugin io\.containerd\.grpc\.v1\.cri/.test(log())) throw new Error(`containerd's CRI plugin did not load: ${log().slice(-1500)}`);
      if (Date.now() > end) throw new Error(`containerd's CRI plugin did not answer on ${sock} within 20 s: ${log().slice(-1500)}`);
      const v = fs.existsSync(sock) ? await cri.call<PrivateContainerd['version']>('Version', { version: 'v1' }, Date.now() + 1000).catch(() => undefined) : undefined;
      if (v) return v;
      await sleep(20);
    }
  };
  const t0 = performance.now();
  launch();
  const ids = new Set<string>();
  const containers: string[] = [];
  let stopped = false;
  let stoppedOnPurpose = false;

  const stopContainerd = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> => {
    cri.close();
    if (!running()) return;
    child.kill(signal);
    const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(t);
  };

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const problems: string[] = [];
    if (stoppedOnPurpose && !running()) {
      // Started again, as after a containerd restart: it finds its shims and removes the pods.
      launch();
      await answering().catch((err: Error) => problems.push(`restarting containerd to remove its pods: ${err.message}`));
    }
    if (running()) {
      // As the kubelet tears a pod down: containers first, then the sandbox. Listing the
      // sandboxes also catches one whose RunPodSandbox this side gave up on.
      try {
        for (const c of containers) {
          await cri.call('StopContainer', { containerId: c, timeout: 0 }, Date.now() + 20_000);
          await cri.call('RemoveContainer', { containerId: c }, Date.now() + 20_000);
        }
        const pods = await cri.call<{ items: { id: string }[] }>('ListPodSandbox', {});
        for (const p of pods.items) {
          await cri.call('StopPodSandbox', { podSandboxId: p.id }, Date.now() + 20_000);
          await cri.call('RemovePodSandbox', { podSandboxId: p.id }, Date.now() + 20_000);
        }
      } catch (err) {
        problems.push(`removing pods: ${(err as Error).message}`);
      }
    }
    await stopContainerd();
    // Shims outlive containerd by design (a containerd restart keeps containers running).
    for (let i = 0; i < 50; i++) {
      const shims = processesMentioning(sock).filter((p) => p.cmd.includes('containerd-shim'));
      if (shims.length === 0) break;
      if (i === 0) problems.push(`shims left running (killed): ${shims.map((s) => s.pid).join(', ')}`);
      for (const s of shims) {
        try {
          process.kill(s.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await sleep(100);
    }
    try {
      await removeV1Cgroup(root);
    } catch (err) {
      problems.push((err as Error).message);
    }
    // runc also makes the path in the cgroup2 tree of a hybrid host, which removeV1Cgroup passes over.
    const unified = path.join(V1_ROOT, 'unified', root);
    if (fs.existsSync(unified)) {
      const dirs: string[] = [];
      const walk = (d: string): void => {
        for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
        dirs.push(d);
      };
      walk(unified);
      for (const d of dirs) {
        try {
          fs.rmdirSync(d);
        } catch (err) {
          problems.push(`${d}: ${(err as NodeJS.ErrnoException).code}`);
        }
      }
    }
    const mounts = mountsUnder(dir);
    if (mounts.length) problems.push(`mounts left under ${dir} (unmounted): ${mounts.join(', ')}`);
    for (const m of mounts) spawnSync('umount', ['-l', m]);
    for (const id of ids) {
      const s = shimSocket(sock, id);
      if (fs.existsSync(s)) {
        problems.push(`shim socket left: ${s} (removed)`);
        fs.rmSync(s, { force: true });
      }
    }
    fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
    if (problems.length) throw new Error(`private containerd clean-up: ${problems.join('; ')}`);
  };

  try {
    const version = await answering();
    const startMs = performance.now() - t0;
    const tarFile = buildBusyboxImage(dir, CRI_IMAGE, ['/bin/sleep', '2147483647']);
    const imp = spawnSync(CTR, ['-a', sock, '-n', K8S_NS, 'images', 'import', '--snapshotter', 'native', tarFile], { encoding: 'utf8', timeout: 30_000 });
    if (imp.status !== 0) throw new Error(`ctr images import: ${imp.stderr || imp.error?.message}`);

    const runPod = async (name: string, namespace: string): Promise<Pod> => {
      const uid = randomUUID();
      const cgroupParent = `${root}/kubepods/burstable/pod${uid}`;
      const podConfig = {
        metadata: { name, uid, namespace, attempt: 0 },
        logDirectory: path.join(dir, 'logs', uid),
        labels: { 'io.kubernetes.pod.name': name, 'io.kubernetes.pod.namespace': namespace, 'io.kubernetes.pod.uid': uid },
        linux: { cgroupParent, securityContext: { namespaceOptions: { network: 'NODE', pid: 'POD', ipc: 'POD' } } },
      };
      const r = await cri.call<{ podSandboxId: string }>('RunPodSandbox', { config: podConfig }, Date.now() + 30_000);
      ids.add(r.podSandboxId);
      return { id: r.podSandboxId, uid, name, namespace, cgroupParent, config: podConfig };
    };
    const createContainer = async (pod: Pod, spec: ContainerSpec): Promise<string> => {
      const r = await cri.call<{ containerId: string }>(
        'CreateContainer',
        {
          podSandboxId: pod.id,
          sandboxConfig: pod.config,
          config: {
            metadata: { name: spec.name, attempt: 0 },
            image: { image: CRI_IMAGE },
            command: spec.command,
            logPath: `${spec.name}/0.log`,
            // As the kubelet labels its containers.
            labels: { 'io.kubernetes.container.name': spec.name, 'io.kubernetes.pod.name': pod.name, 'io.kubernetes.pod.namespace': pod.namespace, 'io.kubernetes.pod.uid': pod.uid },
            linux: { resources: { cpuPeriod: spec.cpuPeriod ?? 0, cpuQuota: spec.cpuQuota ?? 0, memoryLimitInBytes: spec.memoryLimitBytes ?? 0 } },
          },
        },
        Date.now() + 30_000,
      );
      ids.add(r.containerId);
      containers.push(r.containerId);
      return r.containerId;
    };
    const startContainer = async (id: string): Promise<void> => {
      await cri.call('StartContainer', { containerId: id }, Date.now() + 30_000);
    };
    const stopOnPurpose = async (signal?: NodeJS.Signals): Promise<void> => {
      stoppedOnPurpose = true;
      await stopContainerd(signal);
    };
    return { dir, sock, root, cri, startMs, version, runPod, createContainer, startContainer, stopContainerd: stopOnPurpose, log, stop };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

/** A random suffix for names of the test's own. */
export const suffix = (): string => randomBytes(3).toString('hex');
