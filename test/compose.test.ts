// compose.yaml, checked without Docker: it parses; every process of the
// registry (subjects/services.ts: its folder's main.ts) runs in it and nothing else
// of ours does; every environment variable it sets is one the code (or
// nats.conf, or the image it is given to) reads; each process signs in to
// NATS as its own user with the password the servers are given; and no two
// published ports, nor two ports of one process, are the same.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { CONTAINER_OPS_PORT } from '../scripts/deploy.ts';
import { nodeCommand, registry } from '../subjects/index.ts';
import { ROOT } from './harness.ts';
import { programs, variablesRead } from './programs.ts';
import { clusterArgs } from './nats-cluster.ts';

interface ComposeService {
  image?: string;
  volumes?: string[];
  build?: unknown;
  command?: string[] | string;
  environment?: Record<string, string | number | boolean | null> | string[];
  ports?: (string | number)[];
  healthcheck?: { test?: string[] | string };
}

const compose = parse(await readFile(join(ROOT, 'compose.yaml'), 'utf8'), { merge: true }) as {
  services: Record<string, ComposeService>;
};
const natsConf = await readFile(join(ROOT, 'nats.conf'), 'utf8');

/** Compose's `${VAR}`, `${VAR:-default}` and `${VAR-default}` with nothing set: the defaults. */
function interpolate(value: string): string {
  return value.replace(/\$\$|\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}/g, (whole, _name: string, fallback: string | undefined) =>
    whole === '$$' ? '$' : (fallback ?? ''),
  );
}

function environment(service: ComposeService): Record<string, string> {
  const env = service.environment ?? {};
  const entries = Array.isArray(env)
    ? env.map((line) => [line.split('=')[0]!, line.slice(line.indexOf('=') + 1)] as const)
    : Object.entries(env).map(([key, value]) => [key, value === null ? '' : String(value)] as const);
  return Object.fromEntries(entries.map(([key, value]) => [key, interpolate(value)]));
}

/** The program a service of ours runs: `node [options] <entry>`. */
function entryOf(service: ComposeService): string | undefined {
  const command = typeof service.command === 'string' ? service.command.split(/\s+/) : service.command;
  if (!service.build || !command || command[0] !== 'node') return undefined;
  return command.at(-1);
}

/** Variables that images we do not build read, as their documentation names them. */
const IMAGE_VARIABLES: Record<string, string[]> = {
  postgres: ['POSTGRES_PASSWORD', 'POSTGRES_USER', 'POSTGRES_DB'],
  'grafana/grafana': ['GF_AUTH_ANONYMOUS_ENABLED', 'GF_AUTH_ANONYMOUS_ORG_ROLE', 'GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH'],
};

test('compose.yaml parses and runs every program of the code, and only those', async () => {
  assert.ok(Object.keys(compose.services).length > 0);
  const code = await programs();
  const composed = Object.entries(compose.services).flatMap(([name, service]) => {
    const entry = entryOf(service);
    return entry ? [{ name, entry }] : [];
  });
  assert.deepEqual(new Set(composed.map(({ entry }) => entry)), new Set(code.keys()));
  for (const { name, entry } of composed) {
    assert.ok(existsSync(join(ROOT, entry)), `${name} runs ${entry}, which exists`);
    assert.equal(name, code.get(entry)!.name, `the compose service running ${entry} has its process name`);
    assert.deepEqual(
      compose.services[name]!.command,
      nodeCommand(registry[name as keyof typeof registry]),
      `${name} runs as the registry says`,
    );
  }
});

test('every environment variable compose.yaml sets is one that is read', async () => {
  const code = await programs();
  const natsReads = new Set([...natsConf.matchAll(/:\s*\$([A-Z][A-Z0-9_]*)/g)].map((match) => match[1]!));
  assert.ok(natsReads.size >= 7, 'nats.conf reads the passwords from the environment');
  const unread: string[] = [];
  for (const [name, service] of Object.entries(compose.services)) {
    const env = Object.keys(environment(service));
    if (env.length === 0) continue;
    const entry = entryOf(service);
    let read: Set<string>;
    if (entry) read = await variablesRead(code.get(entry)!);
    else if (service.image?.startsWith('nats:')) read = natsReads;
    else read = new Set(IMAGE_VARIABLES[service.image?.split(':')[0] ?? ''] ?? []);
    for (const variable of env) if (!read.has(variable)) unread.push(`${name}: ${variable}`);
  }
  assert.deepEqual(unread, [], `set but never read:\n  ${unread.join('\n  ')}`);
});

test('every process signs in to NATS as its own user, with the password the servers know', async () => {
  const code = await programs();
  const natsServers = Object.values(compose.services).filter((service) => service.image?.startsWith('nats:'));
  assert.ok(natsServers.length > 0);
  for (const [name, service] of Object.entries(compose.services)) {
    const entry = entryOf(service);
    if (!entry) continue;
    const env = environment(service);
    const user = code.get(entry)!.name;
    assert.equal(env.NATS_USER, user, `${name} signs in as ${user}`);
    assert.match(
      natsConf,
      new RegExp(`user: ${user}\\s+password: \\$NATS_${user.toUpperCase()}_PASSWORD`),
      `nats.conf has the user ${user}`,
    );
    for (const server of natsServers) {
      const known = environment(server)[`NATS_${user.toUpperCase()}_PASSWORD`];
      assert.ok(known, `the NATS servers are given NATS_${user.toUpperCase()}_PASSWORD`);
      assert.equal(env.NATS_PASSWORD, known, `${name}'s password is the one the servers have`);
      assert.match(known, /^[A-Za-z][A-Za-z0-9_-]*$/, 'nats-server reads the password as a plain string');
    }
  }
});

test('published ports do not clash, nor the ports of one process', () => {
  const published = new Map<number, string>();
  for (const [name, service] of Object.entries(compose.services)) {
    for (const port of service.ports ?? []) {
      const parts = interpolate(String(port)).split(':');
      assert.ok(parts.length >= 2, `${name} publishes ${port} as host:container`);
      const host = Number(parts.at(-2));
      assert.ok(Number.isInteger(host) && host > 0, `${name}: host port of ${port}`);
      assert.equal(published.get(host), undefined, `host port ${host} is published by ${published.get(host)} and ${name}`);
      published.set(host, name);
    }
  }
  assert.ok(published.size >= 5);
  for (const [name, service] of Object.entries(compose.services)) {
    const env = environment(service);
    const listens = ['BFF_PORT', 'OPS_PORT'].filter((key) => env[key]).map((key) => Number(env[key]));
    assert.equal(new Set(listens).size, listens.length, `${name} listens on distinct ports: ${listens}`);
    // A scaled service cannot publish a fixed host port: its replicas would clash.
    if (entryOf(service) && name !== 'bff') assert.equal(service.ports, undefined, `${name} publishes no host port, so it can scale`);
  }
});

test('the health check of every service asks its readiness on the operations port', () => {
  for (const [name, service] of Object.entries(compose.services)) {
    const entry = entryOf(service);
    if (!entry || name === 'bff') continue;
    const check = [service.healthcheck?.test ?? []].flat().join(' ');
    assert.match(check, new RegExp(`127\\.0\\.0\\.1:${environment(service).OPS_PORT}/health/ready`), `${name} probes /health/ready`);
  }
});

test('Prometheus and Grafana run on the files of deploy/, and scrape the operations port the processes listen on', () => {
  const prometheus = compose.services.prometheus!;
  assert.ok(prometheus.volumes?.includes('./deploy/prometheus:/etc/prometheus:ro'), 'prometheus mounts deploy/prometheus');
  const grafana = compose.services.grafana!;
  for (const mount of [
    './deploy/grafana/provisioning:/etc/grafana/provisioning:ro',
    './deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro',
  ])
    assert.ok(grafana.volumes?.includes(mount), `grafana mounts ${mount}`);
  for (const mount of [...prometheus.volumes!, ...grafana.volumes!]) assert.ok(existsSync(join(ROOT, mount.split(':')[0]!)), mount);
  for (const [name, service] of Object.entries(compose.services)) {
    if (entryOf(service))
      assert.equal(environment(service).OPS_PORT, String(CONTAINER_OPS_PORT), `${name}'s OPS_PORT is the port prometheus.yml scrapes`);
  }
});

test('the BFF in compose.yaml serves no GraphiQL, no introspection and no caught emails (npm start alone turns them on)', () => {
  const env = environment(compose.services.bff!);
  assert.equal(env.GRAPHQL_DEV, 'false', 'GRAPHQL_DEV off unless the operator sets it');
  assert.equal(env.DEV_MAIL_DIR, undefined, 'no /dev/mail: the emails go to Mailpit');
});

test("compose.yaml's NATS nodes run nats.conf with the cluster settings the cluster suite uses (test/nats-cluster.ts)", () => {
  const nodes = Object.keys(compose.services).filter((name) => /^nats-\d+$/.test(name));
  assert.equal(nodes.length, 3, 'three NATS nodes');
  for (const name of nodes) {
    const service = compose.services[name]!;
    assert.deepEqual(
      service.command,
      [
        '-c',
        '/etc/nats/shop.conf',
        ...clusterArgs({ name, listen: 'nats://0.0.0.0:6222', routes: nodes.map((node) => `nats://${node}:6222`) }),
        '-sd',
        '/data/jetstream',
        '--http_port',
        '8222',
      ],
      `${name}'s command`,
    );
    assert.ok(service.volumes?.includes('./nats.conf:/etc/nats/shop.conf:ro'), `${name} reads the project's nats.conf`);
  }
  // Every process reaches every node, and the streams live on all three.
  for (const [name, service] of Object.entries(compose.services)) {
    const env = environment(service);
    if (!env.NATS_URL) continue;
    assert.deepEqual(
      env.NATS_URL.split(','),
      nodes.map((node) => `nats://${node}:4222`),
      `${name}'s NATS_URL`,
    );
    assert.equal(env.STREAM_REPLICAS, String(nodes.length), `${name}'s STREAM_REPLICAS`);
  }
});
