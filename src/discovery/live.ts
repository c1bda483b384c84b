import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log';
import type { Recogniser } from '../runtimes/types';
import { recognise } from '../runtimes/index';
import { watchHealth, watchPath, type Watch } from '../kernel/inotify';
import { childPath, underRoots, walkCgroups, type Found } from './walk';

export interface LiveHandlers {
  /** A container cgroup appeared; `seenHr` is when its creation was seen (process.hrtime.bigint()). */
  appeared(found: Found, seenHr: bigint): void;
  /** A cgroup directory went away (a container's, or a parent's: all below it are gone too). */
  vanished(cgroupPath: string): void;
}

/**
 * New containers are found through inotify on the directories where container cgroups
 * appear (IN_CREATE on a cgroupfs directory fires on mkdir), and on new parent directories
 * as they appear (a Kubernetes pod directory, then its containers). Rescans alone would
 * leave a new container unlimited until the next one.
 */
/**
 * Directories inotify refused (the watch limit) are walked this often instead, and their
 * watch retried: a container made there is found within this, not at the next reconcile.
 */
const UNWATCHED_RESCAN_MS = 2000;

export class LiveDiscovery {
  private readonly watches = new Map<string, Watch>();
  /** Directories we want watched but inotify refused. */
  private readonly unwatched = new Set<string>();
  private rescanTimer?: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly root: string,
    private readonly maxDepth: number,
    private readonly recognisers: Recogniser[],
    private readonly handlers: LiveHandlers,
    private readonly log: Logger,
    /** The discovery roots (relative): containers are looked for under them only. */
    private readonly roots: string[] = ['/'],
  ) {}

  /** On the way to a root that does not exist yet ("/docker" before Docker's first container). */
  private aboveRoot(rel: string): boolean {
    return this.roots.some((r) => r.startsWith(rel === '/' ? '/' : `${rel}/`));
  }

  /**
   * A root that does not exist yet: watch its nearest existing ancestor, so the root (and the
   * containers in it) are found the moment the runtime makes it. Returns that ancestor.
   */
  watchForRoot(rootRel: string): string {
    let a = rootRel;
    while (a !== '/' && !fs.existsSync(path.join(this.root, a))) a = a.lastIndexOf('/') <= 0 ? '/' : a.slice(0, a.lastIndexOf('/'));
    this.watch(a);
    return a;
  }

  get watchCount(): number {
    return this.watches.size;
  }

  isWatched(rel: string): boolean {
    return this.watches.has(rel);
  }

  /** Directories inotify refused, rescanned every UNWATCHED_RESCAN_MS. */
  get unwatchedCount(): number {
    return this.unwatched.size;
  }

  /** Watch a non-container directory (idempotent). Returns false if it is gone. */
  watch(rel: string): boolean {
    if (this.closed || this.watches.has(rel)) return true;
    const w = watchPath(path.join(this.root, rel), (event, name) => {
      if (event === 'rename' && name) this.onEntry(rel, name);
    }, () => this.unwatchTree(rel));
    if (w === 'gone') {
      this.unwatched.delete(rel);
      return false;
    }
    if (w === 'failed') {
      this.unwatched.add(rel);
      this.rescanTimer ??= setInterval(() => this.rescanUnwatched(), UNWATCHED_RESCAN_MS).unref();
      return true;
    }
    this.unwatched.delete(rel);
    this.watches.set(rel, w);
    return true;
  }

  /** Retry the refused watches; walk those directories for containers made meanwhile. */
  private rescanUnwatched(): void {
    const dirs = [...this.unwatched];
    for (const d of dirs) this.watch(d);
    if (this.unwatched.size === 0 && this.rescanTimer) {
      clearInterval(this.rescanTimer);
      this.rescanTimer = undefined;
    }
    const seenHr = process.hrtime.bigint();
    this.walk(dirs, seenHr).catch((err: Error) => this.log.warn({ err: err.message }, 'rescanning unwatched cgroup directories failed'));
  }

  private depthOf(rel: string): number {
    return rel === '/' ? 0 : rel.split('/').length - 1;
  }

  private onEntry(parent: string, name: string): void {
    const seenHr = process.hrtime.bigint();
    const rel = childPath(parent, name);
    let isDir = false;
    try {
      // Synchronous on purpose: one stat of a kernfs entry costs microseconds, and the
      // threadpool round trip would add to the creation-to-limit latency.
      isDir = fs.statSync(path.join(this.root, rel)).isDirectory();
    } catch {
      isDir = false;
    }
    if (!isDir) {
      this.unwatchTree(rel);
      this.handlers.vanished(rel);
      return;
    }
    if (!underRoots(this.roots, rel)) {
      // A directory on the way to a missing root: watch it too; anything else is not ours.
      if (this.aboveRoot(rel)) {
        this.watch(rel);
        for (const r of this.roots) if (r.startsWith(`${rel}/`) && fs.existsSync(path.join(this.root, r))) this.onEntry(path.dirname(r), path.basename(r));
      }
      return;
    }
    const hit = recognise(this.recognisers, rel);
    if (hit) {
      this.handlers.appeared({ ...hit, cgroupPath: rel }, seenHr);
      return;
    }
    if (this.depthOf(rel) > this.maxDepth) return;
    // A new parent (a pod directory made with mkdir -p, its container a moment later).
    this.walk([rel], seenHr).catch((err: Error) => this.log.warn({ err: err.message, path: rel }, 'walking a new cgroup directory failed'));
  }

  /** Walk directories, watching each one before it is listed, so a child made meanwhile is not missed. */
  private async walk(dirs: string[], seenHr: bigint): Promise<void> {
    const r = await walkCgroups(this.root, dirs, this.maxDepth, this.recognisers, (d) => this.watch(d));
    for (const c of r.containers) this.handlers.appeared(c, seenHr);
  }

  private unwatchTree(rel: string): void {
    const prefix = rel === '/' ? '/' : `${rel}/`;
    const inTree = (p: string): boolean => p === rel || p.startsWith(prefix);
    for (const [p, w] of this.watches) {
      if (inTree(p)) {
        w.close();
        this.watches.delete(p);
      }
    }
    for (const p of [...this.unwatched]) {
      if (!inTree(p)) continue;
      this.unwatched.delete(p);
      watchHealth.settled(path.join(this.root, p));
    }
  }

  close(): void {
    this.closed = true;
    if (this.rescanTimer) clearInterval(this.rescanTimer);
    for (const w of this.watches.values()) w.close();
    this.watches.clear();
    for (const p of this.unwatched) watchHealth.settled(path.join(this.root, p));
    this.unwatched.clear();
  }
}
