/**
 * `cgwatchdog test-alert` as the operator runs it (the real CLI, real HTTP receivers on
 * 127.0.0.1): one answering 200 gets the test alert, one answering 500 fails it and the exit
 * code is 1 naming it; a sink whose filter leaves "test" out is skipped and says why; nothing
 * is written to the state directory (a running daemon's outbox and alert states are its own).
 * Through a real Alertmanager: its route matches the test alert's labels and hands it to a
 * webhook receiver of the test's, which is where the operator sees it arrive.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli, startWebhookReceiver } from '../helpers/daemon';
import { need } from '../helpers/prereq';
import { ALERTMANAGER, startAlertmanager, until } from '../helpers/prometheus';

function tmpDir(t: { after(fn: () => void): void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'cgwd-test-alert-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

test('test-alert: delivered to the 200 receiver, the 500 one named as failed (exit 1), a filtered sink skipped; no state written', async (t) => {
  const secret = randomBytes(16).toString('hex');
  const good = await startWebhookReceiver({ hmacSecret: secret });
  t.after(() => good.close());
  const bad = await startWebhookReceiver({ failWith: 500 });
  t.after(() => bad.close());
  const dir = tmpDir(t);
  const state = path.join(dir, 'state');
  const cfgFile = path.join(dir, 'config.yaml');
  const cfg = {
    paths: { stateDir: state },
    alerts: {
      host: 'test-host',
      sinks: [
        { type: 'webhook', name: 'good-hook', url: good.url, hmac: { secret: { env: 'CGWD_TEST_ALERT_SECRET' } } },
        { type: 'webhook', name: 'bad-hook', url: bad.url },
        { type: 'webhook', name: 'pages-only', url: good.url, kinds: ['pids-max'] },
        { type: 'slack', name: 'chat', url: good.url, hmac: { secret: { env: 'CGWD_TEST_ALERT_SECRET' } } },
      ],
    },
  };
  fs.writeFileSync(cfgFile, JSON.stringify(cfg));
  const env = { CGWD_TEST_ALERT_SECRET: secret };

  const t0 = Date.now();
  const r = await runCli(['test-alert', '--config', cfgFile], { env });
  t.diagnostic(`exit ${r.code} in ${Date.now() - t0} ms:\n${r.stdout}${r.stderr}`);
  assert.equal(r.code, 1, 'a failed sink must exit 1');
  assert.match(r.stdout, /^ {2}good-hook \(webhook\): delivered \(HTTP 200\)$/m);
  assert.match(r.stdout, /^ {2}bad-hook \(webhook\): FAILED: HTTP 500: test receiver says no$/m);
  assert.match(r.stdout, /^ {2}pages-only \(webhook\): skipped: its kinds \[pids-max\] leave out "test"/m);
  assert.match(r.stdout, /^ {2}chat \(slack\): delivered \(HTTP 200\)$/m);

  const hooks = good.received.filter((x) => x.alert?.kind === 'test');
  assert.equal(hooks.length, 1, `the 200 receiver got ${hooks.length} webhook test alerts`);
  const got = hooks[0]!;
  assert.equal(got.hmacOk, true, 'the HMAC of the test alert did not verify');
  const a = got.alert;
  assert.equal(a.severity, 'info');
  assert.equal(a.state, 'firing');
  assert.equal(a.host, 'test-host');
  assert.match(a.summary, /TEST alert/);
  assert.match(a.idempotencyKey, /^test-[0-9a-f-]{36}$/);
  assert.equal(got.headers['idempotency-key'], a.idempotencyKey);
  const slack = good.received.find((x) => typeof x.alert?.text === 'string');
  assert.match(slack?.alert.text, /^\[INFO\] test-host: TEST alert/);
  assert.equal(bad.rejectedCount(), 1, 'the failing sink is tried once, not retried');
  assert.equal(fs.existsSync(state), false, 'test-alert wrote to the state directory');

  // All good: exit 0; every run its own idempotency key; --json says the same per sink.
  const ok = { ...cfg, alerts: { ...cfg.alerts, sinks: [cfg.alerts.sinks[0]] } };
  fs.writeFileSync(cfgFile, JSON.stringify(ok));
  const j = await runCli(['test-alert', '--json', '--config', cfgFile], { env });
  assert.equal(j.code, 0, j.stderr);
  const out = JSON.parse(j.stdout) as { alert: { idempotencyKey: string }; results: { sink: string; outcome: string }[] };
  assert.deepEqual(out.results.map((x) => [x.sink, x.outcome]), [['good-hook', 'delivered']]);
  assert.notEqual(out.alert.idempotencyKey, a.idempotencyKey);
  assert.equal(good.received.filter((x) => x.alert?.kind === 'test').at(-1)?.alert.idempotencyKey, out.alert.idempotencyKey);

  // No sink at all: one sentence, exit 1.
  fs.writeFileSync(cfgFile, JSON.stringify({ paths: { stateDir: state } }));
  const none = await runCli(['test-alert', '--config', cfgFile]);
  assert.equal(none.code, 1);
  assert.match(none.stderr.trim(), /^cgwatchdog: test-alert: no alert sinks are configured/);
});

test('test-alert through a real Alertmanager: its route sends the test alert, labels and all, to the receiver behind it', async (t) => {
  need(fs.existsSync(ALERTMANAGER), `${ALERTMANAGER} (apt-get install prometheus-alertmanager)`);
  const hook = await startWebhookReceiver();
  t.after(() => hook.close());
  const other = await startWebhookReceiver();
  t.after(() => other.close());
  // The test alert's route is matched by its labels; everything else goes elsewhere, so an
  // alert reaching `hook` proves the labels Alertmanager routed on, not a default route.
  const am = await startAlertmanager(
    t,
    [
      'route:',
      "  receiver: 'other'",
      '  group_wait: 0s',
      '  group_interval: 1s',
      '  routes:',
      '    - receiver: hook',
      '      matchers: [\'kind="test"\', \'host="am-test-host"\', \'severity="info"\']',
      'receivers:',
      "  - name: 'other'",
      '    webhook_configs:',
      `      - url: '${other.url}'`,
      "  - name: 'hook'",
      '    webhook_configs:',
      `      - url: '${hook.url}'`,
      '        send_resolved: false',
      '',
    ].join('\n'),
  );
  const dir = tmpDir(t);
  const cfgFile = path.join(dir, 'config.yaml');
  fs.writeFileSync(
    cfgFile,
    JSON.stringify({ paths: { stateDir: path.join(dir, 'state') }, alerts: { host: 'am-test-host', sinks: [{ type: 'alertmanager', name: 'am', url: `${am.url}/` }] } }),
  );

  const t0 = Date.now();
  const r = await runCli(['test-alert', '--json', '--config', cfgFile]);
  assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
  const out = JSON.parse(r.stdout) as { results: { sink: string; outcome: string }[] };
  assert.deepEqual(out.results.map((x) => [x.sink, x.outcome]), [['am', 'delivered']]);

  type AmWebhook = { receiver: string; status: string; alerts: { labels: Record<string, string>; annotations: Record<string, string>; status: string }[] };
  const got = await until(
    () => hook.received.map((x) => x.alert as AmWebhook | undefined).find((b) => b?.alerts?.some((a) => a.labels.kind === 'test')),
    15_000,
    () => `the test alert at the webhook behind Alertmanager (other receiver got ${other.received.length}; alertmanager: ${am.stderr().slice(-1000)})`,
  );
  t.diagnostic(`test-alert -> Alertmanager -> webhook in ${Date.now() - t0} ms`);
  assert.equal(got.receiver, 'hook');
  assert.equal(got.status, 'firing');
  assert.equal(got.alerts.length, 1);
  const a = got.alerts[0]!;
  assert.deepEqual(a.labels, { alertname: 'CgwatchdogTest', severity: 'info', kind: 'test', host: 'am-test-host', limit_scope: 'node', cgroup: '/' });
  assert.match(a.annotations.summary ?? '', /TEST alert/);
  assert.equal(other.received.length, 0, 'nothing went to the other route');
});
