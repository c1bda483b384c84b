import fs from 'node:fs';
import path from 'node:path';
import { allUnchanged, readParsedVia, cgroupDir, readCgroupFile, readParsed, readSyncParsed, writeCgroupFile } from './files';
import { parseCpuMax, parseIdList, parseInteger, parseLimit, parseMemoryEvents, parsePidsEventsMax } from './parsers';
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

/** cgroup v2: one hierarchy; every controller's files sit in the same directory. */
export class V2CgroupFs implements CgroupFs {
  readonly version = 'v2' as const;
  readonly discoveryRoot: string;
  /** Whether this kernel has pids.events.local (>= 6.11); learnt on the first sweep read. */
  private localEvents: boolean | undefined;
  /** memory.events.local exists (5.2+): learnt at the first read, like pids.events.local. */
  private memoryLocalEvents: boolean | undefined;

  constructor(readonly layout: CgroupLayout) {
    if (layout.v2Mount === undefined) throw new CgroupError('no cgroup2 hierarchy is mounted', '', 'ENOCONTROLLER');
    this.discoveryRoot = layout.v2Mount;
  }

  dir(_controller: Controller, rel: string): string {
    return cgroupDir(this.discoveryRoot, rel);
  }

  private reader?: SyncFileReader;

  attachReader(reader: SyncFileReader): void {
    this.reader = reader;
  }

  pidsMaxFile(rel: string): string {
    return this.file(rel, 'pids.max');
  }

  private file(rel: string, name: string): string {
    // cgroupDir() is resolved and has no trailing slash: a plain join is enough, and cheap.
    return `${cgroupDir(this.discoveryRoot, rel)}/${name}`;
  }

  eventFiles(rel: string): { pids?: string; memory?: string } {
    return { pids: this.file(rel, 'pids.events'), memory: this.file(rel, 'memory.events') };
  }

  async readPidsMax(rel: string): Promise<Limit | null> {
    return readParsedVia(this.reader, this.file(rel, 'pids.max'), parseLimit);
  }

  async writePidsMax(rel: string, value: number): Promise<'ok' | 'gone'> {
    const file = this.file(rel, 'pids.max');
    if (!Number.isSafeInteger(value) || value < 0) throw new CgroupError(`refusing to write ${value} to ${file}: expected a non-negative integer`, file, 'EINVAL');
    return writeCgroupFile(file, String(value));
  }

  async readPidsCurrent(rel: string): Promise<number | null> {
    // Through the kept-open fds when the daemon runs: the policy reads it for every write that limits.
    return readParsedVia(this.reader, this.file(rel, 'pids.current'), parseInteger);
  }

  async readPidsEvents(rel: string): Promise<PidsEvents | null> {
    const max = await readParsed(this.file(rel, 'pids.events'), parsePidsEventsMax);
    if (max === null) return null;
    // Linux 6.11 made pids.events hierarchical and added pids.events.local; older kernels lack it.
    const localMax = await readParsed(this.file(rel, 'pids.events.local'), parsePidsEventsMax);
    return localMax === null ? { max } : { max, localMax };
  }

  async readCpuQuota(rel: string, cached = true): Promise<CpuQuota | null> {
    return readParsedVia(cached ? this.reader : undefined, this.file(rel, 'cpu.max'), parseCpuMax);
  }

  async readCpuset(rel: string): Promise<string | null> {
    for (const name of ['cpuset.cpus.effective', 'cpuset.cpus']) {
      const file = this.file(rel, name);
      const text = this.reader ? this.reader.read(file) : await readCgroupFile(file);
      if (text !== null && text.trim() !== '') return text.trim();
    }
    return null;
  }

  async readMemoryEvents(rel: string): Promise<MemoryEvents | null> {
    return readParsed(this.file(rel, 'memory.events'), parseMemoryEvents);
  }

  async readMemoryUsage(rel: string): Promise<MemoryUsage | null> {
    const [usageBytes, limitBytes] = await Promise.all([
      readParsed(this.file(rel, 'memory.current'), parseInteger),
      readParsed(this.file(rel, 'memory.max'), parseLimit),
    ]);
    if (usageBytes === null || limitBytes === null) return null;
    return { usageBytes, limitBytes };
  }

  async readTasks(rel: string): Promise<number[] | null> {
    return readParsed(this.file(rel, 'cgroup.threads'), parseIdList);
  }

  policyInputFiles(rel: string): string[] {
    return ['cpu.max', 'cpuset.cpus'].map((f) => this.file(rel, f));
  }

  counterFiles(rel: string): string[] {
    return ['pids.events', 'pids.events.local', 'memory.events', 'memory.events.local', 'pids.current', 'pids.max', 'memory.current', 'memory.max', 'cpu.max', 'cpuset.cpus.effective', 'cpuset.cpus'].map((f) => this.file(rel, f));
  }

  readCountersSync(rel: string, reader: SyncFileReader, hint?: QuickReadHint): CounterSnapshot | null {
    const prev = hint?.prev;
    if (prev?.pids && prev.memory && !hint?.only) {
      const files = [this.file(rel, 'pids.events'), this.file(rel, 'memory.events')];
      if (prev.pids.localMax !== undefined) files.push(this.file(rel, 'pids.events.local'));
      if (allUnchanged(reader, files)) return prev;
    }
    const snap: CounterSnapshot = {};
    // An inotify wake names the file that changed: the other is as it was.
    if (hint?.only === 'memory' && prev?.pids) snap.pids = prev.pids;
    // A cgroup without the pids or memory controller enabled has no such file: that part stays absent.
    const max = snap.pids ? null : readSyncParsed(reader, this.file(rel, 'pids.events'), parsePidsEventsMax);
    if (max !== null) {
      // Skip the failing open of pids.events.local on every sweep once the kernel proved not to have it.
      const localMax = this.localEvents === false ? null : readSyncParsed(reader, this.file(rel, 'pids.events.local'), parsePidsEventsMax);
      if (localMax !== null) this.localEvents = true;
      else if (this.localEvents === undefined && reader.read(this.file(rel, 'pids.events')) !== null) this.localEvents = false;
      snap.pids = localMax === null ? { max } : { max, localMax };
    }
    if (hint?.only === 'pids' && prev?.memory) snap.memory = prev.memory;
    else {
      const memory = readSyncParsed(reader, this.file(rel, 'memory.events'), parseMemoryEvents);
      if (memory !== null) {
        const local = this.memoryLocalEvents === false ? null : readSyncParsed(reader, this.file(rel, 'memory.events.local'), parseMemoryEvents);
        if (local !== null) {
          this.memoryLocalEvents = true;
          memory.local = local;
        } else if (this.memoryLocalEvents === undefined && reader.read(this.file(rel, 'memory.events')) !== null) this.memoryLocalEvents = false;
        snap.memory = memory;
      }
    }
    return snap.pids === undefined && snap.memory === undefined ? null : snap;
  }

  subCgroupsWithOwnPidsHits(rel: string, maxDepth: number, limit: number, skip: (rel: string) => boolean): string[] {
    const found: string[] = [];
    const visit = (sub: string, depth: number): void => {
      if (depth > maxDepth || found.length >= limit) return;
      let entries: fs.Dirent[];
      try {
        entries = fs.readdirSync(this.dir('pids', sub), { withFileTypes: true });
      } catch {
        return; // gone
      }
      for (const e of entries) {
        if (!e.isDirectory()) continue;
        const child = `${sub === '/' ? '' : sub}/${e.name}`;
        if (!skip(child)) {
          try {
            if (parsePidsEventsMax(fs.readFileSync(this.file(child, 'pids.events.local'), 'utf8')) > 0) found.push(child);
          } catch {
            /* gone, or an odd file: not a hit we can place */
          }
        }
        visit(child, depth + 1);
      }
    };
    visit(rel, 0);
    return found;
  }

  readPidsCurrentSync(rel: string, reader: SyncFileReader): { current: number; max: Limit } | null {
    const current = readSyncParsed(reader, this.file(rel, 'pids.current'), parseInteger);
    const max = current === null ? null : readSyncParsed(reader, this.file(rel, 'pids.max'), parseLimit);
    return current === null || max === null ? null : { current, max };
  }

  readMemoryUsageSync(rel: string, reader: SyncFileReader): MemoryUsage | null {
    const usageBytes = readSyncParsed(reader, this.file(rel, 'memory.current'), parseInteger);
    const limitBytes = usageBytes === null ? null : readSyncParsed(reader, this.file(rel, 'memory.max'), parseLimit);
    return usageBytes === null || limitBytes === null ? null : { usageBytes, limitBytes };
  }

  readPidsCurrentOnlySync(rel: string, reader: SyncFileReader): number | null {
    return readSyncParsed(reader, this.file(rel, 'pids.current'), parseInteger);
  }

  readMemoryUsageOnlySync(rel: string, reader: SyncFileReader): number | null {
    return readSyncParsed(reader, this.file(rel, 'memory.current'), parseInteger);
  }
}
