/**
 * Runs inside user-mode Linux (see test/uml/never-silent-v2.test.ts): events that used to be
 * missed, on a real cgroup v2 kernel. Phases (one result each):
 *   late-root   a discovery root that does not exist at start: a container made under it later
 *               gets its limit at once (the nearest existing ancestor is watched)
 *   sub-cgroup  a fork rejected in a container's own sub-cgroup (init.scope, pids.max 5)
 *   reload      SIGHUP (new intervals) while that alert fires: it resolves with the next sequence
 *   kill9       kill -9 while an alert fires, then a restart: it resolves with the next sequence
 *   oom-removed an OOM kill whose cgroup is removed the moment its last task is gone
 *   cleanup
 * What the daemon alerted is read from its log (each alert is logged as it is made).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cgroupRoot, emit, inUml, nowMs, readKmsg, sleep } from '../in-uml';
import { DaemonProc, enableSubtree, HOG, hex64, mkCgroup, pollFile, readTrim, removeTree, runMain, waitChildLine, writeConfig, type LogLine } from './daemon-util';

const TEST = '/cgwd-test';
/** A discovery root made only after the daemon started (as Docker makes /docker with its first container). */
const LATE = '/cgwd-test-late/docker';
// Joins the cgroup given, then forks until told; a fork past pids.max fails (the shell says so and goes on).
const FORKER = 'echo $$ > "$1/cgroup.procs" || exit 90; echo ready; read go; i=0; while [ $i -lt 20 ]; do sleep 1000 & i=$((i+1)); done; echo done';
const ONE_MORE = 'echo $$ > "$1/cgroup.procs" || exit 90; sleep 1000 & exit 0';

const alertOf = (l: LogLine): Record<string, any> | undefined => (l.alert && typeof l.alert === 'object' ? (l.alert as Record<string, any>) : undefined);

async function main(): Promise<void> {
  if (!inUml()) throw new Error('run this through test/helpers/uml.ts runInUml()');
  const root = cgroupRoot();
  const abs = (rel: string): string => path.join(root, rel);
  const id = hex64();
  const C = `${TEST}/docker/${id}`;
  const sub = `${C}/init.scope`;
  const memId = hex64();
  const M = `${TEST}/docker/${memId}`;
  mkCgroup(root, C);
  enableSubtree(abs(C));
  mkCgroup(root, sub);
  fs.writeFileSync(path.join(abs(sub), 'pids.max'), '5');
  mkCgroup(root, M);
  fs.writeFileSync(path.join(abs(M), 'memory.max'), String(20 * 1024 * 1024));
  fs.mkdirSync('/run/cgwd-state');
  const config = {
    mode: 'enforce',
    logLevel: 'debug',
    paths: { cgroupRoot: root, procRoot: '/proc', kmsg: '/dev/kmsg', stateDir: '/run/cgwd-state' },
    kernel: { manage: false },
    discovery: { roots: [TEST, LATE] },
    detection: { inotify: true, kmsg: true, sweepIntervalMs: 500 },
    alerts: { host: 'uml', repeatIntervalSeconds: 1, resolveAfterSeconds: 3 },
    metrics: { enabled: false },
  };
  const cfg = writeConfig('never-silent', config);
  let d = new DaemonProc(cfg, 'never-silent');
  try {
    // Detection runs (kmsg followed from "now") only after the initial reconcile.
    if (!(await d.waitMsg('detection running', 60_000))) throw new Error(`the daemon did not get ready: ${d.stderr.slice(-1000)}`);

    // --- a discovery root that appears after the start ----------------------------------------
    const lateId = hex64();
    const mkAt = nowMs();
    mkCgroup(root, `${LATE}/${lateId}`);
    const limitedAt = await pollFile(path.join(abs(`${LATE}/${lateId}`), 'pids.max'), (v) => v !== null && v !== 'max', 10_000);
    emit({ check: 'late-root', warned: d.lines.some((l) => l.msg?.startsWith('discovery root does not exist yet') && l.root === LATE), pidsMax: readTrim(path.join(abs(`${LATE}/${lateId}`), 'pids.max')), limitedMs: limitedAt === null ? null : Math.round(limitedAt - mkAt) });

    // --- a fork rejected in the container's sub-cgroup ---------------------------------------
    const sh = spawn('/bin/sh', ['-c', FORKER, 'sh', abs(sub)], { stdio: ['pipe', 'pipe', 'pipe'] });
    await waitChildLine(sh, (l) => l === 'ready', 10_000);
    const go = nowMs();
    sh.stdin.write('go\n');
    const first = await d.wait((l) => alertOf(l)?.kind === 'pids-max', 10_000);
    // More rejections after the first (the kernel logs only a cgroup's first): counted by the counter.
    await sleep(1200);
    for (let i = 0; i < 3; i++) {
      const x = spawn('/bin/sh', ['-c', ONE_MORE, 'sh', abs(sub)], { stdio: 'ignore' });
      await new Promise((r) => x.once('exit', r));
    }
    const update = await d.wait((l) => alertOf(l)?.kind === 'pids-max' && alertOf(l)!.sequence >= 2, 10_000);
    emit({
      check: 'sub-cgroup',
      id,
      sub,
      firstMs: first ? Math.round((first._at as number) - go) : null,
      first: first ? alertOf(first) : null,
      update: update ? alertOf(update) : null,
      subEvents: fs.readFileSync(path.join(abs(sub), 'pids.events'), 'utf8'),
      containerEvents: fs.readFileSync(path.join(abs(C), 'pids.events'), 'utf8'),
      kmsg: readKmsg().filter((k) => /fork rejected/.test(k.message)).map((k) => k.message),
      log: first ? undefined : [...d.lines.filter((l) => l.msg !== 'name lookup failed; the id stays the name').slice(-8).map((l) => `${l.level} ${l.msg} ${JSON.stringify(l.event ?? l.err ?? l.cgroup ?? '')}`), d.stderr.slice(-800), String(d.child.exitCode)],
    });
    sh.kill('SIGKILL');

    // --- SIGHUP while it fires: state kept, the resolution follows with the next sequence ----
    const ofSub = (l: LogLine, state: string): boolean => alertOf(l)?.kind === 'pids-max' && alertOf(l)!.container?.cgroupPath === sub && alertOf(l)!.state === state;
    const lastSeq = (from = 0): number => Math.max(0, ...d.lines.slice(from).filter((l) => ofSub(l, 'firing')).map((l) => alertOf(l)!.sequence as number));
    const firingBefore = lastSeq();
    writeConfig('never-silent', { ...config, alerts: { host: 'uml', repeatIntervalSeconds: 2, resolveAfterSeconds: 2 } });
    d.child.kill('SIGHUP');
    const reloaded = await d.waitMsg('reloaded', 10_000);
    const resolvedAfterReload = await d.wait((l) => ofSub(l, 'resolved'), 20_000);
    emit({ check: 'reload', reloaded: reloaded !== null, firingBefore, lastFiring: resolvedAfterReload ? lastSeq() : null, resolved: resolvedAfterReload ? alertOf(resolvedAfterReload) : null });

    // --- kill -9 while it fires, then a restart: the restored alert resolves -----------------
    const n0 = d.lines.length;
    for (let i = 0; i < 2; i++) {
      const x = spawn('/bin/sh', ['-c', ONE_MORE, 'sh', abs(sub)], { stdio: 'ignore' });
      await new Promise((r) => x.once('exit', r));
    }
    const refired = await d.wait((l) => d.lines.indexOf(l) >= n0 && ofSub(l, 'firing'), 10_000);
    // The alert state is saved within 100 ms of a message (a burst is one write).
    await sleep(300);
    // Of this alert (a new one: the last one resolved above), not of the earlier one.
    const firingSeq = lastSeq(n0);
    d.child.kill('SIGKILL');
    await d.exit;
    d.save();
    d = new DaemonProc(cfg, 'never-silent-restarted');
    // A restart runs the capability probe first: up to 17.6 s in UML under load.
    const restored = await d.waitMsg('alert states restored: firing alerts go on from their sequence numbers', 90_000);
    const resolvedAfterRestart = await d.wait((l) => ofSub(l, 'resolved'), 30_000);
    emit({ check: 'kill9', refired: refired ? alertOf(refired) : null, firingSeq, restored: restored?.alerts ?? null, resolved: resolvedAfterRestart ? alertOf(resolvedAfterRestart) : null });

    // --- an OOM kill whose cgroup is removed the moment it is empty --------------------------
    fs.mkdirSync('/run/bin', { recursive: true });
    fs.symlinkSync(process.execPath, '/run/bin/memhog');
    const hog = spawn('/run/bin/memhog', ['-e', HOG], { stdio: ['pipe', 'pipe', 'pipe'] });
    await waitChildLine(hog, (l) => l === 'ready', 20_000);
    fs.writeFileSync(path.join(abs(M), 'cgroup.procs'), String(hog.pid));
    const procs = path.join(abs(M), 'cgroup.procs');
    // The runtime's clean-up, as fast as it can be (a loop on rmdir, EBUSY until empty).
    const remover = spawn(process.execPath, ['-e', `const fs=require('fs');for(;;){try{if(fs.readFileSync(${JSON.stringify(procs)},'utf8').trim()==='')fs.rmdirSync(${JSON.stringify(abs(M))});}catch(e){if(e.code==='ENOENT')process.exit(0)}}`], { stdio: 'ignore' });
    hog.stdin.write('go\n');
    const killed = await new Promise<string | null>((r) => hog.once('exit', (_c, s) => r(s)));
    await new Promise((r) => remover.once('exit', r));
    const removedAt = nowMs();
    const oom = await d.wait((l) => alertOf(l)?.kind === 'oom-kill', 15_000);
    const resolved = await d.wait((l) => alertOf(l)?.kind === 'oom-kill' && alertOf(l)!.state === 'resolved', 20_000);
    emit({
      check: 'oom-removed',
      memId,
      killed,
      cgroupGone: !fs.existsSync(abs(M)),
      alertAfterRemovalMs: oom ? Math.round((oom._at as number) - removedAt) : null,
      alert: oom ? alertOf(oom) : null,
      resolved: resolved ? alertOf(resolved) : null,
    });
  } finally {
    const stop = await d.stop();
    d.save();
    await removeTree(abs(TEST));
    await removeTree(abs('/cgwd-test-late'));
    emit({ check: 'cleanup', stop, gone: !fs.existsSync(abs(TEST)), exitedEarly: d.child.exitCode !== 0 && d.child.exitCode !== null && !stop.killed ? d.child.exitCode : null });
  }
}

runMain(main, emit);
