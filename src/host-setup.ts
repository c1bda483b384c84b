import fs from 'node:fs';
import { detectLayout, openCgroupFs } from './cgroup/index';
import { checkCgroupNamespace, type CgroupNamespaceVerdict } from './cgroup/namespace';
import type { CgroupFs } from './cgroup/types';
import type { Config } from './config/schema';
import { hostCores as onlineCpus } from './kernel/proc';
import { buildRecognisers } from './runtimes/index';
import type { Recogniser } from './runtimes/types';

export interface HostSetup {
  cgroups: CgroupFs;
  recognisers: Recogniser[];
  hostCores: number;
  /** Whether we see the host's hierarchies from our cgroup namespace, and our namespace root in each (never blind: setupHost refuses that). */
  cgroupNamespace: CgroupNamespaceVerdict;
  /** Problems that stop enforce mode and are only warnings in observe mode. */
  problems: string[];
}


/** What the agent needs to act: root, a writable cgroupfs. Observe mode can do without. */
function privilegeProblems(cgroups: CgroupFs): string[] {
  const problems: string[] = [];
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    problems.push(`not running as root (uid ${process.getuid()}): cannot write pids.max or kernel.pid_max`);
  }
  try {
    fs.accessSync(cgroups.discoveryRoot, fs.constants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    problems.push(code === 'EROFS'
      ? `the cgroup filesystem at ${cgroups.discoveryRoot} is mounted read-only: cannot write pids.max (mount it read-write, or run privileged)`
      : `cannot write to ${cgroups.discoveryRoot} (${code}): cannot write pids.max`);
  }
  return problems;
}

export async function setupHost(config: Config): Promise<HostSetup> {
  const layout = await detectLayout(config.paths.procRoot, config.paths.cgroupRoot);
  const cgroups = openCgroupFs(layout, config.paths.cgroupRoot);
  // In a private cgroup namespace with its own cgroupfs (docker/containerd on v2 by default) the
  // mount is the container's own subtree: every walk would find nothing and every check pass.
  // Refused in observe mode too: a daemon that watches nothing must not look healthy.
  const cgroupNamespace = checkCgroupNamespace(config.paths.procRoot, layout);
  if (cgroupNamespace.kind === 'blind') throw new Error(cgroupNamespace.sentence);
  return {
    cgroups,
    cgroupNamespace,
    recognisers: buildRecognisers(config.discovery.runtimes, config.discovery.extraPatterns, config.discovery),
    // The kernel's online CPU list. (systeminformation's cpu() runs lscpu and dmidecode
    // through a shell; the daemon runs no program it does not need.)
    hostCores: onlineCpus(),
    problems: privilegeProblems(cgroups),
  };
}
