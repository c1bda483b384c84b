/**
 * Runs inside user-mode Linux (see test/uml/podman-v2.test.ts): real podman + runc containers
 * on a real cgroup v2 kernel (../shared/docs/host-notes.md, "podman inside UML"), and the
 * daemon. Phases: setup, policy (a container with an 8-CPU quota gets 8192), bomb (a fork
 * bomb under --pids-limit 20 is alerted with the container's name), oom (a podman run --rm
 * whose dd is OOM-killed is alerted with its name), cleanup.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { emit, inUml, nowMs, sleep } from '../in-uml';
import { DaemonProc, pollFile, readTrim, runMain, writeConfig, type LogLine } from './daemon-util';

const CG = '/sys/fs/cgroup';
export const IMAGE = 'localhost/cgwd-busybox:1';
const alertOf = (l: LogLine): Record<string, any> | undefined => (l.alert && typeof l.alert === 'object' ? (l.alert as Record<string, any>) : undefined);

function sh(bin: string, args: string[], timeoutMs = 60_000): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: timeoutMs });
  return { status: r.status, stdout: (r.stdout ?? '').trim(), stderr: (r.stderr ?? '').trim() };
}

function must(bin: string, args: string[], what: string): string {
  const r = sh(bin, args);
  if (r.status !== 0) throw new Error(`${what}: exit ${r.status}: ${r.stderr.slice(-600)}`);
  return r.stdout;
}

/**
 * podman as the host notes run it in UML: storage and state on tmpfs, cgroupfs manager, file
 * events. Also used by hooks-v2.ts, and by systemd-service.ts with `cgroupManager: 'systemd'`
 * (systemd as PID 1 owns /sys/fs/cgroup already; containers become machine.slice/libpod-<id>.scope).
 * graphRoot: containers/storage's; systemd-service.ts passes podman's own default
 * (/var/lib/containers/storage), which the daemon's default names.containersStorage reads.
 */
export function setupPodman(o: { cgroupManager?: 'cgroupfs' | 'systemd'; graphRoot?: string } = {}): void {
  const manager = o.cgroupManager ?? 'cgroupfs';
  const graphRoot = o.graphRoot ?? '/run/pr';
  for (const d of ['/var/tmp', '/var/lib/containers', '/dev/shm']) {
    fs.mkdirSync(d, { recursive: true });
    must('/bin/mount', ['-t', 'tmpfs', 'tmpfs', d], `tmpfs on ${d}`);
  }
  // podman wants cgroup v2 at /sys/fs/cgroup: the same hierarchy init.sh mounted on /run/cg.
  if (manager === 'cgroupfs') must('/bin/mount', ['-t', 'cgroup2', 'none', CG], 'cgroup2 on /sys/fs/cgroup');
  // The daemon runs `podman inspect` with a bare environment (PATH only), so the settings
  // live where podman looks by itself: a tmpfs over /etc/containers holding the host's files
  // (policy.json, registries) and ours.
  const etc = '/etc/containers';
  const keep = new Map<string, Buffer>();
  for (const f of fs.existsSync(etc) ? fs.readdirSync(etc, { withFileTypes: true }) : []) if (f.isFile()) keep.set(f.name, fs.readFileSync(path.join(etc, f.name)));
  must('/bin/mount', ['-t', 'tmpfs', 'tmpfs', etc], `tmpfs on ${etc}`);
  for (const [name, body] of keep) fs.writeFileSync(path.join(etc, name), body);
  fs.writeFileSync(path.join(etc, 'storage.conf'), `[storage]\ndriver = "vfs"\ngraphroot = "${graphRoot}"\nrunroot = "/run/prr"\n`);
  fs.writeFileSync(path.join(etc, 'containers.conf'), `[engine]\ncgroup_manager = "${manager}"\nevents_logger = "file"\nruntime = "runc"\n[containers]\nnetns = "none"\n`);
  const rootfs = '/run/rootfs';
  fs.mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
  const bb = ['/bin/busybox', '/usr/bin/busybox'].find((p) => fs.existsSync(p));
  if (!bb) throw new Error('no static busybox on the host (busybox-static)');
  fs.copyFileSync(bb, path.join(rootfs, 'bin', 'busybox'));
  fs.chmodSync(path.join(rootfs, 'bin', 'busybox'), 0o755);
  for (const a of ['sh', 'sleep', 'dd']) fs.symlinkSync('busybox', path.join(rootfs, 'bin', a));
  must('/bin/tar', ['-C', rootfs, '-cf', '/run/rootfs.tar', '.'], 'tar');
  must('/usr/bin/podman', ['import', '/run/rootfs.tar', IMAGE], 'podman import');
}

async function main(): Promise<void> {
  if (!inUml()) throw new Error('run this through test/helpers/uml.ts runInUml()');
  setupPodman();
  fs.mkdirSync('/run/cgwd-state');
  const cfg = writeConfig('podman-v2', {
    mode: 'enforce',
    logLevel: 'debug',
    paths: { cgroupRoot: CG, procRoot: '/proc', kmsg: '/dev/kmsg', stateDir: '/run/cgwd-state' },
    kernel: { manage: false },
    discovery: { roots: ['/libpod_parent'] },
    // One `podman inspect` takes up to ~2 s here (policy.inspectMs), the default timeout's length.
    // containers/storage first, as on a real host (its default graph root there): `podman inspect`
    // waits on the container's lock, which `--rm`'s cleanup holds, so an OOM-killed `--rm`
    // container was nameless through inspect alone (CI, 6.12).
    names: { podmanBinary: '/usr/bin/podman', containersStorage: '/run/pr', timeoutMs: 8000 },
    // podman inspect takes 1.2-2 s here (policy.inspectMs): give the first message the name.
    alerts: { host: 'uml', resolveAfterSeconds: 2, nameWaitMs: 8000 },
    metrics: { enabled: false },
  });
  // /libpod_parent appears with the first container: the daemon watches for it.
  const d = new DaemonProc(cfg, 'podman-v2');
  try {
    if (!(await d.waitMsg('detection running', 60_000))) throw new Error(`the daemon did not get ready: ${d.stderr.slice(-1000)}`);
    emit({ check: 'setup', podman: must('/usr/bin/podman', ['version', '--format', '{{.Client.Version}}'], 'podman version') });

    const t0 = nowMs();
    const quota = must('/usr/bin/podman', ['run', '-d', '--name', 'cgwd-quota', '--pids-limit', '0', '--cpu-period', '100000', '--cpu-quota', '800000', IMAGE, 'sleep', '1000'], 'podman run quota');
    const runMs = nowMs() - t0;
    const rel = `/libpod_parent/libpod-${quota}`;
    // Within the settle window when runc writes cpu.max in time; when UML is so slow that it
    // writes it later (CI, 6.12: `podman run` took 18.8 s), the minute's reconcile repairs it.
    const at = await pollFile(path.join(CG, rel, 'pids.max'), (v) => v === '8192', 65_000, 5);
    const ti = nowMs();
    sh('/usr/bin/podman', ['inspect', '--format', 'json', quota]);
    const inspectMs = Math.round(nowMs() - ti);
    emit({ check: 'policy', id: quota, rel, runMs, inspectMs, pidsMax: readTrim(path.join(CG, rel, 'pids.max')), cpuMax: readTrim(path.join(CG, rel, 'cpu.max')), reachedMs: at === null ? null : Math.round(at - t0) });

    const bomb = must('/usr/bin/podman', ['run', '-d', '--name', 'cgwd-bomb', '--pids-limit', '20', IMAGE, 'sh', '-c', 'sleep 4; i=0; while [ $i -lt 100 ]; do sleep 1000 & i=$((i+1)); done; sleep 1000'], 'podman run bomb');
    // The bomb waits 4 s: `podman inspect` (the name) is slow in UML (policy.inspectMs).
    const hit = await d.wait((l) => alertOf(l)?.kind === 'pids-max' && alertOf(l)!.container?.id === bomb, 15_000);
    emit({ check: 'bomb', id: bomb, alert: hit ? { ...alertOf(hit), summary: hit.msg } : null });

    const r = sh('/usr/bin/podman', ['run', '--rm', '--name', 'cgwd-oom', '-m', '32m', '--memory-swap', '32m', IMAGE, 'dd', 'if=/dev/zero', 'of=/dev/null', 'bs=64M', 'count=1']);
    const oom = await d.wait((l) => alertOf(l)?.kind === 'oom-kill' && alertOf(l)!.container?.name === 'cgwd-oom', 20_000);
    emit({ check: 'oom', exit: r.status, alert: oom ? { ...alertOf(oom), summary: oom.msg } : null, lastAlerts: d.lines.filter((l) => alertOf(l)).slice(-5).map((l) => l.msg) });
  } finally {
    sh('/usr/bin/podman', ['rm', '-f', '-t', '0', 'cgwd-quota', 'cgwd-bomb']);
    await sleep(100);
    const stop = await d.stop();
    d.save();
    emit({ check: 'cleanup', stop, containers: sh('/usr/bin/podman', ['ps', '-aq']).stdout });
  }
}

if (require.main === module) runMain(main, emit);
