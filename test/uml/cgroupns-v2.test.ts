/**
 * The real daemon in a private cgroup namespace on a real cgroup v2 kernel (the newest UML of
 * the matrix; one boot, test/uml/scripts/cgroupns-v2.ts does the work): with its own cgroup2
 * mounted it stops with one sentence; under the inherited whole-hierarchy mount it finds its
 * namespace root, enforces and attributes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { translateProcCgroup, type CgroupNamespaceVerdict } from '../../src/cgroup/namespace';
import { need } from '../helpers/prereq';
import { kernelReady, resultsByCheck, runInUml, umlProcesses, UML_KERNELS } from '../helpers/uml';

type Rec = Record<string, any>;

const kernel = UML_KERNELS.find((k) => k.suite === 'sid')!;

test(`private cgroup namespace on cgroup v2 (UML ${kernel.suite}): an own cgroup2 mount stops the daemon in one sentence; the inherited mount is translated`, async (t) => {
  kernelReady(kernel);
  const run = await runInUml(path.join(__dirname, 'scripts', 'cgroupns-v2.js'), [], { kernel, timeoutMs: 200_000 });
  t.diagnostic(`boot+run ${run.durationMs} ms, kernel ${run.kernel}`);
  const { get, results: r, tail } = resultsByCheck<Rec>(run);
  assert.equal(r.get('error'), undefined, JSON.stringify(r.get('error')));
  assert.equal(run.exitCode, 0, tail);
  assert.deepEqual(umlProcesses(run.umid), []);
  const setup = get('setup');
  need(setup.unshare === true, '/usr/bin/unshare (util-linux) on the host root');
  need(setup.perl === true, '/usr/bin/perl on the host root (the fork bomb)');
  assert.equal(setup.pidsMax, 'max');
  const container = setup.container as string;

  const own = get('own-mount');
  t.diagnostic(`own cgroup2 mount, seen inside:\n${own.facts.stdout}`);
  assert.equal(own.facts.code, 0, own.facts.stderr);
  assert.match(own.facts.stdout, /^0::\/$/m);
  assert.match(own.facts.stdout, / \/ \/run\/cg .* - cgroup2 cgwd-ns /);
  assert.match(own.facts.stdout, /^cgroup\.events$/m, 'the mount shows a non-root cgroup');
  for (const [what, res] of [['run', own.run], ['apply', own.apply]] as const) {
    t.diagnostic(`${what}: exit ${res.code} after ${res.ms} ms; ${res.stderr.trim()}`);
    assert.equal(res.code, 1);
    const lines = String(res.stderr).split('\n').filter(Boolean);
    assert.equal(lines.length, 1, res.stderr);
    assert.match(lines[0]!, /^cgwatchdog: only this container's own cgroups are visible \(the cgroup mount at \/run\/cg has mountinfo root "\/" in a private cgroup namespace and is not the hierarchy's root\): run it in the host's cgroup namespace \(docker\/podman run --cgroupns=host --pid=host\)/);
  }
  assert.equal(own.pidsMaxAfter, 'max', 'nothing was written');
  assert.doesNotMatch(own.mountinfoAfter, /cgwd-ns/, 'the mount stayed in its namespace');

  const u = get('unshare');
  t.diagnostic(`unshare --cgroup, seen inside:\n${u.facts.stdout}`);
  assert.match(u.facts.stdout, /^0::\/$/m);
  assert.match(u.facts.stdout, / \/\.\.\/\.\. \/run\/cg /);
  assert.doesNotMatch(u.facts.stdout, /^cgroup\.events$/m, 'the inherited mount is the hierarchy root');
  const v = u.verdict as CgroupNamespaceVerdict;
  t.diagnostic(`verdict: ${JSON.stringify(v)}; ready in ${u.readyMs} ms; capabilities ${JSON.stringify(u.caps)}`);
  assert.equal(u.running, true, `${JSON.stringify(u.problems)} ${u.stderr}`);
  assert.equal(v.kind, 'translated');
  assert.equal(v.namespace, 'private');
  assert.deepEqual(v.hierarchies.map((h) => [h.hierarchy, h.mountPoint, h.mountRoot, h.selfPath, h.nsRoot]), [['v2', '/run/cg', '/../..', '/', '/cgwd-test/agent']]);
  assert.deepEqual(u.nsRoots, { '/run/cg': '/cgwd-test/agent' });
  assert.equal(u.pidsMaxSet, true, 'the container got its pids.max');
  assert.equal(u.metric, 'cgwatchdog_kernel_capability{capability="host_cgroup_namespace"} 0');
  t.diagnostic(`fork bomb -> alert ${u.alertMs} ms; limit events ${JSON.stringify(u.events)}`);
  assert.ok(u.alert, 'a pids-max alert');
  assert.equal(u.alert.container.cgroupPath, container);
  assert.equal(u.alert.counters.limit, 20);
  assert.ok((u.alert.topCommands ?? []).some((c: Rec) => c.comm === 'sleep'), JSON.stringify(u.alert.topCommands));
  assert.ok(u.events.some((e: Rec) => e.cgroupPath === container), 'the limit event names the container');
  assert.equal(u.seen.trim(), `0::/../docker/${container.split('/').pop()}`);
  assert.equal(translateProcCgroup(v, u.seen)['/run/cg'], container);
  assert.equal(u.apply.code, 0, u.apply.stderr);
  assert.equal(u.apply.cgroupNamespace.kind, 'translated');
  assert.ok(u.apply.containers.includes(container));
  assert.equal(get('cleanup').gone, true);
});
