/**
 * deploy/kubernetes/*.yaml and deploy/container/Containerfile, read for the tests: the manifest
 * tests check them against the Kubernetes API schemas (kubernetes-models) and against each
 * other; the image test runs the image the way the DaemonSet says.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

/** The repository root, from dist/test/helpers. */
export const REPO = path.resolve(__dirname, '..', '..', '..');
export const MANIFEST_DIR = path.join(REPO, 'deploy', 'kubernetes');
export const CONTAINERFILE = path.join(REPO, 'deploy', 'container', 'Containerfile');
export const BUILD_BASE = path.join(REPO, 'deploy', 'container', 'build-base.sh');

export interface Manifest {
  file: string;
  doc: Record<string, any>;
}

/** Every YAML document of every file in deploy/kubernetes, in file order. */
export function loadManifests(): Manifest[] {
  const out: Manifest[] = [];
  for (const name of fs.readdirSync(MANIFEST_DIR).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    const file = path.join(MANIFEST_DIR, name);
    for (const d of YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'))) {
      if (d.errors.length) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
      const doc = d.toJS();
      if (doc !== null && doc !== undefined) out.push({ file, doc });
    }
  }
  return out;
}

/** The one manifest of a kind; throws naming the kind when there is not exactly one. */
export function manifestOfKind(kind: string, all = loadManifests()): Record<string, any> {
  const found = all.filter((m) => m.doc.kind === kind);
  if (found.length !== 1) throw new Error(`expected one ${kind} in ${MANIFEST_DIR}, found ${found.length}`);
  return found[0]!.doc;
}

/** The DaemonSet's one container. */
export function daemonContainer(ds: Record<string, any>): Record<string, any> {
  const cs = ds.spec.template.spec.containers as Record<string, any>[];
  if (cs.length !== 1) throw new Error(`expected one container in the DaemonSet, found ${cs.length}`);
  return cs[0]!;
}

/** Where the container sees a volume, and the volume: every volumeMount joined with its volume. */
export function mountsOf(ds: Record<string, any>): { mountPath: string; readOnly: boolean; volume: Record<string, any> }[] {
  const volumes = new Map<string, Record<string, any>>((ds.spec.template.spec.volumes as Record<string, any>[]).map((v) => [v.name, v]));
  return (daemonContainer(ds).volumeMounts as Record<string, any>[]).map((m) => {
    const volume = volumes.get(m.name);
    if (!volume) throw new Error(`volumeMount ${m.name} names no volume`);
    return { mountPath: m.mountPath, readOnly: m.readOnly === true, volume };
  });
}

/** The mount of the hostPath volume for `hostPath`; throws when there is none. */
export function mountOfHostPath(ds: Record<string, any>, hostPath: string): { mountPath: string; readOnly: boolean; volume: Record<string, any> } {
  const m = mountsOf(ds).find((x) => x.volume.hostPath?.path === hostPath);
  if (!m) throw new Error(`the DaemonSet mounts no hostPath ${hostPath}`);
  return m;
}

/** The config file the DaemonSet's args name (`--config <file>`). */
export function configArg(ds: Record<string, any>): string {
  const args = daemonContainer(ds).args as string[];
  const i = args.indexOf('--config');
  if (i < 0 || !args[i + 1]) throw new Error(`the DaemonSet's args have no --config: ${JSON.stringify(args)}`);
  return args[i + 1]!;
}

/** The ConfigMap's config file text (the key the DaemonSet's --config file is mounted from). */
export function configMapConfigText(all = loadManifests()): string {
  const ds = manifestOfKind('DaemonSet', all);
  const cm = manifestOfKind('ConfigMap', all);
  const file = configArg(ds);
  const m = mountsOf(ds).find((x) => x.volume.configMap && path.dirname(file) === x.mountPath);
  if (!m) throw new Error(`--config ${file} is not in a ConfigMap volume's mount`);
  if (m.volume.configMap.name !== cm.metadata.name) throw new Error(`the config volume names ConfigMap ${m.volume.configMap.name}, not ${cm.metadata.name}`);
  const text = cm.data?.[path.basename(file)];
  if (typeof text !== 'string') throw new Error(`ConfigMap ${cm.metadata.name} has no key ${path.basename(file)}`);
  return text;
}

/** A JSON-array instruction of the Containerfile (ENTRYPOINT, CMD). */
export function containerfileExec(instruction: 'ENTRYPOINT' | 'CMD'): string[] {
  const text = fs.readFileSync(CONTAINERFILE, 'utf8');
  const m = new RegExp(`^${instruction}\\s+(\\[.*\\])\\s*$`, 'm').exec(text);
  if (!m) throw new Error(`${CONTAINERFILE}: no ${instruction} [...] line`);
  return JSON.parse(m[1]!) as string[];
}
