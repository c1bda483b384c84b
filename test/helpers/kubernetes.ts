/**
 * deploy/kubernetes/*.yaml and deploy/container/Containerfile, read for the tests: the manifest
 * tests check them against the Kubernetes API schemas (kubernetes-models) and against each
 * other; the image test runs the image the way the DaemonSet says.
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import ts from 'typescript';

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

/**
 * Unknown keys, refused. kubernetes-models ships its OpenAPI schemas compiled to ajv validators
 * that accept any extra key (the schemas have no additionalProperties: false), so a misspelt
 * `hostPid` passes validate() and the API server would prune it silently. The package also
 * ships the same schemas as TypeScript declarations (one interface per definition, a property
 * per schema property, an index signature for an additionalProperties map, `string | number`
 * for int-or-string): this walks each manifest against those with the TypeScript checker,
 * following each property's type as a $ref, and names the path of every key the schema does
 * not have, every wrong type and every missing required field.
 */
export function strictSchemaErrors(doc: Record<string, any>): string[] {
  const checker = k8sChecker();
  const mod = `kubernetes-models/${doc.apiVersion}/${doc.kind}`;
  const root = checker.rootType(mod, `I${doc.kind}`);
  if (!root) return [`no schema for ${doc.apiVersion} ${doc.kind} (${mod})`];
  const errors: string[] = [];
  walk(checker.checker, doc, root, '', errors);
  return errors;
}

let cached: { checker: ts.TypeChecker; rootType(mod: string, name: string): ts.Type | undefined } | undefined;

function k8sChecker(): NonNullable<typeof cached> {
  if (cached) return cached;
  // One program over a virtual file importing every kind the manifests use; the checker then
  // resolves kubernetes-models' declarations from the repository's node_modules.
  const kinds = [...new Set(loadManifests().map((m) => `kubernetes-models/${m.doc.apiVersion}/${m.doc.kind}`))];
  const extra = ['kubernetes-models/apps/v1/DaemonSet', 'kubernetes-models/v1/ConfigMap', 'kubernetes-models/v1/Namespace', 'kubernetes-models/v1/ServiceAccount'];
  const mods = [...new Set([...kinds, ...extra])];
  const virtual = path.join(REPO, '__k8s_strict__.ts');
  const text = mods.map((m, i) => `import * as m${i} from ${JSON.stringify(m)};\nexport { m${i} };`).join('\n');
  const options: ts.CompilerOptions = { strict: true, noEmit: true, types: [], skipLibCheck: true, module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10 };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (f, lang, ...rest) => (f === virtual ? ts.createSourceFile(f, text, lang) : getSourceFile(f, lang, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (f) => f === virtual || fileExists(f);
  const program = ts.createProgram([virtual], options, host);
  const checker = program.getTypeChecker();
  const sf = program.getSourceFile(virtual)!;
  const moduleSymbols = new Map<string, ts.Symbol>();
  sf.statements.filter(ts.isImportDeclaration).forEach((imp) => {
    const sym = checker.getSymbolAtLocation(imp.moduleSpecifier);
    if (sym) moduleSymbols.set((imp.moduleSpecifier as ts.StringLiteral).text, sym);
  });
  cached = {
    checker,
    rootType(mod, name) {
      const sym = moduleSymbols.get(mod);
      const exp = sym && checker.getExportsOfModule(sym).find((s) => s.name === name);
      return exp && checker.getDeclaredTypeOfSymbol(exp.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exp) : exp);
    },
  };
  return cached;
}

function jsType(v: unknown): string {
  return Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v;
}

function walk(checker: ts.TypeChecker, value: unknown, declared: ts.Type, at: string, errors: string[]): void {
  const where = at || '(root)';
  if (value === undefined || value === null) return;
  const type = checker.getNonNullableType(declared);
  if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return;
  const members = type.isUnion() ? type.types : [type];
  // Primitive members (int-or-string is `string | number`, boolean is `true | false`).
  const prim = members.filter((t) => t.flags & (ts.TypeFlags.StringLike | ts.TypeFlags.NumberLike | ts.TypeFlags.BooleanLike));
  const objs = members.filter((t) => !prim.includes(t));
  if (typeof value !== 'object') {
    const ok = prim.some((t) => {
      if (t.isStringLiteral()) return value === t.value;
      if (t.isNumberLiteral()) return value === t.value;
      if (t.flags & ts.TypeFlags.StringLike) return typeof value === 'string';
      if (t.flags & ts.TypeFlags.NumberLike) return typeof value === 'number';
      return typeof value === 'boolean';
    });
    if (!ok) errors.push(`${where}: ${JSON.stringify(value)} is not ${members.map((t) => checker.typeToString(t)).join(' | ')}`);
    return;
  }
  if (objs.length === 0) {
    errors.push(`${where}: ${jsType(value)} where the schema has ${checker.typeToString(type)}`);
    return;
  }
  if (objs.length > 1) {
    // No Kubernetes schema here has a union of object types; refuse rather than guess.
    errors.push(`${where}: cannot check a union of object types ${checker.typeToString(type)}`);
    return;
  }
  const t = objs[0]!;
  if (checker.isArrayType(t)) {
    if (!Array.isArray(value)) {
      errors.push(`${where}: ${jsType(value)} where the schema has an array`);
      return;
    }
    const el = checker.getTypeArguments(t as ts.TypeReference)[0]!;
    value.forEach((v, i) => walk(checker, v, el, `${at}[${i}]`, errors));
    return;
  }
  if (Array.isArray(value)) {
    errors.push(`${where}: array where the schema has ${checker.typeToString(t)}`);
    return;
  }
  const props = new Map(checker.getPropertiesOfType(t).map((p) => [p.name, p]));
  const map = checker.getIndexTypeOfType(t, ts.IndexKind.String);
  const obj = value as Record<string, unknown>;
  for (const [key, v] of Object.entries(obj)) {
    const sub = at ? `${at}.${key}` : key;
    const p = props.get(key);
    if (p) walk(checker, v, checker.getTypeOfSymbol(p), sub, errors);
    else if (map) walk(checker, v, map, sub, errors);
    else {
      const near = [...props.keys()].find((k) => k.toLowerCase() === key.toLowerCase());
      errors.push(`${sub}: unknown key${near ? ` (the schema has ${near})` : ''}`);
    }
  }
  for (const [name, p] of props) {
    if (!(p.flags & ts.SymbolFlags.Optional) && obj[name] === undefined) errors.push(`${at ? `${at}.` : ''}${name}: required, missing`);
  }
}
