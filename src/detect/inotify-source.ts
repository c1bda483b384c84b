import type { CgroupFs } from '../cgroup/types';
import type { InotifyKinds } from '../kernel/capabilities';
import { watchHealth, watchPath, type Watch } from '../kernel/inotify';

type Only = 'pids' | 'memory';

interface Watched {
  watches: Watch[];
  /** Event files inotify refused to watch (the watch limit), to retry. */
  refused?: Map<string, Only>;
}

/**
 * inotify on a cgroup's event files (v2 `pids.events`, `memory.events`) as a detection
 * source: the kernel's IN_MODIFY prompts a read of that cgroup's counters. A watch inotify
 * refuses (counted in watchHealth) is left to the sweep and retried on full sweeps.
 */
export class InotifySource {
  private readonly byPath = new Map<string, Watched>();

  constructor(
    private readonly cgroups: CgroupFs,
    /** Which event files to watch (from the capability probe). */
    private kinds: InotifyKinds,
    /** A change of `path`'s pids or memory event file. */
    private readonly changed: (path: string, only: Only) => void,
  ) {}

  get watchCount(): number {
    let n = 0;
    for (const w of this.byPath.values()) n += w.watches.length;
    return n;
  }

  get up(): boolean {
    return watchHealth.degraded() === undefined;
  }

  get on(): boolean {
    return this.kinds.pids || this.kinds.memory;
  }

  add(path: string): void {
    if (this.byPath.has(path)) return;
    const w: Watched = { watches: [] };
    this.byPath.set(path, w);
    if (this.on) this.watchAll(path, w);
  }

  remove(path: string): void {
    const w = this.byPath.get(path);
    if (!w) return;
    this.close(w);
    this.byPath.delete(path);
  }

  /** A reload turned inotify on or off: every cgroup's watches follow. */
  setKinds(kinds: InotifyKinds): void {
    if (kinds.pids === this.kinds.pids && kinds.memory === this.kinds.memory) return;
    this.kinds = kinds;
    for (const [path, w] of this.byPath) {
      this.close(w);
      if (this.on) this.watchAll(path, w);
    }
  }

  /** Cgroups with an event file inotify refused (the watch limit): nothing notifies them. */
  *refusedPaths(): Iterable<string> {
    if (!watchHealth.degraded()) return;
    for (const [path, w] of this.byPath) if (w.refused?.size) yield path;
  }

  retryRefused(): void {
    if (!watchHealth.degraded()) return;
    for (const [path, w] of this.byPath) {
      if (!w.refused?.size) continue;
      for (const [file, only] of [...w.refused]) this.watchFile(path, w, file, only);
    }
  }

  stop(): void {
    for (const w of this.byPath.values()) this.close(w);
    this.byPath.clear();
  }

  private watchAll(path: string, w: Watched): void {
    const files = this.cgroups.eventFiles(path);
    if (files.pids && this.kinds.pids) this.watchFile(path, w, files.pids, 'pids');
    if (files.memory && this.kinds.memory) this.watchFile(path, w, files.memory, 'memory');
  }

  private close(w: Watched): void {
    for (const x of w.watches) x.close();
    w.watches = [];
    for (const f of w.refused?.keys() ?? []) watchHealth.settled(f);
    w.refused = undefined;
  }

  private watchFile(path: string, w: Watched, file: string, only: Only): void {
    const x = watchPath(file, (ev) => {
      if (ev === 'change') this.changed(path, only);
    });
    if (typeof x === 'object') {
      w.watches.push(x);
      w.refused?.delete(file);
    } else if (x === 'failed') {
      (w.refused ??= new Map()).set(file, only);
    }
  }
}
