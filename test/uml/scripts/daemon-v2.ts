/**
 * Runs inside user-mode Linux (see test/uml/daemon-v2.test.ts): the real cgwatchdog CLI
 * (`apply` and `run`) against a real cgroup v2 tree. Emits one result per phase:
 *   setup, apply-dry-run, daemon-start, new-containers, settle, drift, churn, removal, daemon-stop,
 *   observe-apply, observe-daemon, cleanup.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cgroupRoot, emit, inUml, nowMs, sleep } from '../in-uml';
import { DaemonProc, hex64, mkCgroup, pick, pollFile, readTrim, removeTree, runApplyCli, runMain, writeConfig } from './daemon-util';

const TEST = '/cgwd-test';
const PID_MAX = '/proc/sys/kernel/pid_max';

function baseConfig(mode: 'enforce' | 'observe'): Record<string, unknown> {
  return {
    mode,
    logLevel: 'debug',
    paths: { cgroupRoot: cgroupRoot(), procRoot: '/proc', kmsg: '/dev/kmsg', stateDir: `/run/cgwd-state-${mode}` },
    // The UML kernel's own pid_max: harmless to raise, and a real write of the sysctl.
    kernel: { manage: true, pidMax: 4194304, persist: false },
    policy: { existing: 'keep-lower' },
    discovery: { roots: [TEST], reconcileSchedule: '*/2 * * * * *' },
    metrics: { enabled: false },
  };
}


async function main(): Promise<void> {
  if (!inUml()) throw new Error('run this through test/helpers/uml.ts runInUml()');
  const root = cgroupRoot();
  const abs = (rel: string): string => path.join(root, rel);
  const pidsMax = (rel: string): string | null => readTrim(path.join(abs(rel), 'pids.max'));

  // --- 1. the tree, before any daemon runs -----------------------------------------------
  const podUid = crypto.randomUUID();
  const c = {
    docker2: `${TEST}/docker/${hex64()}`, // cpu.max 2 CPUs -> 6144
    k8s16: `${TEST}/kubepods/burstable/pod${podUid}/${hex64()}`, // 16 CPUs -> 16384
    unlimitedCpu: `${TEST}/docker/${hex64()}`, // cpu.max "max" -> host cores -> 6144
    lower: `${TEST}/docker/${hex64()}`, // pids.max 1000 already: kept
    podLimit8: `${TEST}/kubepods/burstable/pod${crypto.randomUUID()}/${hex64()}`, // no quota of its own; its pod's 8 CPUs -> 8192
  };
  const notContainer = `${TEST}/docker/not-a-container`;
  for (const rel of [...Object.values(c), notContainer]) mkCgroup(root, rel);
  // system.slice exists before the daemon (as on any systemd host); its scopes come later.
  mkCgroup(root, `${TEST}/system.slice/x`);
  fs.rmdirSync(abs(`${TEST}/system.slice/x`));
  fs.writeFileSync(path.join(abs(c.docker2), 'cpu.max'), '200000 100000');
  fs.writeFileSync(path.join(abs(c.k8s16), 'cpu.max'), '1600000 100000');
  fs.writeFileSync(path.join(abs(c.lower), 'cpu.max'), '200000 100000');
  fs.writeFileSync(path.join(abs(c.lower), 'pids.max'), '1000');
  fs.writeFileSync(path.join(abs(path.dirname(c.podLimit8)), 'cpu.max'), '800000 100000');
  fs.mkdirSync('/run/cgwd-state-enforce');
  fs.mkdirSync('/run/cgwd-state-observe');
  const snapshot = (): Record<string, string | null> => Object.fromEntries(Object.entries(c).map(([k, rel]) => [k, pidsMax(rel)]));
  emit({
    check: 'setup',
    containers: c,
    podUid,
    nprocs: os.cpus().length,
    subtreeControl: readTrim(path.join(abs(TEST), 'cgroup.subtree_control')),
    cpuMax: Object.fromEntries(Object.entries(c).map(([k, rel]) => [k, readTrim(path.join(abs(rel), 'cpu.max'))])),
    pidsMax: snapshot(),
    pidMax: readTrim(PID_MAX),
  });

  // --- 2. apply --dry-run: a report, nothing written ---------------------------------------
  const enforceFile = writeConfig('cgwd-enforce', baseConfig('enforce'));
  const pidMaxBefore = readTrim(PID_MAX);
  const dry = runApplyCli(enforceFile, ['--dry-run']);
  emit({ check: 'apply-dry-run', status: dry.status, ms: Math.round(dry.ms), stderr: dry.stderr, report: dry.report, pidsMaxAfter: snapshot(), pidMaxBefore, pidMaxAfter: readTrim(PID_MAX) });

  // --- 3. the daemon in enforce mode -------------------------------------------------------
  const t0 = nowMs();
  const d = new DaemonProc(enforceFile, 'enforce');
  const ready = await d.waitMsg('initial reconcile done', 60_000);
  const readyMs = nowMs() - t0;
  emit({
    check: 'daemon-start',
    ready: pick(ready),
    readyMs: Math.round(readyMs),
    starting: pick(d.lines.find((l) => l.msg === 'starting')),
    pidMaxLine: pick(d.lines.find((l) => typeof l.msg === 'string' && l.msg.includes('kernel.pid_max'))),
    pidMax: readTrim(PID_MAX),
    pidsMax: snapshot(),
    set: d.lines.filter((l) => l.msg === 'pids.max set').map(pick),
    found: d.lines.filter((l) => l.msg === 'container found').map((l) => l.cgroup),
    stderr: d.stderr,
  });
  if (!ready) {
    d.save();
    await d.stop();
    throw new Error(`the daemon did not get ready; stderr: ${d.stderr.slice(-2000)}`);
  }

  /** Container cgroups this script removed while the daemon ran, and when. */
  const removedAt = new Map<string, number>();

  // --- 4. containers created while it runs: creation -> pids.max --------------------------
  const created: Record<string, unknown>[] = [];
  const newContainer = async (name: string, make: () => string): Promise<void> => {
    const t = nowMs();
    const rel = make();
    const seenAt = await pollFile(path.join(abs(rel), 'pids.max'), (v) => v !== null && v !== 'max', 5000);
    const logged = await d.waitMsg('creation to pids.max written', 5000, (l) => l.cgroup === rel);
    const set = await d.waitMsg('pids.max set', 1000, (l) => l.cgroup === rel);
    created.push({
      name,
      rel,
      pidsMax: pidsMax(rel),
      /** mkdir (script) -> pids.max seen changed, polling every 1 ms */
      measuredMs: seenAt === null ? null : seenAt - t,
      /** the daemon's own inotify -> written */
      loggedLatencyMs: logged?.latencyMs ?? null,
      set: pick(set),
    });
  };
  // systemd driver: docker-<id>.scope in an existing system.slice.
  await newContainer('scope', () => {
    const rel = `${TEST}/system.slice/docker-${hex64()}.scope`;
    fs.mkdirSync(abs(rel));
    return rel;
  });
  // Kubernetes: a new pod directory, then its container at once (the daemon must not miss it
  // while it starts watching the pod directory).
  const pod2 = crypto.randomUUID();
  await newContainer('pod', () => {
    const pod = `${TEST}/kubepods/burstable/pod${pod2}`;
    fs.mkdirSync(abs(pod));
    fs.writeFileSync(path.join(abs(pod), 'cgroup.subtree_control'), '+pids +memory +cpu');
    const rel = `${pod}/${hex64()}`;
    fs.mkdirSync(abs(rel));
    return rel;
  });
  // Five more plain Docker ones, one after another, for a latency spread.
  for (let i = 0; i < 5; i++) {
    await newContainer(`docker-${i}`, () => {
      const rel = `${TEST}/docker/${hex64()}`;
      fs.mkdirSync(abs(rel));
      return rel;
    });
  }
  emit({ check: 'new-containers', created });

  // --- 5. a runtime that writes its CPU quota just after mkdir (docker run --cpus 8) -------
  {
    const rel = `${TEST}/docker/${hex64()}`;
    const t = nowMs();
    fs.mkdirSync(abs(rel));
    const first = await pollFile(path.join(abs(rel), 'pids.max'), (v) => v !== null && v !== 'max', 5000);
    const firstValue = pidsMax(rel);
    fs.writeFileSync(path.join(abs(rel), 'cpu.max'), '800000 100000');
    const quotaAt = nowMs();
    // The daemon re-checks a new container for a while after creation (settle), and a full
    // reconcile runs every 2 s here: 4.5 s covers both.
    const final = await pollFile(path.join(abs(rel), 'pids.max'), (v) => v === '8192', 4500, 10);
    emit({
      check: 'settle',
      rel,
      firstValue,
      firstMs: first === null ? null : first - t,
      quotaWrittenMs: quotaAt - t,
      finalValue: pidsMax(rel),
      reached8192Ms: final === null ? null : final - t,
      lines: d.lines.filter((l) => l.cgroup === rel).map(pick),
    });
  }

  // --- 6. drift: limits rewritten by hand, repaired by the 2-second reconcile --------------
  {
    const before = d.lines.length;
    const t = nowMs();
    fs.writeFileSync(path.join(abs(c.docker2), 'pids.max'), 'max');
    fs.writeFileSync(path.join(abs(c.k8s16), 'pids.max'), '99999');
    fs.writeFileSync(path.join(abs(c.unlimitedCpu), 'pids.max'), '500'); // lower: kept
    const [a, b] = await Promise.all([
      pollFile(path.join(abs(c.docker2), 'pids.max'), (v) => v === '6144', 8000, 5),
      pollFile(path.join(abs(c.k8s16), 'pids.max'), (v) => v === '16384', 8000, 5),
    ]);
    // One more full reconcile after the repair, to see the lowered one kept.
    const n0 = d.lines.filter((l, i) => i >= before && l.msg === 'reconcile done').length;
    await d.wait((l) => l.msg === 'reconcile done' && d.lines.filter((x, i) => i >= before && x.msg === 'reconcile done').length > n0, 8000);
    emit({
      check: 'drift',
      unlimitedRepairedMs: a === null ? null : a - t,
      higherRepairedMs: b === null ? null : b - t,
      pidsMax: snapshot(),
      reconciles: d.lines.filter((l, i) => i >= before && l.msg === 'reconcile done').length,
      set: d.lines.filter((l, i) => i >= before && l.msg === 'pids.max set').map(pick),
    });
  }

  // --- 7. churn: containers keep appearing across reconciles; none may be dropped ----------
  {
    const before = d.lines.length;
    const rels: string[] = [];
    const t = nowMs();
    // One every 50 ms for 3 s: at least one 2-second reconcile walks the tree meanwhile.
    while (nowMs() - t < 3000) {
      const rel = `${TEST}/docker/${hex64()}`;
      fs.mkdirSync(abs(rel));
      rels.push(rel);
      await sleep(50);
    }
    // Then one more full reconcile.
    const n0 = d.lines.filter((l, i) => i >= before && l.msg === 'reconcile done').length;
    await d.wait((l) => l.msg === 'reconcile done' && d.lines.filter((x, i) => i >= before && x.msg === 'reconcile done').length > n0, 8000);
    const mine = new Set(rels);
    const after = d.lines.slice(before);
    const found = new Map<string, number>();
    for (const l of after) if (l.msg === 'container found' && mine.has(l.cgroup)) found.set(l.cgroup, (found.get(l.cgroup) ?? 0) + 1);
    emit({
      check: 'churn',
      created: rels.length,
      reconciles: after.filter((l) => l.msg === 'reconcile done').length,
      notSet: rels.filter((r) => pidsMax(r) !== String(Math.max(os.cpus().length, 6) * 1024)).map((r) => [r, pidsMax(r)]),
      goneLines: after.filter((l) => l.msg === 'container gone' && mine.has(l.cgroup)).map(pick),
      foundTwice: [...found].filter(([, n]) => n > 1),
      // The lines around each spurious "container gone", for the report.
      context: after
        .filter((l) => mine.has(l.cgroup) && after.some((g) => g.msg === 'container gone' && g.cgroup === l.cgroup))
        .slice(0, 12)
        .map(pick),
    });
  }

  // --- 8. a container removed -----------------------------------------------------------
  {
    const scope = created.find((x) => x.name === 'scope')?.rel as string;
    const t = nowMs();
    const from = d.lines.length;
    removedAt.set(scope, t);
    fs.rmdirSync(abs(scope));
    const gone = await d.wait((l) => l.msg === 'container gone' && l.cgroup === scope && d.lines.indexOf(l) >= from, 10_000);
    // inotify on the parent sees the rmdir in milliseconds (the ms are reported); the 10 s only
    // bound a loaded node, where UML's system calls crawl.
    emit({ check: 'removal', rel: scope, gone: pick(gone), ms: gone ? gone._at - t : null });
  }

  // --- 9. stop ----------------------------------------------------------------------------
  const stopped = await d.stop();
  d.save();
  emit({
    check: 'daemon-stop',
    ...stopped,
    stopping: pick(d.lines.find((l) => l.msg === 'stopping')),
    problems: d.problems().map(pick),
    // "container gone" for a cgroup that still existed then, with the lines before it.
    spuriousGone: d.lines
      .map((l, i) => ({ l, i }))
      .filter(({ l }) => l.msg === 'container gone' && !(removedAt.has(l.cgroup) && l._at >= removedAt.get(l.cgroup)!))
      .map(({ l, i }) => ({ line: pick(l), before: d.lines.slice(Math.max(0, i - 8), i).map(pick) })),
    nonJson: d.other,
    stderr: d.stderr,
    lines: d.lines.length,
  });

  // --- 10. observe mode: apply (no --dry-run) and a daemon; nothing is written ---------------
  fs.writeFileSync(PID_MAX, '32768');
  fs.writeFileSync(path.join(abs(c.docker2), 'pids.max'), 'max');
  const observeFile = writeConfig('cgwd-observe', baseConfig('observe'));
  {
    const before = snapshot();
    const r = runApplyCli(observeFile, []);
    emit({ check: 'observe-apply', status: r.status, ms: Math.round(r.ms), stderr: r.stderr, report: r.report, before, after: snapshot(), pidMax: readTrim(PID_MAX) });
  }
  {
    const before = snapshot();
    const o = new DaemonProc(observeFile, 'observe');
    const oready = await o.waitMsg('initial reconcile done', 60_000);
    const rel = `${TEST}/docker/${hex64()}`;
    const t = nowMs();
    fs.mkdirSync(abs(rel));
    const found = await o.waitMsg('container found', 3000, (l) => l.cgroup === rel);
    // Past the first settle re-check and a full reconcile.
    await sleep(300);
    const start = o.lines.length;
    const rec = await o.wait((l) => l.msg === 'reconcile done' && o.lines.indexOf(l) >= start, 8000);
    const newValue = pidsMax(rel);
    const stoppedObs = await o.stop();
    o.save();
    emit({
      check: 'observe-daemon',
      ready: oready !== null,
      foundMs: found ? found._at - t : null,
      reconciledAfter: rec !== null,
      before,
      after: snapshot(),
      newContainer: newValue,
      pidMax: readTrim(PID_MAX),
      written: o.lines.filter((l) => l.msg === 'pids.max set').map(pick),
      wouldSet: o.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('observe mode')).map((l) => l.cgroup),
      problems: o.problems().map(pick),
      stop: stoppedObs,
    });
  }

  // --- 11. clean up -------------------------------------------------------------------------
  await removeTree(abs(TEST));
  emit({ check: 'cleanup', gone: !fs.existsSync(abs(TEST)) });
}

runMain(main, emit);
