import { countHostTasks, } from './proc';
import { readPidMax, readThreadsMax } from './sysctl';

export interface HostPids {
  pidMax: number | null;
  threadsMax: number | null;
  tasks: number | null;
  sumContainersPidsMax: number;
  /** Sum of containers' pids.max over pid_max: above 1 the host can run out of PIDs before any container hits its own limit. */
  overcommit: number | null;
}

const orNull = async <T>(f: () => Promise<T> | T): Promise<T | null> => {
  try {
    return await f();
  } catch {
    return null;
  }
};

/** How far the containers' limits together overcommit the host's PID space. */
export async function hostPidsReport(procRoot: string, containerLimits: Iterable<number | 'max' | undefined>): Promise<HostPids> {
  const [pidMax, threadsMax, tasks] = await Promise.all([
    orNull(() => readPidMax(procRoot)),
    orNull(() => readThreadsMax(procRoot)),
    orNull(() => countHostTasks(procRoot)),
  ]);
  let sum = 0;
  for (const l of containerLimits) if (typeof l === 'number') sum += l;
  return { pidMax, threadsMax, tasks, sumContainersPidsMax: sum, overcommit: pidMax ? Math.round((sum / pidMax) * 1000) / 1000 : null };
}
