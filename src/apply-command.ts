import type { Config } from './config/schema';
import type { Container } from './discovery/container';
import { walkCgroups } from './discovery/walk';
import { setupHost, type HostSetup } from './host-setup';
import { hostPidsReport, type HostPids } from './kernel/host-report';
import { raisePidMax, readPidMax } from './kernel/sysctl';
import { limitOrigin, readRecord, type LimitOrigin } from './hook/records';
import type { ApplyResult } from './policy/apply';
import { applyAll } from './policy/reconcile';
import { WrittenStore } from './policy/written-store';

export interface ApplyReport {
  ok: boolean;
  mode: Config['mode'];
  dryRun: boolean;
  cgroupVersion: string;
  layout: string;
  hostCores: number;
  /** Our cgroup namespace as seen at start (a blind one stops the command before this report). */
  cgroupNamespace: HostSetup['cgroupNamespace'];
  /**
   * Each container's result, with its directory in every controller hierarchy, where its limit
   * came from (an OCI hook at creation, the daemon afterwards, the runtime's own) and what the
   * hook did, if one ran.
   */
  containers: (ApplyResult & { cgroupDirs: Record<string, string>; limitOrigin?: LimitOrigin; hook?: { stage: string; action: string; value?: number | 'max'; at: string; failed?: boolean } })[];
  /** How many containers had their limit from their creation (a hook), only afterwards (the daemon), or from their runtime. */
  limitOrigins: Record<LimitOrigin, number>;
  pidMax: { before: number | null; target: number; after: number | null; changed: boolean; note?: string; error?: string };
  host: HostPids;
  problems: string[];
}

/** One reconcile pass for `cgwatchdog apply`: find every container, apply (or compute) the policy, raise pid_max. */
export async function runApply(config: Config, opts: { dryRun: boolean }): Promise<ApplyReport> {
  const host = await setupHost(config);
  const writes = config.mode === 'enforce' && !opts.dryRun;
  if (writes && host.problems.length > 0) throw new Error(host.problems.join('; '));
  const effective: Config = writes ? config : { ...config, mode: 'observe' };

  const pidMax: ApplyReport['pidMax'] = { before: null, target: config.kernel.pidMax, after: null, changed: false };
  try {
    if (writes && config.kernel.manage) {
      const r = await raisePidMax({ procRoot: config.paths.procRoot, target: config.kernel.pidMax, persist: config.kernel.persist, dropInPath: config.kernel.dropInPath });
      Object.assign(pidMax, { before: r.before, after: r.after, changed: r.changed, note: r.note });
    } else {
      pidMax.before = pidMax.after = await readPidMax(config.paths.procRoot);
    }
  } catch (err) {
    pidMax.error = (err as Error).message;
  }

  const found = [];
  for (const root of config.discovery.roots) {
    found.push(...(await walkCgroups(host.cgroups.discoveryRoot, [root], config.discovery.maxDepth, host.recognisers)).containers);
  }
  const now = Date.now();
  const containers: Container[] = found.map((f) => ({ ...f, seenAt: now, seenHr: process.hrtime.bigint() }));
  const written = new WrittenStore(config.paths.stateDir);
  const noWriteReason = opts.dryRun ? 'dry run' : config.mode === 'observe' ? 'observe mode' : undefined;
  const hooks = new Map(containers.map((c) => [c.cgroupPath, readRecord(config.paths.stateDir, c.cgroupPath)]));
  const hookValue = (p: string): number | undefined => {
    const r = hooks.get(p);
    return r?.wrote && typeof r.value === 'number' ? r.value : undefined;
  };
  const wroteBefore = new Set(written.keys());
  const results = await applyAll({ cgroups: host.cgroups, config: effective, hostCores: host.hostCores, written, noWriteReason, hookValue }, containers);
  if (writes) written.flush();
  const limitOrigins: Record<LimitOrigin, number> = { creation: 0, daemon: 0, runtime: 0 };
  const reported = results.map((r) => {
    const h = hooks.get(r.cgroupPath);
    const origin = limitOrigin(h, r, wroteBefore.has(r.cgroupPath));
    if (origin) limitOrigins[origin]++;
    return {
      ...r,
      cgroupDirs: controllerDirs(host.cgroups, r.cgroupPath),
      ...(origin ? { limitOrigin: origin } : {}),
      ...(h ? { hook: { stage: h.stage, action: h.action, value: h.value, at: new Date(h.at).toISOString(), ...(h.failed ? { failed: true } : {}) } } : {}),
    };
  });
  const hostReport = await hostPidsReport(config.paths.procRoot, results.map((r) => r.newPidsMax));
  return {
    ok: pidMax.error === undefined && results.every((r) => r.action !== 'error'),
    mode: config.mode,
    dryRun: opts.dryRun,
    cgroupVersion: host.cgroups.version,
    layout: host.cgroups.layout.mode,
    hostCores: host.hostCores,
    cgroupNamespace: host.cgroupNamespace,
    containers: reported,
    limitOrigins,
    pidMax,
    host: hostReport,
    problems: host.problems,
  };
}

function controllerDirs(cgroups: HostSetup['cgroups'], rel: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of ['pids', 'memory', 'cpu', 'cpuset'] as const) {
    try {
      out[c] = cgroups.dir(c, rel);
    } catch {
      // That controller is not mounted here.
    }
  }
  return out;
}

const short = (id: string) => (/^[0-9a-f]{64}$/.test(id) ? id.slice(0, 12) : id);

export function formatApply(r: ApplyReport): string {
  const verb = r.mode === 'observe' || r.dryRun ? 'would set' : 'set';
  const lines: string[] = [];
  lines.push(`cgroup ${r.cgroupVersion} (${r.layout} layout), host cores ${r.hostCores}, mode ${r.mode}${r.dryRun ? ' (dry run)' : ''}`);
  if (r.cgroupNamespace.kind === 'translated') lines.push(`private cgroup namespace, its root in the host hierarchies: ${r.cgroupNamespace.hierarchies.map((h) => `${h.mountPoint} ${h.nsRoot}`).join(', ')}`);
  for (const p of r.problems) lines.push(`warning: ${p}`);
  lines.push('');
  const rows = r.containers.map((c) => [
    short(c.id),
    c.runtime,
    c.cgroupPath,
    c.cores === undefined ? '-' : `${c.cores} (${c.coresDetail})`,
    c.policyValue == null ? '-' : String(c.policyValue),
    `${c.oldPidsMax ?? '-'} -> ${c.newPidsMax ?? '-'}`,
    c.action === 'set' && !c.written ? verb : c.action,
    c.limitOrigin === 'creation' ? `creation (${c.hook?.stage})` : (c.limitOrigin ?? '-'),
    c.reason,
  ]);
  const head = ['ID', 'RUNTIME', 'CGROUP', 'CORES', 'POLICY', 'PIDS.MAX', 'ACTION', 'LIMIT FROM', 'WHY'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const fmt = (row: string[]) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ');
  lines.push(fmt(head));
  for (const row of rows) lines.push(fmt(row));
  if (rows.length === 0) lines.push('(no containers found)');
  const o = r.limitOrigins;
  if (rows.length > 0) lines.push(`limits: ${o.creation} from creation (OCI hook / Docker wrapper), ${o.daemon} only afterwards (cgwatchdog after the start), ${o.runtime} the runtime's own`);
  lines.push('');
  const pm = r.pidMax;
  if (pm.error) lines.push(`kernel.pid_max: error: ${pm.error}`);
  else lines.push(`kernel.pid_max: ${pm.before}${pm.changed ? ` -> ${pm.after}` : ''} (target ${pm.target}${pm.before !== null && pm.before < pm.target && !pm.changed ? ', not raised in this mode' : ''})${pm.note ? `; ${pm.note}` : ''}`);
  const h = r.host;
  lines.push(`host: ${h.tasks ?? '?'} tasks, kernel.threads-max ${h.threadsMax ?? '?'}, containers' pids.max sum ${h.sumContainersPidsMax} = ${h.overcommit ?? '?'} x pid_max`);
  return `${lines.join('\n')}\n`;
}
