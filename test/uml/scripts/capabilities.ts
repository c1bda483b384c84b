/**
 * Runs inside user-mode Linux (see test/uml/capabilities.test.ts): the capability probe on
 * this kernel, first on its cgroup v2 (as mounted by init.sh), then on a cgroup v1 pids
 * hierarchy mounted in its place (the pids controller moved off v2). Phases: v2, v1.
 */
import * as fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { detectLayout, openCgroupFs } from '../../../src/cgroup/index';
import { inotifyFor, probeCapabilities } from '../../../src/kernel/capabilities';
import { cgroupRoot, emit, inUml, sleep } from '../in-uml';
import { runMain } from './daemon-util';

async function probeAt(root: string) {
  const layout = await detectLayout('/proc', root);
  const cgroups = openCgroupFs(layout, root);
  const caps = await probeCapabilities({ cgroups, procRoot: '/proc', kmsgPath: '/dev/kmsg', canWrite: true });
  return { version: cgroups.version, caps, inotify: inotifyFor(caps, cgroups.version, true), leftovers: fs.readdirSync(cgroups.dir('pids', '/')).filter((n) => n.startsWith('cgwatchdog-probe')) };
}

async function main(): Promise<void> {
  if (!inUml()) throw new Error('run this through test/helpers/uml.ts runInUml()');
  const root = cgroupRoot();
  emit({ check: 'v2', ...(await probeAt(root)) });

  // A controller serves one hierarchy at a time: take pids off v2, then mount it as v1.
  fs.writeFileSync(`${root}/cgroup.subtree_control`, '-pids');
  fs.mkdirSync('/run/v1/pids', { recursive: true });
  // The v2 probe's removed cgroup lets go of the controller a moment later (a dying css).
  let m = spawnSync('/bin/mount', ['-t', 'cgroup', '-o', 'pids', 'cgroup', '/run/v1/pids'], { encoding: 'utf8' });
  for (let i = 0; i < 50 && m.status !== 0; i++) {
    await sleep(100);
    m = spawnSync('/bin/mount', ['-t', 'cgroup', '-o', 'pids', 'cgroup', '/run/v1/pids'], { encoding: 'utf8' });
  }
  if (m.status !== 0) throw new Error(`mount cgroup v1 pids: ${m.stderr}`);
  try {
    emit({ check: 'v1', ...(await probeAt('/run/v1')) });
  } finally {
    spawnSync('/bin/umount', ['/run/v1/pids']);
  }
}

runMain(main, emit);
