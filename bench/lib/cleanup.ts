import type { ChildProcess } from 'node:child_process';

// Everything a benchmark makes (cgroups, processes, containers, temp dirs) is registered here
// as it is made. Each benchmark undoes its own in a finally block; on SIGINT/SIGTERM whatever
// is still registered is undone before the process exits.

type Undo = () => void | Promise<void>;
const undos = new Map<number, { what: string; fn: Undo }>();
let next = 0;

/** Register an undo; returns a function that runs it now (once) and unregisters it. */
export function onCleanup(what: string, fn: Undo): () => Promise<void> {
  const id = next++;
  undos.set(id, { what, fn });
  return async () => {
    const u = undos.get(id);
    if (!u) return;
    undos.delete(id);
    await u.fn();
  };
}

/** Kill a child process (SIGKILL) on cleanup; returns the undo. */
export function trackChild(child: ChildProcess, what: string): () => Promise<void> {
  return onCleanup(what, () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
}

/** Run every registered undo, newest first. */
export async function cleanupAll(): Promise<void> {
  const list = [...undos.entries()].reverse();
  undos.clear();
  for (const [, u] of list) {
    try {
      await u.fn();
    } catch (err) {
      process.stderr.write(`bench cleanup: ${u.what}: ${(err as Error).message}\n`);
    }
  }
}

let installed = false;
export function installSignalCleanup(): void {
  if (installed) return;
  installed = true;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}: cleaning up...\n`);
      void cleanupAll().finally(() => process.exit(130));
    });
  }
}
