import path from 'node:path';
import { allUnchanged, readParsedVia, cgroupDir, parseError, readCgroupFile, readParsed, readSyncParsed, writeCgroupFile } from './files';
import {
  parseCfsQuota,
  parseIdList,
  parseInteger,
  parseLimit,
  parseOomControlKills,
  parsePidsEventsMax,
  parseV1MemoryLimit,
} from './parsers';
import {
  CgroupError,
  type CgroupFs,
  type CgroupLayout,
  type CounterSnapshot,
  type CpuQuota,
  type Limit,
  type MemoryEvents,
  type MemoryUsage,
  type PidsEvents,
  type SyncFileReader,
  type QuickReadHint,
} from './types';

type Controller = 'pids' | 'memory' | 'cpu' | 'cpuset';

/** cgroup v1: one hierarchy per controller, each at its own mount point. */
export class V1CgroupFs implements CgroupFs {
  readonly version = 'v1' as const;
  readonly discoveryRoot: string;

  constructor(readonly layout: CgroupLayout) {
    const pids = layout.v1Mounts.pids;
    if (pids === undefined) throw new CgroupError('no v1 pids hierarchy is mounted: cgwatchdog needs the pids controller', '', 'ENOCONTROLLER');
    this.discoveryRoot = pids;
  }

  private mount(controller: Controller): string {
    const m = this.layout.v1Mounts[controller];
    if (m === undefined) throw new CgroupError(`no v1 ${controller} hierarchy is mounted`, '', 'ENOCONTROLLER');
    return m;
  }

  private has(controller: Controller): boolean {
    return this.layout.v1Mounts[controller] !== undefined;
  }

  dir(controller: Controller, rel: string): string {
    return cgroupDir(this.mount(controller), rel);
  }

  private reader?: SyncFileReader;

  attachReader(reader: SyncFileReader): void {
    this.reader = reader;
  }

  pidsMaxFile(rel: string): string {
    return this.file('pids', rel, 'pids.max');
  }

  private file(controller: Controller, rel: string, name: string): string {
    // dir() is resolved and has no trailing slash: a plain join is enough, and cheap.
    return `${this.dir(controller, rel)}/${name}`;
  }

  // Whether inotify fires on v1 pids.events is the kernel's choice (6.1: yes; 6.18, 7.2: no):
  // the capability probe decides whether it is watched. memory.oom_control notifies through
  // an eventfd only, never inotify.
  eventFiles(rel: string): { pids?: string; memory?: string } {
    return { pids: this.file('pids', rel, 'pids.events') };
  }

  async readPidsMax(rel: string): Promise<Limit | null> {
    return readParsedVia(this.reader, this.file('pids', rel, 'pids.max'), parseLimit);
  }

  async writePidsMax(rel: string, value: number): Promise<'ok' | 'gone'> {
    const file = this.file('pids', rel, 'pids.max');
    if (!Number.isSafeInteger(value) || value < 0) throw new CgroupError(`refusing to write ${value} to ${file}: expected a non-negative integer`, file, 'EINVAL');
    return writeCgroupFile(file, String(value));
  }

  async readPidsCurrent(rel: string): Promise<number | null> {
    // Through the kept-open fds when the daemon runs: the policy reads it for every write that limits.
    return readParsedVia(this.reader, this.file('pids', rel, 'pids.current'), parseInteger);
  }

  async readPidsEvents(rel: string): Promise<PidsEvents | null> {
    const max = await readParsed(this.file('pids', rel, 'pids.events'), parsePidsEventsMax);
    return max === null ? null : { max };
  }

  async readCpuQuota(rel: string, cached = true): Promise<CpuQuota | null> {
    if (!this.has('cpu')) return null;
    const reader = cached ? this.reader : undefined;
    const quotaFile = this.file('cpu', rel, 'cpu.cfs_quota_us');
    const periodFile = this.file('cpu', rel, 'cpu.cfs_period_us');
    const text = (f: string) => (reader ? reader.read(f) : readCgroupFile(f));
    const quota = await text(quotaFile);
    if (quota === null) return null;
    // Unlimited (most containers): the period means nothing, and not opening it saved ~25 µs
    // a container at start (a v1 kernfs open, 6.18).
    if (quota.trim() === '-1') return { quotaUs: 'max', periodUs: 0 };
    const period = await text(periodFile);
    if (period === null) return null;
    try {
      return parseCfsQuota(quota, period);
    } catch (err) {
      throw parseError(path.dirname(quotaFile), err);
    }
  }

  async readCpuset(rel: string): Promise<string | null> {
    if (!this.has('cpuset')) return null;
    for (const name of ['cpuset.effective_cpus', 'cpuset.cpus']) {
      const file = this.file('cpuset', rel, name);
      const text = this.reader ? this.reader.read(file) : await readCgroupFile(file);
      if (text !== null && text.trim() !== '') return text.trim();
    }
    return null;
  }

  async readMemoryEvents(rel: string): Promise<MemoryEvents | null> {
    const [max, oomKill] = await Promise.all([
      readParsed(this.file('memory', rel, 'memory.failcnt'), parseInteger),
      readParsed(this.file('memory', rel, 'memory.oom_control'), parseOomControlKills),
    ]);
    return max === null || oomKill === null ? null : { max, oomKill };
  }

  async readMemoryUsage(rel: string): Promise<MemoryUsage | null> {
    const [usageBytes, limitBytes] = await Promise.all([
      readParsed(this.file('memory', rel, 'memory.usage_in_bytes'), parseInteger),
      readParsed(this.file('memory', rel, 'memory.limit_in_bytes'), parseV1MemoryLimit),
    ]);
    if (usageBytes === null || limitBytes === null) return null;
    return { usageBytes, limitBytes };
  }

  async readTasks(rel: string): Promise<number[] | null> {
    return readParsed(this.file('pids', rel, 'tasks'), parseIdList);
  }

  policyInputFiles(rel: string): string[] {
    const out: string[] = [];
    if (this.has('cpu')) out.push(this.file('cpu', rel, 'cpu.cfs_quota_us'), this.file('cpu', rel, 'cpu.cfs_period_us'));
    if (this.has('cpuset')) out.push(this.file('cpuset', rel, 'cpuset.cpus'));
    return out;
  }

  counterFiles(rel: string): string[] {
    const out = ['pids.events', 'pids.current', 'pids.max'].map((f) => this.file('pids', rel, f));
    if (this.has('memory')) out.push(...['memory.failcnt', 'memory.oom_control', 'memory.usage_in_bytes', 'memory.limit_in_bytes'].map((f) => this.file('memory', rel, f)));
    if (this.has('cpu')) out.push(this.file('cpu', rel, 'cpu.cfs_quota_us'), this.file('cpu', rel, 'cpu.cfs_period_us'));
    if (this.has('cpuset')) out.push(this.file('cpuset', rel, 'cpuset.effective_cpus'), this.file('cpuset', rel, 'cpuset.cpus'));
    return out;
  }

  readCountersSync(rel: string, reader: SyncFileReader, hint?: QuickReadHint): CounterSnapshot | null {
    const prev = hint?.prev;
    if (prev?.pids && (prev.memory || !this.has('memory'))) {
      const files = [this.file('pids', rel, 'pids.events')];
      if (this.has('memory') && !hint?.memoryUnlimited) files.push(this.file('memory', rel, 'memory.failcnt'));
      if (allUnchanged(reader, files)) return prev;
    }
    const snap: CounterSnapshot = {};
    const pidsMax = readSyncParsed(reader, this.file('pids', rel, 'pids.events'), parsePidsEventsMax);
    if (pidsMax !== null) snap.pids = { max: pidsMax };
    // A container can be missing from one v1 hierarchy (a runtime that skips memory): read what is there.
    if (this.has('memory') && hint?.memoryUnlimited && prev?.memory && snap.pids) {
      // failcnt counts hits of this cgroup's own limit, and there is none.
      snap.memory = prev.memory;
    } else if (this.has('memory')) {
      const failcnt = readSyncParsed(reader, this.file('memory', rel, 'memory.failcnt'), parseInteger);
      // An OOM kill by this cgroup's own limit follows failed charges, which count in failcnt:
      // unchanged failcnt, unchanged oom_kill. (A kill by an ancestor's limit does not move
      // it: /dev/kmsg reports those, and callers make a full read now and then.)
      const skip = failcnt !== null && prev?.memory !== undefined && prev.memory.max === failcnt;
      const oomKill = failcnt === null ? null : skip ? prev!.memory!.oomKill : readSyncParsed(reader, this.file('memory', rel, 'memory.oom_control'), parseOomControlKills);
      if (failcnt !== null && oomKill !== null) snap.memory = { max: failcnt, oomKill };
    }
    return snap.pids === undefined && snap.memory === undefined ? null : snap;
  }

  readPidsCurrentSync(rel: string, reader: SyncFileReader): { current: number; max: Limit } | null {
    const current = readSyncParsed(reader, this.file('pids', rel, 'pids.current'), parseInteger);
    const max = current === null ? null : readSyncParsed(reader, this.file('pids', rel, 'pids.max'), parseLimit);
    return current === null || max === null ? null : { current, max };
  }

  readMemoryUsageSync(rel: string, reader: SyncFileReader): MemoryUsage | null {
    if (!this.has('memory')) return null;
    const usageBytes = readSyncParsed(reader, this.file('memory', rel, 'memory.usage_in_bytes'), parseInteger);
    const limitBytes = usageBytes === null ? null : readSyncParsed(reader, this.file('memory', rel, 'memory.limit_in_bytes'), parseV1MemoryLimit);
    return usageBytes === null || limitBytes === null ? null : { usageBytes, limitBytes };
  }

  readPidsCurrentOnlySync(rel: string, reader: SyncFileReader): number | null {
    return readSyncParsed(reader, this.file('pids', rel, 'pids.current'), parseInteger);
  }

  readMemoryUsageOnlySync(rel: string, reader: SyncFileReader): number | null {
    return this.has('memory') ? readSyncParsed(reader, this.file('memory', rel, 'memory.usage_in_bytes'), parseInteger) : null;
  }
}
