/**
 * The podman test harness against real containers (podman + runc, v1 cgroups), and the facts
 * about runc the daemon relies on: when the container cgroup appears, when runc writes its own
 * pids.max, and that a write made after runc's sticks.
 */
import { test, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { isRoot, need } from '../helpers/prereq';
import {
  createContainer,
  ensureBusyboxImage,
  forkBombArgs,
  memoryHogArgs,
  podmanAvailable,
  podmanUnavailableReason,
  removeAllTestContainers,
  removeContainer,
  run,
  runContainer,
  startContainer,
  threadBombArgs,
  waitContainer,
  BUSYBOX_IMAGE,
} from '../helpers/podman';

const PIDS_ROOT = '/sys/fs/cgroup/pids';
const CPU_ROOT = '/sys/fs/cgroup/cpu';
const MEMORY_ROOT = '/sys/fs/cgroup/memory';
/** Our containers only: other test files may run containers at the same time. */
const PREFIX = `cgwd-test-harness-${process.pid}-`;
let seq = 0;
const newName = (tag: string): string => `${PREFIX}${tag}-${++seq}`;

after(async () => {
  await removeAllTestContainers(PREFIX);
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const read = (p: string): string => fs.readFileSync(p, 'utf8').trim();

async function waitFor<T>(what: string, fn: () => T | undefined, timeoutMs = 10_000, stepMs = 10): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    let v: T | undefined;
    try {
      v = fn();
    } catch {
      v = undefined;
    }
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

function ready(): void {
  need(isRoot(), 'root (podman writes cgroups)');
  need(podmanAvailable(), `podman with runc: ${podmanUnavailableReason() ?? ''}`);
}

function memoryEvents(cgroupPath: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of read(`${MEMORY_ROOT}${cgroupPath}/memory.oom_control`).split('\n')) {
    const [k, v] = line.split(/\s+/);
    if (k) out[k] = Number(v);
  }
  return out;
}

function pidsEventsMax(cgroupPath: string): number {
  const m = /^max\s+(\d+)/m.exec(read(`${PIDS_ROOT}${cgroupPath}/pids.events`));
  return m ? Number(m[1]) : 0;
}

test('busybox image exists after ensureBusyboxImage (idempotent)', (t) => {
  ready();
  const t0 = performance.now();
  assert.equal(ensureBusyboxImage(), BUSYBOX_IMAGE);
  t.diagnostic(`ensureBusyboxImage when present: ${(performance.now() - t0).toFixed(0)} ms`);
});

test('--cpus 2 container: v1 cgroups, CFS quota, podman default pids.max, cgroup gone on rm', async (t) => {
  ready();
  const name = newName('cpus');
  t.after(() => removeContainer(name));

  const t0 = performance.now();
  const c = await runContainer({ name, cpus: 2, cmd: ['sleep', '100000'] });
  t.diagnostic(`podman run -d returned after ${(performance.now() - t0).toFixed(0)} ms`);

  assert.match(c.id, /^[0-9a-f]{64}$/);
  assert.equal(c.cgroupPath, `/libpod_parent/libpod-${c.id}`);
  const pidsDir = `${PIDS_ROOT}${c.cgroupPath}`;
  const cpuDir = `${CPU_ROOT}${c.cgroupPath}`;
  assert.ok(fs.statSync(pidsDir).isDirectory());
  assert.ok(fs.statSync(cpuDir).isDirectory());
  assert.equal(read(`${cpuDir}/cpu.cfs_quota_us`), '200000');
  assert.equal(read(`${cpuDir}/cpu.cfs_period_us`), '100000');
  assert.equal(read(`${pidsDir}/pids.max`), '2048', "podman's default --pids-limit");
  assert.ok(read(`${pidsDir}/cgroup.procs`).split('\n').includes(String(c.pid)));

  const t1 = performance.now();
  await removeContainer(name);
  t.diagnostic(`podman rm -f -t 0 took ${(performance.now() - t1).toFixed(0)} ms`);
  await waitFor('pids cgroup removed', () => !fs.existsSync(pidsDir), 5_000);
  await waitFor('cpu cgroup removed', () => !fs.existsSync(cpuDir), 5_000);
  const left = await run('podman', ['ps', '-a', '--filter', `name=${name}`, '--format', '{{.Names}}']);
  assert.equal(left.stdout.trim(), '');
});

test('runc writes pids.max after creating the cgroup; a write made after runc\'s sticks', async (t) => {
  ready();
  const parent = `${PIDS_ROOT}/libpod_parent`;
  // libpod_parent is made by the first container (podmanAvailable() ran one) and stays.
  assert.ok(fs.existsSync(parent), `${parent} exists`);
  const name = newName('timing');
  t.after(() => removeContainer(name));

  interface Seen {
    dir?: string;
    tCreate?: number;
    maxAtCreate?: string;
    procsAtCreate?: string;
    tRuncWrite?: number;
    maxAtRuncWrite?: string;
    ourWrite?: string;
    changes: number;
  }
  const seen: Seen = { changes: 0 };
  const watchers: fs.FSWatcher[] = [];
  t.after(() => watchers.forEach((w) => w.close()));

  // Created first, so the watch knows which cgroup is ours: other containers may start meanwhile.
  const created = await createContainer({ name, cmd: ['sleep', '100000'] });
  const t0 = performance.now();
  watchers.push(
    fs.watch(parent, (type, file) => {
      const now = performance.now();
      if (type !== 'rename' || file !== `libpod-${created.id}` || seen.dir) return;
      const dir = `${parent}/${file}`;
      if (!fs.existsSync(dir)) return; // a removal
      seen.dir = dir;
      seen.tCreate = now;
      try {
        seen.maxAtCreate = read(`${dir}/pids.max`);
        seen.procsAtCreate = read(`${dir}/cgroup.procs`);
      } catch (e) {
        seen.maxAtCreate = (e as NodeJS.ErrnoException).code;
      }
      watchers.push(
        fs.watch(dir, (_type2, file2) => {
          if (file2 !== 'pids.max') return;
          seen.changes++;
          if (seen.tRuncWrite !== undefined) return;
          seen.tRuncWrite = performance.now();
          seen.maxAtRuncWrite = read(`${dir}/pids.max`);
          // What the daemon does: set its own limit once runc has written its own.
          fs.writeFileSync(`${dir}/pids.max`, '77');
          seen.ourWrite = '77';
        }),
      );
    }),
  );

  const started = await run('podman', ['start', name]);
  assert.equal(started.code, 0, started.stderr);
  const tReturned = performance.now();
  const c = { cgroupPath: `/libpod_parent/libpod-${created.id}` };
  await sleep(300); // later writes by podman/runc, if any, would show up here

  assert.equal(seen.dir, `${PIDS_ROOT}${c.cgroupPath}`);
  assert.equal(seen.maxAtCreate, 'max', 'pids.max is the kernel default when the directory appears');
  assert.ok(seen.tRuncWrite !== undefined, 'IN_MODIFY seen on pids.max (runc writes it)');
  assert.equal(seen.maxAtRuncWrite, '2048');
  assert.ok(seen.tRuncWrite! >= seen.tCreate!);
  assert.ok(tReturned >= seen.tRuncWrite!, 'runc wrote pids.max before podman run returned');
  assert.equal(read(`${PIDS_ROOT}${c.cgroupPath}/pids.max`), '77', 'our write after runc\'s stays');

  t.diagnostic(
    `cgroup dir appeared ${(seen.tCreate! - t0).toFixed(1)} ms after podman run was spawned ` +
      `(cgroup.procs then: [${(seen.procsAtCreate ?? '').replace(/\n/g, ' ')}]); ` +
      `runc wrote pids.max=2048 ${(seen.tRuncWrite! - seen.tCreate!).toFixed(1)} ms after the mkdir; ` +
      `podman run returned ${(tReturned - seen.tCreate!).toFixed(1)} ms after the mkdir; ` +
      `pids.max IN_MODIFY events: ${seen.changes} (1 from runc, 1 from our write)`,
  );
});

test('a write to pids.max as soon as the cgroup appears is overwritten by runc (measured race)', async (t) => {
  ready();
  const parent = `${PIDS_ROOT}/libpod_parent`;
  const name = newName('race');
  t.after(() => removeContainer(name));
  let wrote: string | undefined;
  let before = '';
  let tCreate = 0;
  let tWrite = 0;
  const created = await createContainer({ name, cmd: ['sleep', '100000'] });
  const w = fs.watch(parent, (type, file) => {
    if (type !== 'rename' || file !== `libpod-${created.id}` || wrote !== undefined) return;
    const dir = `${parent}/${file}`;
    try {
      tCreate = performance.now();
      before = read(`${dir}/pids.max`);
      fs.writeFileSync(`${dir}/pids.max`, '77');
      tWrite = performance.now();
      wrote = dir;
    } catch {
      /* removed, or not ours */
    }
  });
  t.after(() => w.close());
  const started = await run('podman', ['start', name]);
  assert.equal(started.code, 0, started.stderr);
  const c = { cgroupPath: `/libpod_parent/libpod-${created.id}` };
  assert.equal(wrote, `${PIDS_ROOT}${c.cgroupPath}`);
  const final = read(`${PIDS_ROOT}${c.cgroupPath}/pids.max`);
  t.diagnostic(
    `wrote 77 ${(tWrite - tCreate).toFixed(2)} ms after the create event; value after podman run: ${final} ` +
      `(2048 = runc overwrote it: a daemon must wait for runc's write, or re-check after start)`,
  );
  if (before !== 'max') {
    // The event loop was too slow (a loaded machine): runc had written already, no race to see.
    t.diagnostic(`runc wrote pids.max (${before}) before we got the create event; race not exercised`);
    assert.equal(final, '77');
    return;
  }
  // runc's write comes ~10 ms after mkdir here, our write well before it: runc wins.
  assert.equal(final, '2048');
});

test('memory hog (busybox dd, 64 MiB block) is OOM-killed under --memory 32m', async (t) => {
  ready();
  const name = newName('hog');
  t.after(() => removeContainer(name));
  const t0 = performance.now();
  const c = await runContainer({ name, memory: '32m', ...memoryHogArgs() });
  const ev = await waitFor(
    'oom_kill >= 1',
    () => {
      const e = memoryEvents(c.cgroupPath);
      return (e.oom_kill ?? 0) >= 1 ? e : undefined;
    },
    10_000,
  );
  const tOom = performance.now();
  assert.equal(ev.oom_kill, 1);
  assert.equal(read(`${MEMORY_ROOT}${c.cgroupPath}/memory.limit_in_bytes`), String(32 * 1024 * 1024));
  const out = await run('podman', ['logs', name]);
  assert.match(out.stdout + out.stderr, /hog-exit=137/);
  t.diagnostic(`oom_kill seen ${(tOom - t0).toFixed(0)} ms after podman run was spawned; dd exit 137`);

  // Without keepAlive the container itself exits 137.
  const name2 = newName('hog-exit');
  t.after(() => removeContainer(name2));
  const t1 = performance.now();
  await startContainer({ name: name2, memory: '32m', ...memoryHogArgs({ keepAlive: false }) });
  const code = await waitContainer(name2);
  t.diagnostic(`container without keepAlive exited ${code} ${(performance.now() - t1).toFixed(0)} ms after spawn`);
  assert.equal(code, 137);
});

test('fork bomb (busybox) keeps hitting --pids-limit and the container stays up', async (t) => {
  ready();
  const name = newName('fork');
  t.after(() => removeContainer(name));
  const c = await runContainer({ name, pidsLimit: 20, ...forkBombArgs() });
  const t0 = performance.now();
  await waitFor('pids.events max >= 2', () => pidsEventsMax(c.cgroupPath) >= 2 || undefined, 10_000, 20);
  t.diagnostic(`pids.events max reached 2 within ${(performance.now() - t0).toFixed(0)} ms of start`);
  assert.equal(read(`${PIDS_ROOT}${c.cgroupPath}/pids.max`), '20');
  assert.ok(fs.existsSync(`${PIDS_ROOT}${c.cgroupPath}`), 'container (and cgroup) still there');
});

test('thread bomb (host node bind-mounted, worker_threads) hits --pids-limit with EAGAIN', async (t) => {
  ready();
  const name = newName('threads');
  t.after(() => removeContainer(name));
  const c = await runContainer({ name, pidsLimit: 40, ...threadBombArgs() });
  const t0 = performance.now();
  await waitFor('pids.events max >= 1', () => pidsEventsMax(c.cgroupPath) >= 1 || undefined, 20_000, 20);
  const tHit = performance.now();
  let out = '';
  for (let i = 0; i < 50 && !/limit hit/.test(out); i++) {
    const r = await run('podman', ['logs', name]);
    out = r.stdout + r.stderr;
    if (!/limit hit/.test(out)) await sleep(100);
  }
  assert.match(out, /thread-bomb: limit hit after \d+ workers: ERR_WORKER_INIT_FAILED/);
  assert.ok(Number(read(`${PIDS_ROOT}${c.cgroupPath}/pids.current`)) <= 40);
  t.diagnostic(`first pids.max rejection ${(tHit - t0).toFixed(0)} ms after start; ${out.trim().split('\n').pop()}`);
});
