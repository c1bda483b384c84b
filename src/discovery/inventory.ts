import { EventEmitter } from 'node:events';
import type { Container } from './container';

/** The containers known right now, by cgroup path. Emits 'added' and 'removed'. */
export class Inventory extends EventEmitter {
  private readonly byPath = new Map<string, Container>();

  get size(): number {
    return this.byPath.size;
  }

  get(cgroupPath: string): Container | undefined {
    return this.byPath.get(cgroupPath);
  }

  has(cgroupPath: string): boolean {
    return this.byPath.has(cgroupPath);
  }

  all(): IterableIterator<Container> {
    return this.byPath.values();
  }

  /** Returns false if it was already known. */
  add(c: Container): boolean {
    if (this.byPath.has(c.cgroupPath)) return false;
    this.byPath.set(c.cgroupPath, c);
    this.emit('added', c);
    return true;
  }

  remove(cgroupPath: string): Container | undefined {
    const c = this.byPath.get(cgroupPath);
    if (!c) return undefined;
    this.byPath.delete(cgroupPath);
    this.emit('removed', c);
    return c;
  }
}
