/**
 * Runs inside user-mode Linux with little memory (see test/uml/global-oom.test.ts): a process
 * in a container cgroup WITHOUT a memory limit grows until the kernel's global OOM killer
 * (constraint=CONSTRAINT_NONE) kills it. No container limit was hit: the alert must be the
 * node's, naming the container, never "the container hit its memory limit".
 * The daemon and this script are protected (oom_score_adj -1000); the hog volunteers (1000).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cgroupRoot, emit, inUml, readKmsg } from '../in-uml';
import { DaemonProc, HOG, hex64, mkCgroup, removeTree, runMain, waitChildLine, writeConfig, type LogLine } from './daemon-util';

const TEST = '/cgwd-test';
const alertOf = (l: LogLine): Record<string, any> | undefined => (l.alert && typeof l.alert === 'object' ? (l.alert as Record<string, any>) : undefined);

async function main(): Promise<void> {
  if (!inUml()) throw new Error('run this through test/helpers/uml.ts runInUml()');
  fs.writeFileSync('/proc/self/oom_score_adj', '-1000');
  const root = cgroupRoot();
  const id = hex64();
  const C = `${TEST}/docker/${id}`;
  mkCgroup(root, C);
  fs.mkdirSync('/run/cgwd-state');
  const cfg = writeConfig('global-oom', {
    mode: 'enforce',
    logLevel: 'debug',
    paths: { cgroupRoot: root, procRoot: '/proc', kmsg: '/dev/kmsg', stateDir: '/run/cgwd-state' },
    kernel: { manage: false },
    discovery: { roots: [TEST] },
    detection: { inotify: true, kmsg: true, sweepIntervalMs: 500 },
    alerts: { host: 'uml', resolveAfterSeconds: 2 },
    metrics: { enabled: false },
  });
  const d = new DaemonProc(cfg, 'global-oom');
  try {
    fs.writeFileSync(`/proc/${d.child.pid}/oom_score_adj`, '-1000');
    if (!(await d.waitMsg('detection running', 60_000))) throw new Error(`the daemon did not get ready: ${d.stderr.slice(-1000)}`);
    fs.mkdirSync('/run/bin', { recursive: true });
    fs.symlinkSync(process.execPath, '/run/bin/memhog');
    const hog = spawn('/run/bin/memhog', ['-e', HOG], { stdio: ['pipe', 'pipe', 'pipe'] });
    await waitChildLine(hog, (l) => l === 'ready', 20_000);
    fs.writeFileSync(`/proc/${hog.pid}/oom_score_adj`, '1000');
    fs.writeFileSync(path.join(root, C, 'cgroup.procs'), String(hog.pid));
    hog.stdin.write('go\n');
    const killed = await new Promise<string | null>((r) => hog.once('exit', (_c, s) => r(s)));
    const alert = await d.wait((l) => alertOf(l)?.kind === 'oom-kill', 15_000);
    const resolved = await d.wait((l) => alertOf(l)?.kind === 'oom-kill' && alertOf(l)!.state === 'resolved', 20_000);
    emit({
      check: 'global-oom',
      id,
      killed,
      daemonAlive: d.child.exitCode === null,
      memoryEvents: fs.readFileSync(path.join(root, C, 'memory.events'), 'utf8'),
      kmsg: readKmsg().filter((k) => /oom-kill:/.test(k.message)).map((k) => k.message),
      alert: alert ? { ...alertOf(alert), summary: alert.msg } : null,
      resolved: resolved ? alertOf(resolved) : null,
      otherAlerts: d.lines.filter((l) => alertOf(l) && alertOf(l)!.kind !== 'oom-kill').map((l) => alertOf(l)!.kind),
    });
  } finally {
    const stop = await d.stop();
    d.save();
    await removeTree(path.join(root, TEST));
    emit({ check: 'cleanup', stop, gone: !fs.existsSync(path.join(root, TEST)) });
  }
}

runMain(main, emit);
