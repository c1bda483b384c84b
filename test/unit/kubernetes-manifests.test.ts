/**
 * deploy/kubernetes/*.yaml against the Kubernetes API schemas (kubernetes-models' validate(),
 * the OpenAPI schemas of the Kubernetes release the package was made from), and against each
 * other and the daemon: the config paths point at the mounts, the probes at the metrics port,
 * the image's entrypoint runs node as the systemd unit does. validate() checks types and
 * required fields, not unknown keys (the API server would drop a misspelt key in silence), so
 * strictSchemaErrors walks the same schemas refusing any key they do not have.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { ConfigMap, Namespace, ServiceAccount } from 'kubernetes-models/v1';
import { validateConfig } from '../../src/config/load';
import { parseListen } from '../../src/metrics/server';
import { productionNodeFlags } from '../helpers/daemon';
import {
  BUILD_BASE,
  CONTAINERFILE,
  configArg,
  configMapConfigText,
  containerfileExec,
  daemonContainer,
  loadManifests,
  manifestOfKind,
  mountOfHostPath,
  mountsOf,
  strictSchemaErrors,
} from '../helpers/kubernetes';

const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'apps/v1/DaemonSet': DaemonSet,
};

test('every manifest validates against its Kubernetes API schema', () => {
  const all = loadManifests();
  assert.deepEqual(all.map((m) => m.doc.kind).sort(), ['ConfigMap', 'DaemonSet', 'Namespace', 'ServiceAccount']);
  for (const { file, doc } of all) {
    const Model = MODELS[`${doc.apiVersion}/${doc.kind}`];
    assert.ok(Model, `${path.basename(file)}: no schema for ${doc.apiVersion} ${doc.kind}`);
    assert.doesNotThrow(() => new Model(doc).validate(), `${path.basename(file)}: ${doc.kind} ${doc.metadata?.name}`);
  }
});

test('the schema check is real: a wrong type and a missing required field are refused', () => {
  const ds = structuredClone(manifestOfKind('DaemonSet'));
  ds.spec.template.spec.hostPID = 'true';
  assert.throws(() => new DaemonSet(ds).validate(), /hostPID must be boolean/);
  const noSelector = structuredClone(manifestOfKind('DaemonSet'));
  delete noSelector.spec.selector;
  assert.throws(() => new DaemonSet(noSelector).validate(), /selector/);
});

test('every manifest has only keys its Kubernetes API schema has', () => {
  for (const { file, doc } of loadManifests()) {
    assert.deepEqual(strictSchemaErrors(doc), [], `${path.basename(file)}: ${doc.kind} ${doc.metadata?.name}`);
  }
});

test('the unknown-key check is real: a misspelt hostPID, an unknown spec key and a misspelt key deep in the container are refused by path', () => {
  const misspelt = structuredClone(manifestOfKind('DaemonSet'));
  delete misspelt.spec.template.spec.hostPID;
  misspelt.spec.template.spec.hostPid = true;
  assert.deepEqual(strictSchemaErrors(misspelt), ['spec.template.spec.hostPid: unknown key (the schema has hostPID)']);
  // validate() is what the check before this one had: it lets the misspelling through.
  assert.doesNotThrow(() => new DaemonSet(misspelt).validate());

  const foo = structuredClone(manifestOfKind('DaemonSet'));
  foo.spec.foo = 1;
  assert.deepEqual(strictSchemaErrors(foo), ['spec.foo: unknown key']);

  const deep = structuredClone(manifestOfKind('DaemonSet'));
  const c = deep.spec.template.spec.containers[0];
  c.securityContxt = c.securityContext;
  delete c.securityContext;
  c.volumeMounts[0].readonly = true;
  assert.deepEqual(strictSchemaErrors(deep).sort(), [
    'spec.template.spec.containers[0].securityContxt: unknown key',
    'spec.template.spec.containers[0].volumeMounts[0].readonly: unknown key (the schema has readOnly)',
  ]);

  const cm = structuredClone(manifestOfKind('ConfigMap'));
  cm.data['any-key.yaml'] = 'maps take any key';
  cm.metadata.labels = { 'example.com/any': 'x' };
  assert.deepEqual(strictSchemaErrors(cm), [], 'data and labels are maps: any key');
  cm.data.n = 3;
  assert.deepEqual(strictSchemaErrors(cm), ['data.n: 3 is not string']);

  const noSelector = structuredClone(manifestOfKind('DaemonSet'));
  delete noSelector.spec.selector;
  assert.deepEqual(strictSchemaErrors(noSelector), ['spec.selector: required, missing']);
});

test('one namespace; the DaemonSet uses the ServiceAccount and selects its own pods', () => {
  const all = loadManifests();
  const ns = manifestOfKind('Namespace', all).metadata.name;
  for (const { doc } of all.filter((m) => m.doc.kind !== 'Namespace')) assert.equal(doc.metadata.namespace, ns, `${doc.kind} ${doc.metadata.name}`);
  assert.equal(manifestOfKind('Namespace', all).metadata.labels['pod-security.kubernetes.io/enforce'], 'privileged');
  const ds = manifestOfKind('DaemonSet', all);
  const sa = manifestOfKind('ServiceAccount', all);
  assert.equal(ds.spec.template.spec.serviceAccountName, sa.metadata.name);
  assert.equal(sa.automountServiceAccountToken, false);
  assert.equal(ds.spec.template.spec.automountServiceAccountToken, false);
  for (const [k, v] of Object.entries(ds.spec.selector.matchLabels)) assert.equal(ds.spec.template.metadata.labels[k], v);
});

test('the pod: host PID namespace, privileged root, on every node whatever its taints, Guaranteed QoS', () => {
  const ds = manifestOfKind('DaemonSet');
  const pod = ds.spec.template.spec;
  const c = daemonContainer(ds);
  assert.equal(pod.hostPID, true);
  assert.equal(pod.hostNetwork, true, 'alerts name the node (os.hostname())');
  assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
  assert.equal(c.securityContext.privileged, true);
  assert.equal(c.securityContext.runAsUser, 0);
  assert.equal(c.securityContext.readOnlyRootFilesystem, true);
  assert.ok(
    pod.tolerations.some((t: any) => t.operator === 'Exists' && t.key === undefined && t.effect === undefined),
    'a toleration of every taint (operator: Exists, no key, no effect)',
  );
  assert.deepEqual(c.resources.requests, c.resources.limits, 'requests = limits: Guaranteed QoS, oom_score_adj -997');
  assert.ok(c.resources.limits.cpu && c.resources.limits.memory);
});

test('the ConfigMap is a valid cgwatchdog config whose paths are the DaemonSet\'s mounts', () => {
  const all = loadManifests();
  const ds = manifestOfKind('DaemonSet', all);
  const cfg = validateConfig(YAML.parse(configMapConfigText(all)), 'ConfigMap cgwatchdog-config');
  const cgroup = mountOfHostPath(ds, '/sys/fs/cgroup');
  assert.equal(cfg.paths.cgroupRoot, cgroup.mountPath);
  assert.equal(cgroup.readOnly, false, 'pids.max is written through this mount');
  assert.equal(cgroup.volume.hostPath.type, 'Directory');
  const kmsg = mountOfHostPath(ds, '/dev/kmsg');
  assert.equal(cfg.paths.kmsg, kmsg.mountPath);
  assert.equal(kmsg.volume.hostPath.type, 'CharDevice');
  const state = mountOfHostPath(ds, '/var/lib/cgwatchdog');
  assert.equal(cfg.paths.stateDir, state.mountPath);
  assert.equal(state.readOnly, false);
  assert.equal(cfg.paths.procRoot, '/proc', 'the container\'s own /proc: the host\'s processes with hostPID');
  // Writable places under a read-only root: the status socket's directory.
  const writable = mountsOf(ds).filter((m) => !m.readOnly).map((m) => m.mountPath);
  assert.ok(writable.includes(path.dirname(cfg.paths.statusSocket)), `${cfg.paths.statusSocket} in a writable mount (${writable.join(', ')})`);
  // Name sources: each socket inside a mounted host directory.
  const mounted = mountsOf(ds).map((m) => m.mountPath);
  for (const s of [...cfg.names.criSockets, cfg.names.containerdSocket, cfg.names.kubernetesPodLogs]) {
    assert.ok(mounted.some((m) => s === m || s.startsWith(`${m}/`)), `${s} is not under a mount`);
  }
  assert.equal(cfg.names.podmanBinary, '', 'the image has no podman');
  assert.equal(cfg.kernel.persist, false, 'the container\'s /etc/sysctl.d is not the node\'s');
});

test('probes and the metrics port: /healthz on the port metrics.listen binds', () => {
  const all = loadManifests();
  const ds = manifestOfKind('DaemonSet', all);
  const c = daemonContainer(ds);
  const cfg = validateConfig(YAML.parse(configMapConfigText(all)), 'ConfigMap');
  assert.equal(cfg.metrics.enabled, true);
  const { host, port } = parseListen(cfg.metrics.listen);
  assert.ok(host === undefined || host === '0.0.0.0', `the kubelet probes the node's address: listen ${cfg.metrics.listen}`);
  const named = c.ports.find((p: any) => p.name === 'metrics');
  assert.equal(named.containerPort, port);
  for (const probe of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
    assert.equal(c[probe]?.httpGet?.path, '/healthz', probe);
    assert.ok(c[probe].httpGet.port === 'metrics' || c[probe].httpGet.port === port, probe);
  }
});

test('the Containerfile runs node with the systemd unit\'s flags; its CMD is the DaemonSet\'s args; its base is what build-base.sh makes', () => {
  const ds = manifestOfKind('DaemonSet');
  const entry = containerfileExec('ENTRYPOINT');
  assert.equal(entry[0], '/usr/local/bin/node');
  assert.equal(entry.at(-1), '/opt/cgwatchdog/dist/src/cli.js');
  assert.deepEqual(entry.slice(1, -1), productionNodeFlags());
  assert.deepEqual(containerfileExec('CMD'), daemonContainer(ds).args);
  assert.equal(configArg(ds), '/etc/cgwatchdog/config.yaml');
  const base = /^ARG BASE=(\S+)$/m.exec(fs.readFileSync(CONTAINERFILE, 'utf8'))?.[1];
  assert.ok(base, 'ARG BASE=<image>');
  assert.ok(fs.readFileSync(BUILD_BASE, 'utf8').includes(`image=\${1:-${base}}`), `build-base.sh's default image is ${base}`);
  const env = Object.fromEntries((daemonContainer(ds).env as { name: string; value: string }[]).map((e) => [e.name, e.value]));
  const unit = fs.readFileSync(path.join(path.dirname(CONTAINERFILE), '..', '..', 'systemd', 'cgwatchdog.service'), 'utf8');
  assert.equal(env.UV_THREADPOOL_SIZE, /^Environment=UV_THREADPOOL_SIZE=(\d+)$/m.exec(unit)?.[1]);
});
