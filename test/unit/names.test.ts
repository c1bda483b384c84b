import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import pino from 'pino';
import { NameResolver, isHexId, podFromLogDir } from '../../src/alerts/names';
import { namesFromContainerd } from '../../src/runtimes/containerd-client';

const DOCKER_ID = 'd'.repeat(12) + '0123456789abcdef'.repeat(3) + '0123';
const PODMAN_ID = 'e'.repeat(64);
const POD_UID = '7c5f3a2e-1b4d-4e8f-9a6b-0c1d2e3f4a5b';

function captureLogger() {
  const lines: Record<string, unknown>[] = [];
  return { log: pino({ level: 'debug' }, { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) }), lines };
}

/** A fake Docker/Podman API: a real HTTP server on a unix socket. */
async function fakeApi(socketPath: string, routes: Record<string, unknown>, delayMs = 0) {
  const paths: string[] = [];
  const server = http.createServer((req, res) => {
    paths.push(req.url ?? '');
    const body = routes[req.url ?? ''];
    setTimeout(() => {
      if (body === undefined) res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"message":"No such container"}');
      else res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
    }, delayMs);
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  return {
    paths,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const made: string[] = [];
after(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

function setup() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgw-names-'));
  made.push(dir);
  const pods = path.join(dir, 'pods');
  fs.mkdirSync(pods);
  fs.mkdirSync(path.join(pods, `shop_web-1-abc_${POD_UID}`));
  fs.mkdirSync(path.join(pods, 'kube-system_coredns-5d78c9869d-abcde_11111111-2222-3333-4444-555555555555'));
  const marker = path.join(dir, 'podman-ran');
  const fakePodman = path.join(dir, 'podman');
  fs.writeFileSync(fakePodman, `#!/bin/sh\necho "$@" > ${marker}\necho '[{"Name":"from-cli","ImageName":"docker.io/library/redis:7","Config":{"Labels":{}}}]'\n`, { mode: 0o755 });
  const { log, lines } = captureLogger();
  const opts = {
    dockerSocket: path.join(dir, 'docker.sock'),
    podmanSocket: path.join(dir, 'podman.sock'),
    podmanBinary: fakePodman,
    kubernetesPodLogs: pods,
    timeoutMs: 300,
    log,
  };
  return { dir, opts, marker, lines };
}

test('Docker: name without the leading slash, image, k8s pod labels; cached per id', async () => {
  const { opts } = setup();
  const api = await fakeApi(opts.dockerSocket, {
    [`/containers/${DOCKER_ID}/json`]: {
      Id: DOCKER_ID,
      Name: '/k8s_web_web-1-abc_shop_uid_0',
      Config: { Image: 'nginx:1.27', Labels: { 'io.kubernetes.pod.name': 'web-1-abc', 'io.kubernetes.pod.namespace': 'shop' } },
    },
  });
  const r = new NameResolver(opts);
  const info = await r.lookup({ id: DOCKER_ID, runtime: 'docker' });
  assert.deepEqual(info, { name: 'k8s_web_web-1-abc_shop_uid_0', image: 'nginx:1.27', podName: 'web-1-abc', podNamespace: 'shop' });
  await r.lookup({ id: DOCKER_ID, runtime: 'docker' });
  await Promise.all([r.lookup({ id: DOCKER_ID, runtime: 'docker' }), r.lookup({ id: DOCKER_ID, runtime: 'docker' })]);
  assert.equal(api.paths.length, 1, 'one request per id');
  await api.close();
});

test('failures leave the id as the name, logged at debug; slow API times out', async () => {
  const { opts, lines } = setup();
  const r = new NameResolver(opts);
  // No socket at all.
  assert.deepEqual(await r.lookup({ id: DOCKER_ID, runtime: 'docker' }), {});
  assert.ok(lines.some((l) => l.level === 20 && l.msg === 'name lookup failed; the id stays the name' && l.source === 'docker'));
  // 404 and a slow API.
  const api = await fakeApi(opts.dockerSocket, { [`/containers/${'a'.repeat(64)}/json`]: { Name: '/slow' } }, 1000);
  const r2 = new NameResolver(opts);
  assert.deepEqual(await r2.lookup({ id: 'f'.repeat(64), runtime: 'docker' }), {});
  const t0 = Date.now();
  assert.deepEqual(await r2.lookup({ id: 'a'.repeat(64), runtime: 'docker' }), {});
  assert.ok(Date.now() - t0 < 900, 'timed out at names.timeoutMs');
  assert.ok(lines.some((l) => String(l.err).includes('timeout after 300 ms')));
  await api.close();
});

test('Podman: the API socket when it exists, else podman inspect with an argument array', async () => {
  const { opts, marker } = setup();
  const api = await fakeApi(opts.podmanSocket, {
    [`/v4.0.0/libpod/containers/${PODMAN_ID}/json`]: { Name: 'db-1', ImageName: 'docker.io/library/postgres:16', Config: { Image: 'docker.io/library/postgres:16', Labels: null } },
  });
  const r = new NameResolver(opts);
  assert.deepEqual(await r.lookup({ id: PODMAN_ID, runtime: 'podman' }), { name: 'db-1', image: 'docker.io/library/postgres:16' });
  assert.ok(!fs.existsSync(marker), 'the socket was used, podman not run');
  await api.close();
  fs.rmSync(opts.podmanSocket, { force: true });

  const r2 = new NameResolver(opts);
  assert.deepEqual(await r2.lookup({ id: PODMAN_ID, runtime: 'podman' }), { name: 'from-cli', image: 'docker.io/library/redis:7' });
  assert.equal(fs.readFileSync(marker, 'utf8').trim(), `inspect --format json ${PODMAN_ID}`);
});

test('an id that is not hex is refused without running anything', async () => {
  const { opts, marker, lines } = setup();
  const r = new NameResolver(opts);
  for (const bad of ['$(touch /tmp/x)', 'abc', 'ABCDEF0123456789', `${'a'.repeat(12)}; rm -rf /`, '--help', `../${'a'.repeat(12)}`]) {
    assert.equal(isHexId(bad), false);
    assert.deepEqual(await r.lookup({ id: bad, runtime: 'podman' }), {});
    await assert.rejects(r.podmanInspect(bad), /not a hex container id/);
  }
  assert.ok(!fs.existsSync(marker), 'podman never ran');
  assert.ok(lines.some((l) => String(l.err).includes('not a hex container id')));
});

test('Kubernetes pod name and namespace from the pod-logs directory', async () => {
  const { opts } = setup();
  assert.deepEqual(await podFromLogDir(opts.kubernetesPodLogs, POD_UID), { podName: 'web-1-abc', podNamespace: 'shop' });
  assert.equal(await podFromLogDir(opts.kubernetesPodLogs, '00000000-0000-0000-0000-000000000000'), undefined);
  const r = new NameResolver(opts);
  assert.deepEqual(await r.lookup({ id: 'c'.repeat(64), runtime: 'containerd', podUid: POD_UID }), { podName: 'web-1-abc', podNamespace: 'shop' });
  assert.deepEqual(await r.lookup({ id: 'c'.repeat(63) + 'd', runtime: 'crio', podUid: POD_UID.toUpperCase() }), { podName: 'web-1-abc', podNamespace: 'shop' });
  assert.deepEqual(await r.lookup({ id: 'my-lxc', runtime: 'lxc' }), { name: 'my-lxc' });
});

test('a failed lookup is retried after failureTtlMs; a success stays cached until forget()', async () => {
  const { opts } = setup();
  let t = 0;
  const r = new NameResolver({ ...opts, failureTtlMs: 1000, now: () => t });
  assert.deepEqual(await r.lookup({ id: DOCKER_ID, runtime: 'docker' }), {});
  const api = await fakeApi(opts.dockerSocket, { [`/containers/${DOCKER_ID}/json`]: { Name: '/late', Config: { Image: 'x' } } });
  assert.deepEqual(await r.lookup({ id: DOCKER_ID, runtime: 'docker' }), {}, 'still within the failure TTL');
  t += 1001;
  assert.deepEqual(await r.lookup({ id: DOCKER_ID, runtime: 'docker' }), { name: 'late', image: 'x' });
  t += 1_000_000;
  await r.lookup({ id: DOCKER_ID, runtime: 'docker' });
  assert.equal(api.paths.length, 1);
  r.forget(DOCKER_ID);
  await r.lookup({ id: DOCKER_ID, runtime: 'docker' });
  assert.equal(api.paths.length, 2);
  await api.close();
});

test("containerd's record: nerdctl's name label before the id, the image when it has one", () => {
  assert.deepEqual(namesFromContainerd({ id: 'a'.repeat(64), image: 'docker.io/library/nginx:1', labels: { 'nerdctl/name': 'web-1' } }, 'a'.repeat(64)), { name: 'web-1', image: 'docker.io/library/nginx:1' });
  assert.deepEqual(namesFromContainerd({ id: 'redis-1', image: '', labels: {} }, 'redis-1'), { name: 'redis-1' });
  assert.deepEqual(namesFromContainerd(null, 'x'), { name: 'x' });
});

test('canAsk: only where a source exists, so alerts of containers nobody can name do not wait for a lookup', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-names-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const sock = path.join(dir, 'docker.sock');
  const base = { dockerSocket: sock, podmanSocket: path.join(dir, 'podman.sock'), podmanBinary: '', kubernetesPodLogs: path.join(dir, 'pods'), criSockets: [path.join(dir, 'cri.sock')], containerdSocket: '', timeoutMs: 100, log: pino({ level: 'silent' }) };
  const r = new NameResolver(base);
  assert.equal(r.canAsk({ runtime: 'docker' }), false, 'no Docker socket');
  fs.writeFileSync(sock, '');
  assert.equal(r.canAsk({ runtime: 'docker' }), true);
  assert.equal(r.canAsk({ runtime: 'podman' }), false, 'no podman socket, podman inspect off');
  assert.equal(new NameResolver({ ...base, podmanBinary: 'podman' }).canAsk({ runtime: 'podman' }), true);
  assert.equal(r.canAsk({ runtime: 'containerd', podUid: POD_UID }), false, 'no CRI socket, no pod logs');
  fs.mkdirSync(path.join(dir, 'pods'));
  assert.equal(r.canAsk({ runtime: 'containerd', podUid: POD_UID }), true);
  assert.equal(r.canAsk({ runtime: 'containerd', namespace: 'default' }), true, 'the id is the name');
  assert.equal(r.canAsk({ runtime: 'lxc' }), true);
});

test('podman: containers/storage\'s containers.json names it without running podman; re-read when it changes; inspect when it does not know the id', async () => {
  const { dir, opts, marker } = setup();
  const graph = path.join(dir, 'storage');
  fs.mkdirSync(path.join(graph, 'overlay-containers'), { recursive: true });
  const file = path.join(graph, 'overlay-containers', 'containers.json');
  const entry = (id: string, name: string) => ({ id, names: [name], image: 'f'.repeat(64), metadata: JSON.stringify({ 'image-name': 'localhost/app:1', name }) });
  fs.writeFileSync(file, JSON.stringify([entry(PODMAN_ID, 'web')]));
  const r = new NameResolver({ ...opts, containersStorage: graph });
  assert.deepEqual(await r.lookup({ id: PODMAN_ID, runtime: 'podman' }), { name: 'web', image: 'localhost/app:1' });
  assert.equal(fs.existsSync(marker), false, 'podman inspect ran although containers.json knew the container');
  const second = 'a'.repeat(64);
  fs.writeFileSync(file, JSON.stringify([entry(PODMAN_ID, 'web'), entry(second, 'db')]));
  assert.deepEqual(await r.lookup({ id: second, runtime: 'podman' }), { name: 'db', image: 'localhost/app:1' });
  // Unknown there (or a torn file): podman inspect answers.
  fs.writeFileSync(file, '[{"id":');
  const third = 'b'.repeat(64);
  assert.deepEqual(await r.lookup({ id: third, runtime: 'podman' }), { name: 'from-cli', image: 'docker.io/library/redis:7' });
  assert.equal(fs.existsSync(marker), true);
});
