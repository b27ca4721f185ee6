// The shop under a real Prometheus (Debian's prometheus and promtool, which
// .ci/run installs). Every process of the registry runs as a real child
// process; then:
//   - `promtool check metrics` finds nothing to say about any /metrics;
//   - every series the rules (deploy/prometheus/rules) and the Grafana
//     dashboard name is one the processes export, or one a recording rule
//     records;
//   - a prometheus server, configured by the generator's prometheusConfig
//     (the registry: one job per process) with the rule files, sees every
//     target up and evaluates every rule without an error;
//   - the rules' unit tests pass (`promtool test rules`), and compose's
//     prometheus.yml passes `promtool check config`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { ErrorCodes, PROCESSES, registry, type ProcessEntry } from '../subjects/index.ts';
import { PROMETHEUS_DIR, prometheusConfig } from '../scripts/deploy.ts';
import { startSmtpServer, type TestSmtpServer } from '../services/notification/test/smtp.ts';
import { launchProcess, type Launched } from '../scripts/lib/launcher.ts';
import { ROOT, dropTestDatabases, freePort, startNats, testDatabaseUrl, waitFor, type TestNats } from './harness.ts';

const RULES_DIR = join(PROMETHEUS_DIR, 'rules');
const RULE_TESTS_DIR = join(PROMETHEUS_DIR, 'tests');
const DASHBOARD = join(ROOT, 'deploy', 'grafana', 'dashboards', 'shop.json');

function binary(name: string): string {
  const variable = `${name.toUpperCase()}_BIN`;
  const found = [process.env[variable], `/usr/bin/${name}`, `/usr/local/bin/${name}`].find((path) => path && existsSync(path));
  if (!found) throw new Error(`no ${name} binary: install Debian's prometheus package (bash .ci/run does), or set ${variable}`);
  return found;
}

/** Runs a command to its end: its exit code and everything it wrote. */
function run(command: string, args: string[], input?: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, output }));
    child.stdin.end(input ?? '');
  });
}

let nats: TestNats;
let smtp: TestSmtpServer;
let work: string;
let prometheus: ChildProcess | undefined;
const running = new Map<string, { process: Launched; opsPort: number }>();

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'shop-prometheus-'));
  nats = await startNats();
  smtp = await startSmtpServer();
  await Promise.all(
    PROCESSES.map(async (name) => {
      const entry: ProcessEntry = registry[name];
      const opsPort = await freePort();
      const env: Record<string, string> = { NATS_URL: nats.url, OPS_PORT: String(opsPort), SHUTDOWN_TIMEOUT_MS: '2000' };
      if (entry.isService) env.DATABASE_URL = testDatabaseUrl(entry.name);
      if (name === 'notifications') Object.assign(env, { SMTP_HOST: '127.0.0.1', SMTP_PORT: String(smtp.port) });
      if (!entry.isService) {
        Object.assign(env, {
          BFF_HOST: '127.0.0.1',
          BFF_PORT: String(await freePort()),
          JWT_SECRET: 'prometheus-test-secret-0123456789-abcdef',
        });
      }
      let output = '';
      const launched = launchProcess(entry, {
        env: { LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'info', LOG_FORMAT: 'json', ...env },
        // Its last lines, for the error when it does not get ready.
        onLine: (line) => {
          output = `${output}${line}\n`.slice(-4000);
        },
      });
      running.set(name, { process: launched, opsPort });
      // Ready (NATS, its database, its consumers) on its operations port; a loaded machine may take a while.
      let ready = false;
      await Promise.race([
        waitFor(async () => (await fetch(`http://127.0.0.1:${opsPort}/health/ready`)).ok, {
          timeoutMs: 120_000,
          intervalMs: 200,
          what: `${name} to be ready`,
        }).catch((error: Error) => {
          throw new Error(`${error.message}\n${name}'s last lines:\n${output}`);
        }),
        launched.exited.then(({ code }) => {
          if (!ready) throw new Error(`${name} exited with ${code} before it was ready: ${output}`);
        }),
      ]);
      ready = true;
    }),
  );
});

after(async () => {
  if (prometheus && prometheus.exitCode === null) {
    const exited = new Promise((resolve) => prometheus!.once('exit', resolve));
    prometheus.kill('SIGTERM');
    await exited;
  }
  await Promise.all([...running.values()].map(({ process }) => process.stop(30_000)));
  await smtp?.close();
  await nats?.cleanup();
  await dropTestDatabases();
  if (work) await rm(work, { recursive: true, force: true });
});

const metricsUrl = (opsPort: number) => `http://127.0.0.1:${opsPort}/metrics`;

/** The series names one exposition declares (`# TYPE`), a histogram's or summary's parts included. */
function declaredNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const [, name, type] of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(name!);
    if (type === 'histogram') for (const part of ['_bucket', '_sum', '_count']) names.add(`${name}${part}`);
    if (type === 'summary') for (const part of ['_sum', '_count']) names.add(`${name}${part}`);
  }
  return names;
}

/** Every series every process exports, read from their /metrics. */
async function exportedNames(): Promise<Set<string>> {
  const names = new Set<string>(['up']); // Prometheus's own, for each target
  for (const { opsPort } of running.values()) {
    for (const name of declaredNames(await (await fetch(metricsUrl(opsPort))).text())) names.add(name);
  }
  return names;
}

const PROMQL_KEYWORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
  'inf',
  'nan',
]);

/**
 * The series a PromQL expression reads: its identifiers, less function and
 * aggregation names (followed by a parenthesis), keywords, label matchers,
 * grouping label lists, strings, ranges and Grafana's variables.
 */
export function seriesIn(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$\w+/g, ' ');
  const names: string[] = [];
  for (const match of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const after = stripped.slice(match.index + match[0].length).trimStart();
    if (after.startsWith('(') || PROMQL_KEYWORDS.has(match[0].toLowerCase())) continue;
    // A number's exponent (1e3) is not a name.
    if (/[0-9.]$/.test(stripped.slice(0, match.index))) continue;
    names.push(match[0]);
  }
  return names;
}

interface RuleFile {
  groups: { name: string; rules: { record?: string; alert?: string; expr: string }[] }[];
}

async function ruleFiles(): Promise<RuleFile[]> {
  const files = (await readdir(RULES_DIR)).filter((file) => file.endsWith('.yml'));
  return Promise.all(files.map(async (file) => parse(await readFile(join(RULES_DIR, file), 'utf8')) as RuleFile));
}

async function dashboardExprs(): Promise<{ panel: string; expr: string }[]> {
  type Panel = { title: string; targets?: { expr?: string }[]; panels?: Panel[] };
  const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8')) as { panels: Panel[] };
  const exprs: { panel: string; expr: string }[] = [];
  const visit = (panels: Panel[]) => {
    for (const panel of panels) {
      for (const target of panel.targets ?? []) if (target.expr) exprs.push({ panel: panel.title, expr: target.expr });
      visit(panel.panels ?? []);
    }
  };
  visit(dashboard.panels);
  return exprs;
}

test('seriesIn finds the series of an expression and nothing else', () => {
  assert.deepEqual(seriesIn('sum by (service, le) (rate(shop_x_bucket{code=~"A|B"}[5m])) / on (service) group_left up > 1e3'), [
    'shop_x_bucket',
    'up',
  ]);
  assert.deepEqual(seriesIn('histogram_quantile(0.99, sum by (le) (rate(a:b:c[$__rate_interval])))'), ['a:b:c']);
});

test('promtool check metrics finds nothing wrong with any process’s /metrics', async () => {
  const promtool = binary('promtool');
  for (const [name, { opsPort }] of running) {
    const exposition = await (await fetch(metricsUrl(opsPort))).text();
    assert.match(exposition, /^# TYPE shop_nats_connected gauge$/m, `${name} serves its metrics`);
    const lint = await run(promtool, ['check', 'metrics'], exposition);
    assert.equal(lint.code, 0, `${name}: promtool check metrics:\n${lint.output}`);
    assert.equal(lint.output.trim(), '', `${name}: promtool check metrics:\n${lint.output}`);
  }
});

test('every series the rules and the dashboard read is exported by a process or recorded by a rule', async () => {
  const exported = await exportedNames();
  const rules = (await ruleFiles()).flatMap((file) => file.groups.flatMap((group) => group.rules));
  const recorded = new Set(rules.flatMap((rule) => (rule.record ? [rule.record] : [])));
  const known = new Set([...exported, ...recorded]);
  const unknown: string[] = [];
  const uses = [
    ...rules.map((rule) => ({ where: `rule ${rule.record ?? rule.alert}`, expr: rule.expr })),
    ...(await dashboardExprs()).map(({ panel, expr }) => ({ where: `dashboard panel "${panel}"`, expr })),
  ];
  for (const { where, expr } of uses) {
    const names = seriesIn(expr);
    assert.ok(names.length > 0, `${where} reads some series: ${expr}`);
    for (const name of names) if (!known.has(name)) unknown.push(`${where}: ${name}`);
  }
  assert.deepEqual(unknown, [], `series nobody exports:\n  ${unknown.join('\n  ')}`);
  // Each recording rule is read by an alert or the dashboard: none is dead.
  const read = new Set(uses.flatMap(({ expr }) => seriesIn(expr)));
  for (const name of recorded) assert.ok(read.has(name), `recording rule ${name} is read somewhere`);
  assert.ok((await dashboardExprs()).length >= 10, 'the dashboard has its panels');
});

test('the dashboard reads the data source Grafana is provisioned with', async () => {
  const provisioned = parse(await readFile(join(ROOT, 'deploy', 'grafana', 'provisioning', 'datasources', 'prometheus.yml'), 'utf8')) as {
    datasources: { uid: string; type: string; url: string }[];
  };
  const [source] = provisioned.datasources;
  assert.equal(source?.type, 'prometheus');
  assert.equal(new URL(source.url).hostname, 'prometheus', 'compose’s prometheus service');
  const text = await readFile(DASHBOARD, 'utf8');
  const uids = new Set([...text.matchAll(/"datasource":\s*\{[^}]*"uid":\s*"([^"]+)"/g)].map((match) => match[1]));
  assert.deepEqual(uids, new Set([source.uid]));
});

test('the alerts the shop needs are there, and "server error" means the codes answered 5xx', async () => {
  const alerts = (await ruleFiles()).flatMap((file) => file.groups.flatMap((group) => group.rules.flatMap((rule) => rule.alert ?? [])));
  for (const alert of [
    'ShopDeadLettersGrowing',
    'ShopOutboxBacklog',
    'ShopCircuitBreakerOpen',
    'ShopConsumerLag',
    'ShopHighErrorRatio',
    'ShopSagaSlow',
  ]) {
    assert.ok(alerts.includes(alert), alert);
  }
  const documented = await readFile(join(ROOT, 'docs', 'operations.md'), 'utf8');
  for (const alert of alerts) assert.ok(documented.includes(`### ${alert}`), `docs/operations.md has a section on ${alert}`);
  const recording = await readFile(join(RULES_DIR, 'recording.yml'), 'utf8');
  const codes = /code=~"([^"]+)"/.exec(recording)?.[1]?.split('|');
  const serverErrors = Object.entries(ErrorCodes).flatMap(([code, status]) => (status >= 500 ? [code] : []));
  assert.deepEqual(new Set(codes), new Set(serverErrors));
});

test('promtool test rules passes every rule test; promtool check config passes compose’s prometheus.yml', async () => {
  const promtool = binary('promtool');
  const tests = (await readdir(RULE_TESTS_DIR)).filter((file) => file.endsWith('.test.yml'));
  assert.ok(tests.length >= 2);
  for (const file of tests) {
    const result = await run(promtool, ['test', 'rules', join(RULE_TESTS_DIR, file)]);
    assert.equal(result.code, 0, `${file}:\n${result.output}`);
  }
  const config = await run(promtool, ['check', 'config', join(PROMETHEUS_DIR, 'prometheus.yml')]);
  assert.equal(config.code, 0, config.output);
});

test('a real Prometheus configured from the registry scrapes every process and evaluates every rule', async () => {
  const port = await freePort();
  const rules = (await readdir(RULES_DIR)).filter((file) => file.endsWith('.yml')).map((file) => join(RULES_DIR, file));
  const config = prometheusConfig({
    interval: '1s',
    ruleFiles: rules,
    targets: (entry) => ({ static_configs: [{ targets: [`127.0.0.1:${running.get(entry.name)!.opsPort}`] }] }),
  });
  await writeFile(join(work, 'prometheus.yml'), stringify(config));
  let log = '';
  prometheus = spawn(
    binary('prometheus'),
    [
      `--config.file=${join(work, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(work, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  prometheus.stderr!.on('data', (chunk) => (log = (log + chunk).slice(-4000)));
  const api = async <T>(path: string): Promise<T> => {
    const response = await fetch(`http://127.0.0.1:${port}${path}`);
    return ((await response.json()) as { data: T }).data;
  };
  type Target = { labels: { job: string }; health: string; lastError: string };
  const targets = await waitFor(
    async () => {
      if (prometheus!.exitCode !== null) throw new Error(`prometheus exited: ${log}`);
      const { activeTargets } = await api<{ activeTargets: Target[] }>('/api/v1/targets');
      return activeTargets.length === PROCESSES.length && activeTargets.every((target) => target.health === 'up') && activeTargets;
    },
    { timeoutMs: 30_000, intervalMs: 250, what: 'every target up' },
  );
  assert.deepEqual(targets.map((target) => target.labels.job).sort(), [...PROCESSES].sort());

  type Rule = { name: string; health: string; lastError?: string };
  const evaluated = await waitFor(
    async () => {
      const { groups } = await api<{ groups: { rules: Rule[] }[] }>('/api/v1/rules');
      const all = groups.flatMap((group) => group.rules);
      return all.length > 0 && all.every((rule) => rule.health !== 'unknown') && all;
    },
    { timeoutMs: 20_000, intervalMs: 250, what: 'every rule evaluated' },
  );
  const failing = evaluated.filter((rule) => rule.health !== 'ok').map((rule) => `${rule.name}: ${rule.lastError}`);
  assert.deepEqual(failing, []);
  const expected = (await ruleFiles()).flatMap((file) => file.groups.flatMap((group) => group.rules)).length;
  assert.equal(evaluated.length, expected, 'every rule of the files is loaded');

  // And the series are there: the processes' NATS connections, as Prometheus stored them.
  const { result } = await api<{ result: { metric: { service: string } }[] }>(
    `/api/v1/query?query=${encodeURIComponent('shop_nats_connected == 1')}`,
  );
  assert.deepEqual(result.map((sample) => sample.metric.service).sort(), [...PROCESSES].sort());
});
