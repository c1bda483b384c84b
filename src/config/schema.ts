import { createHash } from 'node:crypto';
import { z } from 'zod';

// One definition of the configuration: the YAML is validated against this schema and the
// rest of the program sees only the typed result. Defaults live here and nowhere else;
// config/default.yaml documents them key by key.

const positiveInt = z.number().int().positive();
const percent = z.number().gt(0).lte(100);

export const Severity = z.enum(['info', 'warning', 'critical']);
export type Severity = z.infer<typeof Severity>;

export const AlertKind = z.enum([
  'pids-max', // forks rejected at pids.max
  'memory-max', // memory.max (v2) or the memory limit (v1 failcnt) hit
  'memory-high', // memory.high throttling (v2)
  'oom', // the memcg OOM killer was invoked
  'oom-kill', // a process was OOM-killed in the container
  'oom-group-kill', // memory.oom.group killed the whole cgroup (v2)
  'pids-warning', // pids.current at or above warnPercent of pids.max
  'memory-warning', // memory usage at or above its percentage of the limit
  'host-pids-warning', // host task count near kernel.pid_max
  'pids-policy-too-low', // the policy value is below the tasks a container runs: not written
  'test', // `cgwatchdog test-alert`: never raised by detection
]);
export type AlertKind = z.infer<typeof AlertKind>;

const secretRef = z
  .object({
    file: z.string().min(1).optional(),
    env: z.string().min(1).optional(),
  })
  .strict()
  .refine((s) => (s.file === undefined) !== (s.env === undefined), {
    message: 'give exactly one of "file" or "env"',
  });
export type SecretRef = z.infer<typeof secretRef>;

const sinkCommon = {
  name: z.string().min(1).optional(),
  url: z
    .string()
    .url()
    .refine((u) => /^https?:\/\//i.test(u), { message: 'expected an http:// or https:// URL' }),
  kinds: z.array(AlertKind).optional(), // absent: every kind
  minSeverity: Severity.default('info'),
  headers: z.record(z.string(), z.string()).default({}),
  bearerToken: secretRef.optional(),
  hmac: z
    .object({
      secret: secretRef,
      header: z.string().min(1).default('X-Cgwatchdog-Signature'),
    })
    .strict()
    .optional(),
  timeoutMs: positiveInt.default(5000),
  retry: z
    .object({
      initialDelayMs: positiveInt.default(500),
      maxDelayMs: positiveInt.default(60_000),
    })
    .strict()
    .default({ initialDelayMs: 500, maxDelayMs: 60_000 }),
};

export const SinkConfig = z.discriminatedUnion('type', [
  z.object({ type: z.literal('webhook'), ...sinkCommon }).strict(),
  z.object({ type: z.literal('slack'), ...sinkCommon }).strict(),
  z
    .object({
      type: z.literal('alertmanager'),
      ...sinkCommon,
      // Alertmanager forgets an alert whose endsAt passes: re-send while firing, as Prometheus does.
      resendIntervalSeconds: positiveInt.default(60),
    })
    .strict(),
]);
export type SinkConfig = z.infer<typeof SinkConfig>;

/** The outbox's own directory beside the sinks' (entries it could not read): no sink may take its name. */
export const RESERVED_SINK_NAME = 'corrupt';

/**
 * The name a sink's outbox directory and metrics use. Without a configured name: type plus a
 * hash of the URL (a Slack webhook URL is a secret; it never appears in names or logs).
 */
export function sinkName(cfg: Pick<SinkConfig, 'name' | 'type' | 'url'>): string {
  return cfg.name ?? `${cfg.type}-${createHash('sha256').update(cfg.url).digest('hex').slice(0, 8)}`;
}

/**
 * Two sinks with one name would share an outbox directory and a metrics series: refused here,
 * so a reload with them is refused before anything of it is applied. The issue names the key
 * (`name`, or `url` for two unnamed sinks of one type and URL; its value is never shown).
 */
const sinkList = z.array(SinkConfig).superRefine((sinks, ctx) => {
  const first = new Map<string, number>();
  sinks.forEach((s, i) => {
    const n = sinkName(s);
    const key = s.name !== undefined ? 'name' : 'url';
    if (n === RESERVED_SINK_NAME) ctx.addIssue({ code: 'custom', path: [i, key], message: `sink name "${n}" is reserved by the outbox (its directory of unreadable entries): choose another name` });
    const j = first.get(n);
    if (j === undefined) first.set(n, i);
    else if (s.name !== undefined) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `alerts.sinks[${j}] has this name too: give each sink a distinct name` });
    else ctx.addIssue({ code: 'custom', path: [i, 'url'], message: `alerts.sinks[${j}] has the same type and URL, or a name equal to this one's default "${n}": give each sink a distinct name` });
  });
});

const override = z
  .object({
    // A regular expression tested against the container's cgroup path (relative to the hierarchy root).
    pathPattern: z.string().min(1).optional(),
    runtime: z.string().min(1).optional(),
    exclude: z.boolean().default(false),
    minCores: positiveInt.optional(),
    pidsPerCore: positiveInt.optional(),
    pidsMax: positiveInt.optional(), // a fixed value, in place of the formula
  })
  .strict()
  .refine((o) => o.pathPattern !== undefined || o.runtime !== undefined, {
    message: 'an override needs "pathPattern" or "runtime"',
  });
export type PolicyOverride = z.infer<typeof override>;

const extraPattern = z
  .object({
    runtime: z.string().min(1),
    // A regular expression tested against the last path component; a named group "id"
    // captures the container id (else the whole component is the id).
    pattern: z.string().min(1),
  })
  .strict();
export type ExtraPattern = z.infer<typeof extraPattern>;

export const ConfigSchema = z
  .object({
    mode: z.enum(['enforce', 'observe']).default('enforce'),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).default('info'),
    paths: z
      .object({
        cgroupRoot: z.string().startsWith('/').default('/sys/fs/cgroup'),
        procRoot: z.string().startsWith('/').default('/proc'),
        kmsg: z.string().startsWith('/').default('/dev/kmsg'),
        stateDir: z.string().startsWith('/').default('/var/lib/cgwatchdog'),
        // `cgwatchdog status` asks the running daemon here (root only: the directory 0700, the socket 0600).
        statusSocket: z.string().startsWith('/').default('/run/cgwatchdog/status.sock'),
        // The native hook client asks the running daemon here (root only, as the status socket).
        hookSocket: z.string().startsWith('/').default('/run/cgwatchdog/hook.sock'),
      })
      .strict()
      .prefault({}),
    kernel: z
      .object({
        manage: z.boolean().default(true),
        pidMax: z.number().int().min(301).max(4194304).default(4194304),
        persist: z.boolean().default(false),
        dropInPath: z.string().startsWith('/').default('/etc/sysctl.d/60-cgwatchdog-pid-max.conf'),
      })
      .strict()
      .prefault({}),
    policy: z
      .object({
        minCores: positiveInt.default(6),
        pidsPerCore: positiveInt.default(1024),
        existing: z.enum(['keep-lower', 'replace']).default('keep-lower'),
        overrides: z.array(override).default([]),
      })
      .strict()
      .prefault({}),
    discovery: z
      .object({
        // Subtrees (relative to each hierarchy root) to look for containers in.
        roots: z.array(z.string().startsWith('/')).min(1).default(['/']),
        maxDepth: positiveInt.max(32).default(10),
        runtimes: z
          .array(z.enum(['docker', 'containerd', 'crio', 'podman', 'lxc']))
          .default(['docker', 'containerd', 'crio', 'podman', 'lxc']),
        extraPatterns: z.array(extraPattern).default([]),
        // containerd alone (ctr, nerdctl) makes /<namespace>/<id>: the namespaces to claim.
        containerdNamespaces: z.array(z.string().regex(/^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,74}[A-Za-z0-9])?$/, 'a containerd namespace name')).default(['default']),
        // `docker run --cgroup-parent /x` (cgroupfs driver) puts the container at /x/<id>: the parents to claim.
        dockerCgroupParents: z.array(z.string().regex(/^\/[^\0]*$/, 'an absolute cgroup path, e.g. "/tenant-a"')).default([]),
        reconcileSchedule: z.string().min(1).default('* * * * *'),
      })
      .strict()
      .prefault({}),
    detection: z
      .object({
        inotify: z.boolean().default(true),
        kmsg: z.boolean().default(true),
        sweepIntervalMs: positiveInt.min(50).default(1000),
        warnings: z
          .object({
            intervalMs: positiveInt.min(100).default(5000),
            pidsPercent: percent.default(80),
            memoryPercent: percent.default(90),
            hostTasksPercent: percent.default(80),
            // A warning clears only once the value falls this many points below its threshold.
            hysteresisPercent: z.number().min(0).max(50).default(5),
          })
          .strict()
          .prefault({}),
      })
      .strict()
      .prefault({}),
    alerts: z
      .object({
        host: z.string().min(1).optional(), // default: the machine's hostname
        repeatIntervalSeconds: positiveInt.default(300),
        // Counted in the metrics, never alerted: memory.events max/high (v1 failcnt) count
        // reclaims at the limit, which healthy cache-heavy containers do all day.
        metricOnlyKinds: z.array(AlertKind).default(['memory-max', 'memory-high']),
        // How long a first message waits for a name lookup under way; the labels are then fixed
        // for the alert's life (detection never waits).
        nameWaitMs: z.number().int().min(0).max(10_000).default(500),
        resolveAfterSeconds: positiveInt.default(120),
        outbox: z
          .object({
            dir: z.string().startsWith('/').optional(), // default: <stateDir>/outbox
            maxEntries: positiveInt.default(10_000),
            ttlSeconds: positiveInt.default(86_400), // an entry still undelivered after this is dropped (counted)
          })
          .strict()
          .prefault({}),
        sinks: sinkList.default([]),
      })
      .strict()
      .prefault({}),
    names: z
      .object({
        dockerSocket: z.string().startsWith('/').default('/var/run/docker.sock'),
        podmanSocket: z.string().startsWith('/').default('/run/podman/podman.sock'),
        podmanBinary: z.string().default('podman'), // empty: never run podman inspect
        // containers/storage's graph root: podman's names and images, read without a lock; "" never reads it.
        containersStorage: z.union([z.literal(''), z.string().startsWith('/')]).default('/var/lib/containers/storage'),
        // containerd's own API, for ctr and nerdctl containers (image, nerdctl's name); "" never asks.
        containerdSocket: z.union([z.literal(''), z.string().startsWith('/')]).default('/run/containerd/containerd.sock'),
        kubernetesPodLogs: z.string().startsWith('/').default('/var/log/pods'),
        // Kubernetes containers (containerd under a pod, CRI-O) are asked about over CRI, at the
        // first of these that exists and knows the id; [] never asks.
        criSockets: z.array(z.string().startsWith('/')).default(['/run/containerd/containerd.sock', '/run/crio/crio.sock']),
        timeoutMs: positiveInt.default(2000),
      })
      .strict()
      .prefault({}),
    hooks: z
      .object({
        // false (fail open): a hook that cannot set the limit lets the container start (logged,
        // counted; the daemon applies the limit as without hooks). true: the container is refused.
        failClosed: z.boolean().default(false),
        // The real runc the Docker wrapper runs; "" finds it in /usr/bin, /usr/sbin, /usr/local/bin.
        runcPath: z.union([z.literal(''), z.string().regex(/^\/[^\0]*$/, 'an absolute path')]).default(''),
      })
      .strict()
      .prefault({}),
    metrics: z
      .object({
        enabled: z.boolean().default(true),
        listen: z
          .string()
          .regex(/^(\[[0-9a-fA-F:]+\]|[0-9.]+|[A-Za-z0-9.-]*):\d{1,5}$/, 'expected "host:port", e.g. "0.0.0.0:9464"')
          .default('0.0.0.0:9464'),
        // A Prometheus exporter-toolkit web config (node_exporter's --web.config.file): TLS and
        // basic auth for every endpoint. Read at load and at every reload (src/metrics/web-config.ts).
        webConfigFile: z.string().startsWith('/').optional(),
      })
      .strict()
      .prefault({}),
  })
  .strict();

export type Config = z.infer<typeof ConfigSchema>;
