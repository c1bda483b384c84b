/**
 * Runs inside user-mode Linux (see test/uml/cgroupns-v2.test.ts): the real cgwatchdog CLI in a
 * private cgroup namespace on cgroup v2, launched from a cgroup of its own (/cgwd-test/agent).
 * Emits: setup, own-mount (unshare --cgroup --mount and a fresh cgroup2 mount: must stop),
 * unshare (unshare --cgroup with the init namespace's /run/cg still mounted: must translate,
 * enforce and attribute), cleanup.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cgroupRoot, emit, inUml, nowMs, sleep } from '../in-uml';
import { CLI, hex64, mkCgroup, pollFile, readTrim, removeTree, runMain, writeConfig, type LogLine } from './daemon-util';

const TEST = '/cgwd-test';
const AGENT = `${TEST}/agent`;
const UNSHARE = '/usr/bin/unshare';
const PERL_BOMB = ['-e', 'for (;;) { my $p = fork(); next unless defined $p; if ($p == 0) { exec "sleep", "100"; } }'];
/** Join the cgroup whose cgroup.procs is $1, then run the rest: a fixed script, paths as arguments. */
const JOIN_THEN_EXEC = 'echo $$ > "$1" || exit 97; shift; exec "$@"';
/** What a runtime does for cgroupns=private: its own cgroup2 over the inherited mount (a tmpfs between: the same superblock cannot be mounted twice on one mount point). */
const OWN_CGROUPFS = 'mount -t tmpfs cgwd-ns "$1" && mount -t cgroup2 cgwd-ns "$1" || exit 96; shift; exec "$@"';

interface Proc {
  child: ChildProcess;
  lines: LogLine[];
  out(): string;
  err(): string;
  wait(pred: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine | null>;
  exit: Promise<{ code: number | null; signal: string | null }>;
}

/** `cmd` started in `cgroupRel` (joined before exec), its JSON stdout lines collected. */
function startIn(cgroupRel: string, cmd: string[]): Proc {
  const child = spawn('/bin/sh', ['-c', JOIN_THEN_EXEC, 'sh', path.join(cgroupRoot(), cgroupRel, 'cgroup.procs'), ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: LogLine[] = [];
  let out = '';
  let err = '';
  let buf = '';
  child.stdout!.on('data', (b: Buffer) => {
    out += b.toString();
    buf += b.toString();
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    for (const raw of parts) {
      try {
        lines.push(JSON.parse(raw) as LogLine);
      } catch {
        /* not a log line */
      }
    }
  });
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const wait = async (pred: (l: LogLine) => boolean, timeoutMs: number): Promise<LogLine | null> => {
    const end = nowMs() + timeoutMs;
    for (;;) {
      const l = lines.find(pred);
      if (l) return l;
      if (nowMs() > end || child.exitCode !== null || child.signalCode !== null) return lines.find(pred) ?? null;
      await sleep(10);
    }
  };
  return { child, lines, out: () => out, err: () => err, wait, exit };
}

async function runIn(cgroupRel: string, cmd: string[], timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const t0 = nowMs();
  const p = startIn(cgroupRel, cmd);
  const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
  const { code } = await p.exit;
  clearTimeout(timer);
  return { code, stdout: p.out(), stderr: p.err(), ms: Math.round(nowMs() - t0) };
}

async function stop(p: Proc): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), 5000);
  await p.exit;
  clearTimeout(t);
}

const FACTS = 'cat /proc/self/cgroup; grep " /run/cg " /proc/self/mountinfo; readlink /proc/self/ns/cgroup; ls "$0"';

async function main(): Promise<void> {
  if (!inUml()) throw new Error('run this through test/helpers/uml.ts runInUml()');
  const root = cgroupRoot();
  const id = hex64();
  const container = `${TEST}/docker/${id}`;
  mkCgroup(root, AGENT);
  mkCgroup(root, container);
  const pidsMaxFile = path.join(root, container, 'pids.max');
  const port = 19391;
  const cfg = writeConfig('cgwd-ns', {
    mode: 'enforce',
    logLevel: 'debug',
    paths: { cgroupRoot: root, procRoot: '/proc', kmsg: '/dev/kmsg', stateDir: '/run/cgwd-state-ns' },
    kernel: { manage: false },
    discovery: { roots: [TEST] },
    policy: { overrides: [{ pathPattern: `^${TEST}/docker/`, pidsMax: 20 }] },
    alerts: { repeatIntervalSeconds: 2 },
    names: { podmanBinary: '' },
    metrics: { listen: `127.0.0.1:${port}` },
  });
  fs.mkdirSync('/run/cgwd-state-ns');
  const node = process.execPath;
  emit({ check: 'setup', container, pidsMax: readTrim(pidsMaxFile), unshare: fs.existsSync(UNSHARE), perl: fs.existsSync('/usr/bin/perl') });

  let daemon: Proc | undefined;
  let bomb: ChildProcess | undefined;
  try {
    // --- a private namespace with its own cgroup2: stop with one sentence ------------------
    const ownNs = (cmd: string[]): string[] => [UNSHARE, '--cgroup', '--mount', '/bin/sh', '-c', OWN_CGROUPFS, 'sh', root, ...cmd];
    const ownFacts = await runIn(AGENT, ownNs(['/bin/sh', '-c', FACTS, root]));
    const ownRun = await runIn(AGENT, ownNs([node, CLI, 'run', '--config', cfg]));
    const ownApply = await runIn(AGENT, ownNs([node, CLI, 'apply', '--dry-run', '--config', cfg]));
    emit({ check: 'own-mount', facts: ownFacts, run: ownRun, apply: ownApply, pidsMaxAfter: readTrim(pidsMaxFile), mountinfoAfter: fs.readFileSync('/proc/self/mountinfo', 'utf8') });

    // --- a private namespace under the inherited whole-hierarchy mount: translate ---------
    const facts = await runIn(AGENT, [UNSHARE, '--cgroup', '/bin/sh', '-c', FACTS, root]);
    const t0 = nowMs();
    daemon = startIn(AGENT, [UNSHARE, '--cgroup', node, CLI, 'run', '--config', cfg]);
    // The capability probe runs before 'starting': seconds in UML, 17 s once under load.
    const starting = await daemon.wait((l) => l.msg === 'starting', 60_000);
    const running = await daemon.wait((l) => l.msg === 'detection running', 60_000);
    const readyMs = Math.round(nowMs() - t0);
    const caps = daemon.lines.find((l) => l.msg === 'kernel signals measured: the sources follow them')?.capabilities;
    const nsLine = daemon.lines.find((l) => /private cgroup namespace/.test(l.msg ?? ''));
    const setAt = await pollFile(pidsMaxFile, (s) => s === '20', 10_000);
    let metric: string | null = null;
    try {
      metric = (await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).split('\n').find((l) => l.includes('capability="host_cgroup_namespace"')) ?? null;
    } catch (e) {
      metric = `scrape failed: ${(e as Error).message}`;
    }

    const b = spawn('/bin/sh', ['-c', JOIN_THEN_EXEC, 'sh', path.join(root, container, 'cgroup.procs'), '/usr/bin/perl', ...PERL_BOMB], { stdio: 'ignore' });
    bomb = b;
    const bombAt = nowMs();
    const alert = await daemon.wait((l) => l.alert?.kind === 'pids-max', 15_000);
    const alertMs = alert ? Math.round(nowMs() - bombAt) : null;
    const events = daemon.lines.filter((l) => l.msg === 'limit event' && l.event?.kind === 'pids-max').map((l) => l.event);
    const seen = await runIn(AGENT, [UNSHARE, '--cgroup', '/bin/cat', `/proc/${b.pid}/cgroup`]);
    // The bomb has done its part: left running it starves UML (every fork a ptrace round
    // trip), and apply once took more than 30 s beside it (CI, 7.2).
    b.kill('SIGKILL');
    const apply = await runIn(AGENT, [UNSHARE, '--cgroup', node, CLI, 'apply', '--dry-run', '--json', '--config', cfg], 90_000);
    let report: unknown = null;
    try {
      report = JSON.parse(apply.stdout);
    } catch {
      report = { unparsable: apply.stdout.slice(0, 2000) };
    }
    emit({
      check: 'unshare', facts, readyMs, verdict: starting?.cgroupNamespace ?? null, running: running !== null, caps, nsRoots: nsLine?.nsRoots ?? null,
      pidsMaxSet: setAt !== null, metric, alert: alert?.alert ?? null, alertMs, events, bombPid: b.pid, seen: seen.stdout,
      apply: { code: apply.code, stderr: apply.stderr, cgroupNamespace: (report as { cgroupNamespace?: unknown })?.cgroupNamespace ?? null, containers: (report as { containers?: { cgroupPath: string }[] })?.containers?.map((c) => c.cgroupPath) ?? null },
      problems: daemon.lines.filter((l) => (l.level ?? 0) >= 50), stderr: daemon.err(),
    });
  } finally {
    if (daemon) await stop(daemon);
    bomb?.kill('SIGKILL');
    await removeTree(path.join(root, TEST));
    emit({ check: 'cleanup', gone: !fs.existsSync(path.join(root, TEST)) });
  }
}

runMain(main, emit);
