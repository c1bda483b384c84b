/**
 * A private Docker Engine for one test file (../shared/docs/host-notes.md, "Docker Engine"):
 * its own data and exec roots and socket in a temp dir, the vfs storage driver, no networking,
 * and a cgroup parent of the test's own (`/cgwd-test-docker-<random>/docker`, so containers
 * are `<parent>/<64 hex>` in every v1 controller, the `/docker/<id>` shape, without touching
 * a host-wide `/docker`). An image `cgwd-busybox:1` is imported from the host's static
 * busybox. stop() removes the containers, stops dockerd (and its containerd), removes the
 * cgroups and the directory.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { need } from './prereq';

export const DOCKERD = '/usr/sbin/dockerd';
/** Debian's client, not whatever else is first on PATH. */
export const DOCKER = '/usr/bin/docker';
export const IMAGE = 'cgwd-busybox:1';
export const CTR = '/usr/bin/ctr';
const BUSYBOX = ['/bin/busybox', '/usr/bin/busybox'].find((p) => fs.existsSync(p));
const V1 = '/sys/fs/cgroup';

export interface PrivateDocker {
  sock: string;
  /** The cgroup parent the containers are made under (relative to each v1 hierarchy). */
  cgroupParent: string;
  /** Its first path component: the discovery root to give the daemon. */
  root: string;
  docker(args: string[], timeoutMs?: number): { status: number | null; stdout: string; stderr: string };
  /** dockerd's own containerd's socket. */
  containerdSock: string;
  /** `ctr` against dockerd's own containerd, in namespace `ns`. */
  ctr(ns: string, args: string[], timeoutMs?: number): { status: number | null; stdout: string; stderr: string };
  /** The image as a tar (docker save), for `ctr image import`. */
  imageTar: string;
  stop(): Promise<void>;
}

export function dockerUnavailableReason(): string | undefined {
  if (!fs.existsSync(DOCKERD) || !fs.existsSync(DOCKER)) return `${DOCKERD} and ${DOCKER} (apt-get install docker.io)`;
  if (!BUSYBOX) return 'a static busybox (apt-get install busybox-static)';
  return undefined;
}

export interface StartDockerOptions {
  /** More dockerd arguments, e.g. `--add-runtime NAME=PATH --default-runtime NAME` (an OCI runtime of the test's own). */
  dockerdArgs?: string[];
}

export async function startDocker(opts: StartDockerOptions = {}): Promise<PrivateDocker> {
  const why = dockerUnavailableReason();
  need(why === undefined, why ?? '');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-test-docker-'));
  const root = `/cgwd-test-docker-${randomBytes(4).toString('hex')}`;
  const cgroupParent = `${root}/docker`;
  const sock = path.join(dir, 'docker.sock');
  const child: ChildProcess = spawn(DOCKERD, [
    '--iptables=false', '--ip6tables=false', '--bridge=none', '--storage-driver=vfs',
    '--data-root', path.join(dir, 'root'), '--exec-root', path.join(dir, 'exec'),
    '--host', `unix://${sock}`, '--pidfile', path.join(dir, 'docker.pid'), '--cgroup-parent', cgroupParent,
    ...(opts.dockerdArgs ?? []),
  ], { stdio: ['ignore', 'ignore', fs.openSync(path.join(dir, 'dockerd.log'), 'w')] });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const exec = (bin: string, args: string[], timeoutMs: number) => {
    const r = spawnSync(bin, args, { encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, DOCKER_HOST: `unix://${sock}` } });
    return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  };
  const docker = (args: string[], timeoutMs = 60_000) => exec(DOCKER, args, timeoutMs);
  // dockerd starts its own containerd (host-notes: "containerd without Kubernetes").
  const containerdSock = path.join(dir, 'exec', 'containerd', 'containerd.sock');
  const ctr = (ns: string, args: string[], timeoutMs = 60_000) => exec(CTR, ['-a', containerdSock, '-n', ns, ...args], timeoutMs);
  const namespaces = new Set<string>();
  const ctrTracked = (ns: string, args: string[], timeoutMs?: number) => {
    namespaces.add(ns);
    return ctr(ns, args, timeoutMs);
  };
  const imageTar = path.join(dir, 'image.tar');
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const ids = docker(['ps', '-aq']).stdout.split('\n').filter(Boolean);
    if (ids.length > 0) docker(['rm', '-f', ...ids]);
    for (const ns of namespaces) {
      for (const id of ctr(ns, ['task', 'ls', '-q']).stdout.split('\n').filter(Boolean)) ctr(ns, ['task', 'kill', '-s', 'SIGKILL', id]);
      for (let i = 0; i < 50 && ctr(ns, ['task', 'ls', '-q']).stdout.trim() !== ''; i++) await new Promise((r) => setTimeout(r, 100));
      for (const id of ctr(ns, ['container', 'ls', '-q']).stdout.split('\n').filter(Boolean)) ctr(ns, ['container', 'rm', id]);
      for (const h of fs.readdirSync(V1)) removeCgroupTree(path.join(V1, h, ns));
    }
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    }
    for (const h of fs.readdirSync(V1)) removeCgroupTree(path.join(V1, h, root));
    // containerd's runc keeps its state under /run/containerd/runc/<namespace> whatever
    // dockerd's --exec-root says: the namespaces are ours (cgwd-test-ns-*), so are those.
    for (const ns of namespaces) fs.rmSync(path.join('/run/containerd/runc', ns), { recursive: true, force: true });
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const end = Date.now() + 20_000;
    while (docker(['version', '--format', '{{.Server.Version}}']).status !== 0) {
      if (child.exitCode !== null || Date.now() > end) throw new Error(`dockerd did not answer on ${sock}: ${fs.readFileSync(path.join(dir, 'dockerd.log'), 'utf8').slice(-800)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const rootfs = path.join(dir, 'rootfs');
    fs.mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
    fs.copyFileSync(BUSYBOX!, path.join(rootfs, 'bin', 'busybox'));
    fs.chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
    for (const a of ['sh', 'sleep', 'dd', 'cat']) fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
    const tar = spawnSync('tar', ['-C', rootfs, '-cf', path.join(dir, 'rootfs.tar'), '.']);
    if (tar.status !== 0) throw new Error(`tar: ${tar.stderr}`);
    const imp = docker(['import', path.join(dir, 'rootfs.tar'), IMAGE]);
    if (imp.status !== 0) throw new Error(`docker import: ${imp.stderr}`);
    const save = docker(['save', IMAGE, '-o', imageTar]);
    if (save.status !== 0) throw new Error(`docker save: ${save.stderr}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { sock, cgroupParent, root, docker, containerdSock, ctr: ctrTracked, imageTar, stop };
}

function removeCgroupTree(dir: string): void {
  if (!fs.existsSync(dir)) return;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeCgroupTree(path.join(dir, e.name));
  try {
    fs.rmdirSync(dir);
  } catch {
    /* a task still in it: the hook's check reports it */
  }
}
