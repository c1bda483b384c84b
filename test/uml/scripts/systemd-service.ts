/**
 * Runs inside user-mode Linux with systemd as PID 1 (see test/uml/systemd-service.test.ts): the
 * package installed as an operator would (npm install -g --offline from the tarball the host
 * packed, then `cgwatchdog install-service`), and the daemon under its real unit and sandbox,
 * with rootful podman on the systemd cgroup manager (machine.slice/libpod-<id>.scope). The
 * config is the one install-service writes (the commented defaults), with a webhook sink added
 * afterwards and `systemctl reload`, as an operator does it.
 * Phases (one `emit` each): setup, install, service, operator (the sink, reload, test-alert),
 * exposure, policy, daemon-reload, bomb (with a `systemctl reload` while it fires, then
 * `cgwatchdog status`), oom (and status again), journal, stop, uninstall, cleanup.
 */
import { execFile, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { emit, inUml, nowMs, outDir, readKeyed, sleep } from '../in-uml';
import { pick, pollFile, readTrim, receiver, runMain, type LogLine, type Received } from './daemon-util';
import { IMAGE, setupPodman } from './podman-v2';

const CG = '/sys/fs/cgroup';
const UNIT = 'cgwatchdog.service';
const CONFIG = '/etc/cgwatchdog/config.yaml';
const BIN = '/usr/local/bin/cgwatchdog';
/** See cri-systemd-v2.ts: systemd's DefaultTasksMax is sized from threads-max; a 64 GiB node's. */
const THREADS_MAX = '524288';
/** How long pids.max is polled after `systemctl daemon-reload` began (it takes 2-4 s here). */
const RELOAD_WATCH_MS = 14_000;
const PID_MAX_START = '32768';
/** The default config's kernel.pidMax. */
const PID_MAX_TARGET = 4194304;
const BOMB_LIMIT = 20;
const BOMB = 'while :; do sh -c "while :; do sleep 1000 & done"; sleep 1; done';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function run(bin: string, args: string[], timeoutMs = 60_000, env?: NodeJS.ProcessEnv): Run {
  const t0 = nowMs();
  const r = spawnSync(bin, args, { encoding: 'utf8', timeout: timeoutMs, env: env ?? process.env, maxBuffer: 64 * 1024 * 1024 });
  return { status: r.status, stdout: (r.stdout ?? '').trim(), stderr: (r.stderr ?? '').trim() || (r.error?.message ?? ''), ms: Math.round(nowMs() - t0) };
}

function must(bin: string, args: string[], what: string, timeoutMs?: number, env?: NodeJS.ProcessEnv): Run {
  const r = run(bin, args, timeoutMs, env);
  if (r.status !== 0) throw new Error(`${what}: ${bin} ${args.join(' ')}: exit ${r.status}: ${(r.stderr || r.stdout).slice(-1200)}`);
  return r;
}

/**
 * run() without blocking this process: the webhook receiver lives in it, and the daemon's
 * deliveries (test-alert's too) must be answered while the command runs.
 */
function runAsync(bin: string, args: string[], timeoutMs = 60_000): Promise<Run> {
  const t0 = nowMs();
  return new Promise((resolve) => {
    execFile(bin, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ status: code, stdout: stdout.trim(), stderr: stderr.trim() || (err && code === null ? err.message : ''), ms: Math.round(nowMs() - t0) });
    });
  });
}

async function mustAsync(bin: string, args: string[], what: string, timeoutMs?: number): Promise<Run> {
  const r = await runAsync(bin, args, timeoutMs);
  if (r.status !== 0) throw new Error(`${what}: ${bin} ${args.join(' ')}: exit ${r.status}: ${(r.stderr || r.stdout).slice(-1200)}`);
  return r;
}

/** `cgwatchdog status --json` of the running daemon, parsed (null when it did not answer). */
async function statusJson(): Promise<{ run: Run; report: Record<string, any> | null }> {
  const r = await runAsync(BIN, ['status', '--json']);
  let report: Record<string, any> | null = null;
  try {
    report = r.status === 0 ? (JSON.parse(r.stdout) as Record<string, any>) : null;
  } catch {
    /* reported as null with its output */
  }
  return { run: { ...r, stdout: report ? '' : r.stdout.slice(0, 2000) }, report };
}

/** `cgwatchdog status --watch --json` until it printed `n` lines, then SIGTERM. */
function watchFrames(n: number, timeoutMs: number): Promise<{ lines: string[]; ms: number; signal: string | null; stderr: string }> {
  const t0 = nowMs();
  return new Promise((resolve) => {
    const child = spawn(BIN, ['status', '--watch', '--json', '--interval', '0.5'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let ms = 0;
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs);
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.split('\n').length > n && !child.killed) {
        ms = Math.round(nowMs() - t0);
        child.kill('SIGTERM');
      }
    });
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.once('exit', (_code, signal) => {
      clearTimeout(timer);
      resolve({ lines: out.split('\n').filter((l) => l !== ''), ms: ms || Math.round(nowMs() - t0), signal, stderr: err.trim() });
    });
  });
}

/** A status report for the results: the sinks with their counts only. */
function brief(report: Record<string, any> | null): Record<string, any> | null {
  if (!report) return null;
  return { daemon: report.daemon, health: report.health, host: report.host, alerts: { ...report.alerts, sinks: report.alerts?.sinks?.map((x: Record<string, unknown>) => ({ name: x.name, type: x.type, delivered: x.delivered, depth: x.depth, lastError: x.lastError })) }, containers: report.containers };
}

function unitProps(unit: string, props: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of run('/bin/systemctl', ['show', ...props.flatMap((p) => ['-p', p]), ...(unit ? [unit] : [])]).stdout.split('\n')) {
    const eq = l.indexOf('=');
    if (eq > 0) out[l.slice(0, eq)] = l.slice(eq + 1);
  }
  return out;
}

interface JournalEntry {
  fields: Record<string, unknown>;
  line: LogLine | null;
}

/** The unit's journal (-o json), each entry with its MESSAGE parsed when it is the daemon's JSON line. */
function journal(): JournalEntry[] {
  const r = run('/bin/journalctl', ['-u', UNIT, '-o', 'json', '--no-pager', '--output-fields=MESSAGE,PRIORITY,_PID,_SYSTEMD_UNIT,_SYSTEMD_INVOCATION_ID,SYSLOG_IDENTIFIER,_COMM,__REALTIME_TIMESTAMP']);
  const out: JournalEntry[] = [];
  for (const raw of r.stdout.split('\n')) {
    if (!raw.trim()) continue;
    let fields: Record<string, unknown>;
    try {
      fields = JSON.parse(raw) as Record<string, unknown>;
    } catch {
      continue;
    }
    let line: LogLine | null = null;
    if (typeof fields.MESSAGE === 'string' && fields.MESSAGE.startsWith('{')) {
      try {
        line = JSON.parse(fields.MESSAGE) as LogLine;
      } catch {
        /* a line of systemd's own */
      }
    }
    out.push({ fields, line });
  }
  return out;
}

const lines = (): LogLine[] => journal().flatMap((e) => (e.line ? [e.line] : []));

/** The first line `want` takes, or with `skip` the first after that many such lines. */
async function waitLine(want: (l: LogLine) => boolean, timeoutMs: number, skip = 0, everyMs = 250): Promise<LogLine | null> {
  for (const end = nowMs() + timeoutMs; ; await sleep(everyMs)) {
    const l = lines().filter(want)[skip];
    if (l) return l;
    if (nowMs() > end) return null;
  }
}

function mountTmpfs(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  must('/bin/mount', ['-t', 'tmpfs', '-o', 'mode=755', 'tmpfs', dir], `tmpfs on ${dir}`);
}

const alertsOf = (rx: { got: Received[] }, kind: string, id: string): Received[] => rx.got.filter((r) => r.body?.kind === kind && r.body?.container?.id === id);

async function main(): Promise<void> {
  if (!inUml()) throw new Error('run this through test/helpers/uml.ts runInUml({ systemd: true })');
  const tBoot = nowMs();
  const tarball = process.argv[2];
  if (!tarball || !fs.existsSync(tarball)) throw new Error(`no tarball at ${tarball} (the host packs it into the output directory)`);

  // --- setup: a writable view of what an install writes, podman on systemd's cgroups ------------
  const before = {
    pid1: readTrim('/proc/1/comm'),
    pidMax: readTrim('/proc/sys/kernel/pid_max'),
    pidMaxSet: PID_MAX_START,
    threadsMax: readTrim('/proc/sys/kernel/threads-max'),
    defaultTasksMax: unitProps('', ['DefaultTasksMax']).DefaultTasksMax ?? null,
    seccomp: (readTrim('/proc/self/status') ?? '').includes('Seccomp:'),
  };
  fs.writeFileSync('/proc/sys/kernel/threads-max', THREADS_MAX);
  // systemd's 50-pid-max.conf already raised pid_max to the 64-bit ceiling (4194304) at boot:
  // back to the kernel's own default, as on a node without it, so the daemon has a job to do.
  fs.writeFileSync('/proc/sys/kernel/pid_max', PID_MAX_START);
  // The root is the host's, read-only. /etc: a copy (3.4 MB here) bound over it, so the unit
  // dir, /etc/cgwatchdog (absent on the host: no mount point for a tmpfs of its own) and
  // /etc/containers are writable. /usr/local: npm's global prefix. /var/lib: StateDirectory=.
  // /tmp: PrivateTmp= makes its directories there.
  const tSetup = nowMs();
  const etc = '/run/etc-rw';
  fs.mkdirSync(etc);
  must('/bin/cp', ['-a', '/etc/.', etc], 'copy /etc');
  must('/bin/mount', ['--bind', etc, '/etc'], 'bind the /etc copy');
  for (const d of ['/usr/local', '/var/lib', '/tmp']) mountTmpfs(d);
  fs.mkdirSync('/usr/local/bin');
  fs.mkdirSync('/usr/local/lib');
  must('/bin/systemctl', ['start', 'dbus.socket', 'dbus.service'], 'the system bus (podman\'s systemd cgroup manager)');
  setupPodman({ cgroupManager: 'systemd', graphRoot: '/var/lib/containers/storage' });
  const setupMs = Math.round(nowMs() - tSetup);
  emit({
    check: 'setup',
    before,
    setupMs,
    systemd: run('/bin/systemctl', ['--version']).stdout.split('\n')[0],
    podman: run('/usr/bin/podman', ['version', '--format', '{{.Client.Version}}']).stdout,
    dbus: unitProps('dbus.service', ['ActiveState']).ActiveState,
    defaultTasksMax: unitProps('', ['DefaultTasksMax']).DefaultTasksMax,
    bootToSetupMs: Math.round(nowMs() - tBoot),
  });

  // --- install: npm install -g --offline, then install-service ---------------------------------
  // An unreachable registry and an empty cache: only the tarball's bundled packages can be used.
  // --prefix /usr/local: Debian's npm has /usr as its global prefix, read-only here.
  // npm writes ~3,300 files, each a few ptrace'd syscalls and page faults in UML: 50-76 s idle,
  // over 150 s in one CI run.
  const npmEnv = { ...process.env, HOME: '/run', npm_config_registry: 'http://127.0.0.1:9/', npm_config_cache: '/run/npm-cache', npm_config_update_notifier: 'false' };
  const tInstall = nowMs();
  const npm = must('/usr/bin/npm', ['install', '-g', '--offline', '--prefix', '/usr/local', '--no-audit', '--no-fund', '--loglevel=error', tarball], 'npm install -g --offline', 330_000, npmEnv);
  const installed = fs.realpathSync(BIN);
  const pidMaxTarget = PID_MAX_TARGET;
  // No config yet, as on a new node: install-service writes the commented defaults, and the
  // daemon starts on them (no sink yet; the operator adds one below).
  const configBefore = fs.existsSync(CONFIG);
  const tService = nowMs();
  const svc = must(BIN, ['install-service'], 'cgwatchdog install-service', 60_000);
  const installServiceMs = Math.round(nowMs() - tService);
  const active = run('/bin/systemctl', ['is-active', UNIT]);
  const configText = fs.readFileSync(CONFIG, 'utf8');
  emit({
    check: 'install',
    npmMs: npm.ms,
    npmOut: npm.stdout.slice(-300),
    installed,
    installServiceMs,
    installServiceOut: svc.stdout,
    installServiceErr: svc.stderr,
    isActive: active.stdout,
    unitFile: readTrim(`/etc/systemd/system/${UNIT}`)?.split('\n').filter((l) => /^(ExecStart|Documentation)=|^# /.test(l)).slice(0, 4),
    config: { before: configBefore, mode: (fs.statSync(CONFIG).mode & 0o777).toString(8), firstLine: configText.split('\n')[0], noSinks: /^ {2}sinks: \[\]$/m.test(configText), commentLines: configText.split('\n').filter((l) => /^\s*#/.test(l)).length },
  });

  // --- the service: ready, under its sandbox; pid_max raised; /dev/kmsg read --------------------
  const ready = await waitLine((l) => l.msg === 'detection running', 90_000);
  const readyMs = Math.round(nowMs() - tService);
  const svcProps = unitProps(UNIT, ['MainPID', 'ActiveState', 'SubState', 'ExecMainStartTimestampMonotonic', 'ControlGroup', 'FragmentPath', 'ExecStart']);
  const status = readTrim(`/proc/${svcProps.MainPID}/status`) ?? '';
  const field = (k: string): string | null => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? null;
  const pidMaxLine = lines().find((l) => l.msg === 'raised kernel.pid_max' || l.msg === 'kernel.pid_max already at or above target' || l.msg === 'cannot raise kernel.pid_max');
  const caps = lines().find((l) => l.msg?.startsWith('kernel signals measured'));
  const kmsgFd = (() => {
    try {
      return fs.readdirSync(`/proc/${svcProps.MainPID}/fd`).some((fd) => readLink(`/proc/${svcProps.MainPID}/fd/${fd}`) === '/dev/kmsg') || childReadsKmsg(Number(svcProps.MainPID));
    } catch {
      return null;
    }
  })();
  emit({
    check: 'service',
    readyMs,
    ready: pick(ready),
    unit: svcProps,
    cmdline: readTrim(`/proc/${svcProps.MainPID}/cmdline`)?.split('\0').filter(Boolean).join(' '),
    sandbox: { capEff: field('CapEff'), capBnd: field('CapBnd'), noNewPrivs: field('NoNewPrivs'), seccomp: field('Seccomp'), mountNs: readLink(`/proc/${svcProps.MainPID}/ns/mnt`) !== readLink('/proc/1/ns/mnt') },
    pidMax: readTrim('/proc/sys/kernel/pid_max'),
    pidMaxTarget,
    pidMaxLine: pick(pidMaxLine),
    capabilities: pick(caps),
    kmsgOpen: kmsgFd,
    problems: lines().filter((l) => (l.level ?? 0) >= 40).map(pick),
  });
  if (!ready) throw new Error(`the service did not get ready: ${run('/bin/journalctl', ['-u', UNIT, '--no-pager', '-n', '30']).stdout.slice(-3000)}`);

  const rx = await receiver();
  const isReloaded = (l: LogLine): boolean => l.msg === 'reloaded';
  try {
    // --- the operator adds a webhook sink to the written config, reloads, sends a test alert ------
    const tEdit = nowMs();
    const sink = ['  sinks:', '    - type: webhook', `      url: ${rx.url}`].join('\n');
    const edited = configText.replace(/^ {2}sinks: \[\]$/m, sink);
    if (edited === configText) throw new Error(`no "  sinks: []" line in the config install-service wrote:\n${configText.slice(0, 3000)}`);
    fs.writeFileSync(CONFIG, edited);
    const reloadsBefore = lines().filter(isReloaded).length;
    const sinkReload = await runAsync('/bin/systemctl', ['reload', UNIT]);
    const sinkReloaded = await waitLine(isReloaded, 20_000, reloadsBefore);
    const reloadedMs = Math.round(nowMs() - tEdit);
    const tTest = nowMs();
    const testAlert = await runAsync(BIN, ['test-alert'], 60_000);
    const testGot = await rx.waitFor((r) => r.body?.kind === 'test', 15_000);
    emit({
      check: 'operator',
      reload: { status: sinkReload.status, stderr: sinkReload.stderr, ms: sinkReload.ms },
      reloaded: pick(sinkReloaded),
      reloadedMs,
      configMode: (fs.statSync(CONFIG).mode & 0o777).toString(8),
      testAlert: { status: testAlert.status, stdout: testAlert.stdout, stderr: testAlert.stderr, ms: testAlert.ms },
      testReceived: testGot ? { ms: Math.round(testGot.at - tTest), kind: testGot.body?.kind, host: testGot.body?.host, summary: testGot.body?.summary } : null,
    });
    if (!sinkReloaded) throw new Error(`the daemon did not log "reloaded" after systemctl reload: ${JSON.stringify(sinkReload)}`);

    // --- the loaded unit's exposure, as systemd itself rates the running service -------------------
    const sec = await runAsync('/usr/bin/systemd-analyze', ['security', '--no-pager', UNIT], 120_000);
    const score = /Overall exposure level for cgwatchdog\.service: (\d+(?:\.\d+)?) (\S+)/.exec(sec.stdout);
    emit({ check: 'exposure', status: sec.status, ms: sec.ms, score: score ? Number(score[1]) : null, verdict: score?.[2] ?? null, stderr: sec.stderr, tail: sec.stdout.split('\n').slice(-3) });

    // --- policy: a podman container with no pids limit of its own ---------------------------------
    const tRun = nowMs();
    const policy = must('/usr/bin/podman', ['run', '-d', '--name', 'cgwd-svc-policy', '--pids-limit', '0', IMAGE, 'sleep', '100000'], 'podman run (policy)').stdout.split('\n').pop()!;
    const rel = `/machine.slice/libpod-${policy}.scope`;
    const scopeUnit = `libpod-${policy}.scope`;
    const want = '6144';
    const reached = await pollFile(path.join(CG, rel, 'pids.max'), (v) => v === want, 15_000, 2);
    const written = await waitLine((l) => l.msg === 'pids.max set' && l.id === policy, 10_000);
    emit({
      check: 'policy',
      id: policy,
      rel,
      runMs: Math.round(nowMs() - tRun),
      reachedMs: reached === null ? null : Math.round(reached - tRun),
      pidsMax: readTrim(path.join(CG, rel, 'pids.max')),
      procCgroup: readTrim(`/proc/${run('/usr/bin/podman', ['inspect', '--format', '{{.State.Pid}}', policy]).stdout}/cgroup`),
      scope: unitProps(scopeUnit, ['TasksMax', 'TasksAccounting', 'Slice', 'ControlGroup']),
      written: pick(written),
      found: pick(lines().find((l) => l.msg === 'container found' && l.id === policy)),
    });
    if (reached === null) throw new Error(`pids.max of ${rel} is ${readTrim(path.join(CG, rel, 'pids.max'))}, not ${want}`);

    // --- daemon-reload: systemd re-applies the scope's TasksMax; how long until the policy is back --
    const isPolicyWrite = (l: LogLine): boolean => l.msg === 'pids.max set' && l.id === policy;
    const nWrites = lines().filter(isPolicyWrite).length;
    const wallReload = Date.now();
    const tReload = nowMs();
    // Asynchronous: systemd rewrites pids.max while systemctl waits, and the daemon may undo it
    // before systemctl returns; pids.max is polled meanwhile.
    const reloadChild = spawn('/bin/systemctl', ['daemon-reload'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let reloadErr = '';
    reloadChild.stderr.on('data', (c: Buffer) => (reloadErr += c.toString()));
    let reloadMs: number | null = null;
    const reloadExit = new Promise<number | null>((resolve) => reloadChild.once('exit', (code) => {
      reloadMs = Math.round(nowMs() - tReload);
      resolve(code);
    }));
    const seen: { v: string | null; ms: number }[] = [];
    let restoredAt: number | null = null;
    let changedAt: number | null = null;
    let changed = false;
    let pollGapMs = 0;
    let lastPoll = nowMs();
    for (const end = tReload + RELOAD_WATCH_MS; nowMs() < end; await sleep(1)) {
      const v = readTrim(path.join(CG, rel, 'pids.max'));
      pollGapMs = Math.max(pollGapMs, nowMs() - lastPoll);
      lastPoll = nowMs();
      if (seen.length === 0 || seen[seen.length - 1]!.v !== v) seen.push({ v, ms: Math.round((nowMs() - tReload) * 10) / 10 });
      if (v !== want && !changed) {
        changed = true;
        changedAt = nowMs();
      }
      if (changed && v === want && restoredAt === null) restoredAt = nowMs();
      if (restoredAt !== null && reloadMs !== null) break;
    }
    const reload = { status: await reloadExit, stderr: reloadErr.trim() };
    await sleep(300);
    const writeLines = lines().filter(isPolicyWrite).slice(nWrites);
    const writes = writeLines.map((l) => ({ old: l.old, new: l.new, why: l.why, ms: typeof l.time === 'string' ? Date.parse(l.time) - wallReload : null }));
    emit({
      check: 'daemon-reload',
      status: reload.status,
      stderr: reload.stderr,
      reloadMs,
      seen,
      // The reload's systemctl returns after systemd has rewritten the attributes: measured from its start.
      changed: changed || writes.some((w) => String(w.old) !== want),
      restoredMs: restoredAt === null ? null : Math.round(restoredAt - tReload),
      // systemd's write (first seen by the 1 ms poll) to the policy value back: the daemon's part.
      systemdWriteMs: changedAt === null ? null : Math.round(changedAt - tReload),
      pollGapMs: Math.round(pollGapMs * 10) / 10,
      repairMs: restoredAt === null || changedAt === null ? null : Math.round((restoredAt - changedAt) * 10) / 10,
      // The daemon's own write, by its log line's wall-clock time (ms resolution): a restore
      // faster than this poll could see is still measured.
      writeMs: writes.find((w) => w.new === Number(want))?.ms ?? null,
      scopeTasksMax: unitProps(scopeUnit, ['TasksMax']).TasksMax,
      writes,
      // The reconcile repairs it too, but at most this often: the inotify watch is what is timed.
      reconcileSchedule: /^ {2}reconcileSchedule: "(.*)"$/m.exec(configText)?.[1] ?? null,
    });

    // --- the bomb, and a `systemctl reload` while its alert fires ---------------------------------
    const bomb = (await mustAsync('/usr/bin/podman', ['run', '-d', '--name', 'cgwd-svc-bomb', '--pids-limit', String(BOMB_LIMIT), IMAGE, 'sh', '-c', BOMB], 'podman run (bomb)')).stdout.split('\n').pop()!;
    const bombRel = `/machine.slice/libpod-${bomb}.scope`;
    const tBomb = nowMs();
    const hitAt = await pollFile(path.join(CG, bombRel, 'pids.events'), (s) => /\bmax [1-9]/.test(s ?? ''), 20_000, 2);
    const firing = hitAt === null ? null : await rx.waitFor((r) => r.body?.kind === 'pids-max' && r.body?.container?.id === bomb && r.body?.state === 'firing', 15_000);
    const reloadsBeforeBomb = lines().filter(isReloaded).length;
    const reloadSvc = await runAsync('/bin/systemctl', ['reload', UNIT]);
    const reloaded = await waitLine(isReloaded, 10_000, reloadsBeforeBomb);
    // Hits go on (about one a second) for a while after the reload, then the bomb is removed.
    await sleep(4000);
    const eventsAfter = readKeyed(path.join(CG, bombRel, 'pids.events'));
    const pidsMaxBomb = readTrim(path.join(CG, bombRel, 'pids.max'));

    // --- `cgwatchdog status` under the bomb: what an operator reaches for first -------------------
    // The bomb's shells come and go (one dies at each refused fork, and the loop starts another):
    // pids.current dips below the limit for moments, so a few reports are taken for one at it.
    const samples: Record<string, unknown>[] = [];
    let underBomb: Record<string, any> | null = null;
    for (let k = 0; k < 6 && !underBomb; k++) {
      const got = await statusJson();
      const row = (got.report?.containers as Record<string, any>[] | undefined)?.find((c) => c.id === bomb);
      samples.push({ ms: got.run.ms, status: got.run.status, stderr: got.run.stderr || undefined, out: got.run.stdout || undefined, current: row?.pidsCurrent, max: row?.pidsMax, first: got.report?.containers?.[0]?.id === bomb });
      if (row && row.pidsCurrent === row.pidsMax) underBomb = got.report;
      else if (k === 5) underBomb = got.report;
    }
    const bombView = await runAsync(BIN, ['status']);
    const watch = await watchFrames(2, 30_000);
    emit({
      check: 'status-bomb',
      samples,
      report: brief(underBomb),
      text: { status: bombView.status, ms: bombView.ms, stdout: bombView.stdout, stderr: bombView.stderr },
      watch: {
        ms: watch.ms,
        signal: watch.signal,
        stderr: watch.stderr,
        frames: watch.lines.map((l) => {
          try {
            const o = JSON.parse(l) as Record<string, any>;
            return { version: o.version, at: o.at, containers: o.containers?.length, bombFirst: o.containers?.[0]?.id === bomb };
          } catch {
            return { unparsable: l.slice(0, 200) };
          }
        }),
      },
    });

    const tRm = nowMs();
    await runAsync('/usr/bin/podman', ['rm', '-f', '-t', '0', bomb]);
    const resolved = await rx.waitFor((r) => r.body?.kind === 'pids-max' && r.body?.container?.id === bomb && r.body?.state === 'resolved', 20_000);
    const msgs = alertsOf(rx, 'pids-max', bomb);
    emit({
      check: 'bomb',
      id: bomb,
      rel: bombRel,
      pidsMax: pidsMaxBomb,
      hitMs: hitAt === null ? null : Math.round(hitAt - tBomb),
      alertMs: firing && hitAt !== null ? Math.round(firing.at - hitAt) : null,
      // The first alert of the install: from podman run's return, and from npm install's start.
      firstAlertMs: firing ? Math.round(firing.at - tBomb) : null,
      firstAlertFromInstallMs: firing ? Math.round(firing.at - tInstall) : null,
      firing: firing?.body ?? null,
      reload: { status: reloadSvc.status, stderr: reloadSvc.stderr, ms: reloadSvc.ms, line: pick(reloaded), firingAtReload: firing !== null },
      eventsAfter,
      resolvedMs: resolved ? Math.round(resolved.at - tRm) : null,
      messages: msgs.map((r) => ({ state: r.body?.state, fingerprint: r.body?.fingerprint, sequence: r.body?.sequence, at: Math.round(r.at - tBomb), key: r.idempotencyKey })),
    });

    // --- an OOM kill ------------------------------------------------------------------------------
    const tOom = nowMs();
    // The shell survives dd's kill, so the scope (and its memory.events) stays to be read.
    const oomRun = await runAsync('/usr/bin/podman', ['run', '-d', '--name', 'cgwd-svc-oom', '-m', '32m', '--memory-swap', '32m', IMAGE, 'sh', '-c', '/bin/dd if=/dev/zero of=/dev/null bs=64M count=1; echo "dd exit $?"; exec sleep 100000']);
    const oomId = oomRun.stdout.split('\n').pop() ?? '';
    const oom = await rx.waitFor((r) => r.body?.kind === 'oom-kill' && (!oomId || r.body?.container?.id === oomId), 20_000);
    emit({ check: 'oom', id: oomId, runStatus: oomRun.status, alertMs: oom ? Math.round(oom.at - tOom) : null, alert: oom?.body ?? null, events: oomId ? readKeyed(path.join(CG, `/machine.slice/libpod-${oomId}.scope`, 'memory.events')) : null, alerts: rx.got.map((r) => ({ kind: r.body?.kind, state: r.body?.state, id: r.body?.container?.id })).slice(0, 12) });

    // --- status after the OOM kill: its row, and the bomb's departed one with its hits --------------
    let afterOom: Awaited<ReturnType<typeof statusJson>> | null = null;
    for (let k = 0; k < 3; k++) {
      afterOom = await statusJson();
      const row = (afterOom.report?.containers as Record<string, any>[] | undefined)?.find((c) => c.id === oomId);
      if (row && row.oomKills >= 1) break;
      await sleep(500);
    }
    const oomView = await runAsync(BIN, ['status']);
    emit({ check: 'status-oom', run: afterOom?.run ?? null, report: brief(afterOom?.report ?? null), text: { status: oomView.status, ms: oomView.ms, stdout: oomView.stdout, stderr: oomView.stderr } });

    // --- the journal: the daemon's fields, per entry ----------------------------------------------
    const j = journal();
    const alertEntries = j.filter((e) => e.line?.alert && typeof e.line.alert === 'object');
    const ofKind = (kind: string, id: string) => alertEntries.find((e) => (e.line!.alert as Record<string, any>).kind === kind && (e.line!.alert as Record<string, any>).container?.id === id);
    const pe = ofKind('pids-max', bomb);
    const oe = oomId ? ofKind('oom-kill', oomId) : undefined;
    emit({
      check: 'journal',
      entries: j.length,
      daemonLines: j.filter((e) => e.line).length,
      otherLines: j.filter((e) => !e.line).map((e) => e.fields.MESSAGE).slice(0, 8),
      pidsEntry: pe ? { journal: { ...pe.fields, MESSAGE: undefined }, line: { msg: pe.line!.msg, level: pe.line!.level, alert: pe.line!.alert } } : null,
      oomEntry: oe ? { journal: { ...oe.fields, MESSAGE: undefined }, line: { msg: oe.line!.msg, level: oe.line!.level, alert: oe.line!.alert } } : null,
    });
  } finally {
    // --- stop, uninstall, clean-up -----------------------------------------------------------------
    const problems: string[] = [];
    const rmAll = run('/usr/bin/podman', ['rm', '-a', '-f', '-t', '0']);
    if (rmAll.status !== 0) problems.push(`podman rm -a: ${rmAll.stderr}`);
    const pidBefore = unitProps(UNIT, ['MainPID']).MainPID;
    const tStop = nowMs();
    const stop = run('/bin/systemctl', ['stop', UNIT], 30_000);
    const stopMs = Math.round(nowMs() - tStop);
    const after = unitProps(UNIT, ['ActiveState', 'Result', 'ExecMainCode', 'ExecMainStatus', 'TimeoutStopUSec']);
    const all = lines();
    const stoppingLines = all.filter((l) => l.msg === 'stopping' || l.msg === 'stopped' || l.msg === 'stop failed').map(pick);
    // Every warning and error the daemon logged from its start to its stop, but the alerts
    // (a firing alert is a warn line carrying the alert).
    const warnings = all.filter((l) => (l.level ?? 0) >= 40 && !l.alert).map(pick);
    emit({ check: 'stop', status: stop.status, stderr: stop.stderr, stopMs, mainPid: pidBefore, pidGone: !fs.existsSync(`/proc/${pidBefore}`), after, lines: stoppingLines, warnings });

    const tUn = nowMs();
    const un = run(BIN, ['install-service', '--uninstall'], 60_000);
    emit({
      check: 'uninstall',
      status: un.status,
      out: un.stdout,
      err: un.stderr,
      ms: Math.round(nowMs() - tUn),
      unitLeft: fs.existsSync(`/etc/systemd/system/${UNIT}`),
      wantsLeft: fs.existsSync(`/etc/systemd/system/multi-user.target.wants/${UNIT}`),
      load: unitProps(UNIT, ['LoadState', 'ActiveState']),
      configLeft: fs.existsSync(CONFIG),
    });
    const scopesLeft = run('/bin/systemctl', ['list-units', '--all', '--no-legend', '--plain', 'libpod-*']).stdout;
    const containersLeft = run('/usr/bin/podman', ['ps', '-aq']).stdout;
    await rx.close();
    emit({ check: 'cleanup', problems, scopesLeft, containersLeft, bootToEndMs: Math.round(nowMs() - tBoot) });
    fs.writeFileSync(path.join(outDir(), 'journal-cgwatchdog.txt'), run('/bin/journalctl', ['-u', UNIT, '--no-pager', '-o', 'cat']).stdout);
  }
}

function readLink(p: string): string | null {
  try {
    return fs.readlinkSync(p);
  } catch {
    return null;
  }
}

/** The daemon may read /dev/kmsg through a child (the kmsg reader): look in its children's fds too. */
function childReadsKmsg(pid: number): boolean {
  for (const ent of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    const stat = readTrim(`/proc/${ent}/stat`);
    if (!stat) continue;
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid !== pid) continue;
    try {
      if (fs.readdirSync(`/proc/${ent}/fd`).some((fd) => readLink(`/proc/${ent}/fd/${fd}`) === '/dev/kmsg')) return true;
    } catch {
      /* gone */
    }
  }
  return false;
}

runMain(main, emit);
