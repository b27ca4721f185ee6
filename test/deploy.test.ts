// The generated deployment files (scripts/deploy.ts, `npm run deploy`):
// regenerating them changes nothing; every Kubernetes object validates
// against its schema (kubernetes-models, @kubernetes-models/keda); and the
// Kustomize base is checked against the registry the way compose.yaml is:
// every process runs, as its own NATS user with the password the servers
// have, its database, probes on its operations port, resources and a
// disruption budget; every variable it is given is one its code reads; every
// consumer service scales by the lag of each of its durable consumers; NATS
// is a three-node cluster on this project's nats.conf, with /jsz on every pod
// and lame duck mode before it stops (checked on a real nats-server).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { Namespace, ConfigMap, Service } from 'kubernetes-models/v1';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { PROCESSES, databaseVariable, entryScript, nodeCommand, registry, type ProcessEntry } from '../subjects/index.ts';
import {
  CONTAINER_OPS_PORT,
  KUBERNETES_DIR,
  NATS_MONITORING_ENDPOINT,
  NATS_REPLICAS,
  NAMESPACE,
  generatedFiles,
  secretValues,
} from '../scripts/deploy.ts';
import { readServices } from '../scripts/asyncapi.ts';
import { natsPasswordVariable } from '../scripts/lib/launcher.ts';
import { ROOT, waitFor } from './harness.ts';
import { programs, variablesRead } from './programs.ts';

// Manifests are read as plain JSON (tests may use any: biome.json).
type Json = any;

const MODELS: Record<string, { new (data: Json): { validate(): void } }> = {
  'v1/Namespace': Namespace,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'keda.sh/v1alpha1/ScaledObject': ScaledObject,
};

const kustomization = parseAllDocuments(await readFile(join(KUBERNETES_DIR, 'kustomization.yaml'), 'utf8'))[0]!.toJSON() as Json;
const objects: Json[] = [];
for (const file of kustomization.resources as string[]) {
  for (const document of parseAllDocuments(await readFile(join(KUBERNETES_DIR, file), 'utf8'))) objects.push(document.toJSON());
}
const find = (kind: string, name: string) => objects.find((object) => object.kind === kind && object.metadata.name === name);
const envOf = (container: Json): Record<string, Json> =>
  Object.fromEntries((container.env ?? []).map((entry: Json) => [entry.name, entry]));
const secretKey = (entry: Json) => entry?.valueFrom?.secretKeyRef?.key as string | undefined;

const work = await mkdtemp(join(tmpdir(), 'shop-deploy-'));
after(() => rm(work, { recursive: true, force: true }));

test('the committed files are what `npm run deploy` writes, and nothing else is in deploy/kubernetes', async () => {
  const generated = await generatedFiles();
  const stale: string[] = [];
  for (const [path, text] of Object.entries(generated)) {
    const committed = existsSync(join(ROOT, path)) ? await readFile(join(ROOT, path), 'utf8') : undefined;
    if (committed !== text) stale.push(path);
  }
  assert.deepEqual(stale, [], `out of date: run \`npm run deploy\` and commit (${stale.join(', ')})`);
  const kept = new Set(['secrets.env', 'secrets.env.example']);
  const extra = (await readdir(KUBERNETES_DIR)).filter((file) => !kept.has(file) && !(join('deploy', 'kubernetes', file) in generated));
  assert.deepEqual(extra, [], 'files in deploy/kubernetes that npm run deploy does not write');
  const ignored = await readFile(join(ROOT, '.gitignore'), 'utf8');
  assert.match(ignored, /^deploy\/kubernetes\/secrets\.env$/m, 'the secrets stay out of git');
});

test('every object validates against its Kubernetes or KEDA schema', () => {
  assert.ok(objects.length > 10);
  for (const object of objects) {
    const model = MODELS[`${object.apiVersion}/${object.kind}`];
    assert.ok(model, `a model for ${object.apiVersion} ${object.kind}`);
    assert.doesNotThrow(() => new model(object).validate(), `${object.kind} ${object.metadata?.name}`);
  }
  assert.equal(kustomization.namespace, NAMESPACE);
  assert.ok(find('Namespace', NAMESPACE));
  const names = objects.map((object) => `${object.kind}/${object.metadata.name}`);
  assert.equal(new Set(names).size, names.length, 'no two objects of a kind share a name');
});

test('every process of the registry runs as a Deployment, and nothing else of ours does', async () => {
  const code = await programs();
  const deployments = objects.filter(
    (object) => object.kind === 'Deployment' && object.spec.template.spec.containers[0].command?.[0] === 'node',
  );
  assert.deepEqual(
    new Set(deployments.map((deployment) => deployment.spec.template.spec.containers[0].command.at(-1))),
    new Set(code.keys()),
  );
  for (const name of PROCESSES) {
    const entry: ProcessEntry = registry[name];
    const deployment = find('Deployment', entry.name);
    assert.ok(deployment, `a Deployment named ${entry.name}`);
    const container = deployment.spec.template.spec.containers[0];
    assert.deepEqual(container.command, nodeCommand(entry));
    assert.equal(container.image, kustomization.images[0].name, `${name} runs the shop's image`);
  }
});

test('each process signs in as its own NATS user with the password the servers have, and gets its database', () => {
  const nats = find('StatefulSet', 'nats').spec.template.spec.containers[0];
  const serverEnv = envOf(nats);
  for (const name of PROCESSES) {
    const entry: ProcessEntry = registry[name];
    const env = envOf(find('Deployment', entry.name).spec.template.spec.containers[0]);
    assert.equal(env.NATS_USER?.value, entry.natsUser, `${name} signs in as ${entry.natsUser}`);
    assert.equal(secretKey(env.NATS_PASSWORD), natsPasswordVariable(entry), `${name}'s password is the Secret's`);
    assert.equal(secretKey(serverEnv[natsPasswordVariable(entry)]), natsPasswordVariable(entry), `the servers know ${name}'s password`);
    for (const url of env.NATS_URL.value.split(',')) assert.match(url, /^nats:\/\/nats-\d\.nats:4222$/, `${name} knows every server`);
    assert.equal(env.NATS_URL.value.split(',').length, NATS_REPLICAS);
    if (entry.isService) assert.equal(secretKey(env.DATABASE_URL), databaseVariable(entry), `${name}'s database`);
    else assert.equal(env.DATABASE_URL, undefined);
  }
  assert.equal(secretKey(serverEnv.NATS_ADMIN_PASSWORD), 'NATS_ADMIN_PASSWORD');
});

test('every environment variable a process is given is one its code reads', async () => {
  const code = await programs();
  const unread: string[] = [];
  for (const name of PROCESSES) {
    const entry: ProcessEntry = registry[name];
    const read = await variablesRead(code.get(entryScript(entry))!);
    for (const variable of Object.keys(envOf(find('Deployment', entry.name).spec.template.spec.containers[0])))
      if (!read.has(variable)) unread.push(`${name}: ${variable}`);
  }
  assert.deepEqual(unread, [], `set but never read:\n  ${unread.join('\n  ')}`);
});

test('probes on the operations port, resources, a disruption budget, a graceful stop', () => {
  for (const name of PROCESSES) {
    const deployment = find('Deployment', name);
    const pod = deployment.spec.template.spec;
    const container = pod.containers[0];
    const opsPort = container.ports.find((port: Json) => port.name === 'ops');
    assert.equal(opsPort?.containerPort, CONTAINER_OPS_PORT);
    assert.equal(envOf(container).OPS_PORT.value, String(CONTAINER_OPS_PORT), `${name} listens where it is probed`);
    assert.equal(envOf(container).OPS_HOST.value, '0.0.0.0', `${name}'s operations port answers the kubelet`);
    assert.deepEqual(container.readinessProbe.httpGet, { path: '/health/ready', port: 'ops' }, `${name} readiness`);
    assert.deepEqual(container.livenessProbe.httpGet, { path: '/health/live', port: 'ops' }, `${name} liveness`);
    assert.ok(
      container.resources.requests.cpu && container.resources.requests.memory && container.resources.limits.memory,
      `${name} resources`,
    );
    assert.ok(pod.terminationGracePeriodSeconds >= 30, `${name} has time for its graceful stop`);
    const budget = find('PodDisruptionBudget', name);
    assert.ok(budget, `${name} has a PodDisruptionBudget`);
    assert.deepEqual(budget.spec.selector.matchLabels, deployment.spec.selector.matchLabels, `${name}'s budget covers its pods`);
    assert.deepEqual(deployment.spec.template.metadata.labels, {
      ...deployment.spec.template.metadata.labels,
      ...deployment.spec.selector.matchLabels,
    });
  }
  const bff = find('Service', 'bff');
  assert.ok(
    bff.spec.ports.some((port: Json) => port.targetPort === 'http'),
    'the BFF is reachable as a Service',
  );
});

test('each consumer service scales with KEDA by the JetStream lag of every one of its durable consumers', async () => {
  const services = await readServices();
  assert.ok(services.some((service) => service.consumers.length > 0));
  for (const service of services) {
    const scaled = find('ScaledObject', service.name);
    const deployment = find('Deployment', service.name);
    if (service.consumers.length === 0) {
      assert.equal(scaled, undefined, `${service.name} has no consumers to scale by`);
      assert.ok(deployment.spec.replicas >= 2, `${service.name} runs two instances`);
      continue;
    }
    assert.ok(scaled, `${service.name} has a ScaledObject`);
    assert.equal(scaled.spec.scaleTargetRef.name, deployment.metadata.name);
    assert.equal(deployment.spec.replicas, undefined, `KEDA alone sets ${service.name}'s instance count`);
    assert.ok(scaled.spec.minReplicaCount >= 1 && scaled.spec.maxReplicaCount > scaled.spec.minReplicaCount);
    const triggers = scaled.spec.triggers.map((trigger: Json) => {
      assert.equal(trigger.type, 'nats-jetstream');
      assert.equal(trigger.metadata.natsServerMonitoringEndpoint, NATS_MONITORING_ENDPOINT);
      assert.equal(trigger.metadata.account, '$G', 'nats.conf has no accounts: the global one');
      assert.ok(Number(trigger.metadata.lagThreshold) > 0);
      return `${trigger.metadata.stream}/${trigger.metadata.consumer}`;
    });
    assert.deepEqual(new Set(triggers), new Set(service.consumers.map(({ contract, durable }) => `${contract.stream}/${durable}`)));
  }
  // KEDA asks <headless service>.<namespace>.svc.cluster.local, then the consumer leader's pod under it, on the monitoring port.
  const [host, port] = NATS_MONITORING_ENDPOINT.split(':');
  assert.equal(host, `${find('Service', 'nats').metadata.name}.${NAMESPACE}.svc.cluster.local`);
  assert.equal(find('Service', 'nats').spec.clusterIP, 'None');
  assert.ok(find('StatefulSet', 'nats').spec.template.spec.containers[0].ports.some((entry: Json) => entry.containerPort === Number(port)));
});

test('NATS: three nodes of one cluster on this project’s nats.conf, monitoring on every pod, lame duck before stopping', async () => {
  const statefulSet = find('StatefulSet', 'nats');
  assert.equal(statefulSet.spec.replicas, 3);
  assert.equal(statefulSet.spec.serviceName, 'nats');
  const config = find('ConfigMap', 'nats-config').data;
  assert.equal(config['nats.conf'], await readFile(join(ROOT, 'nats.conf'), 'utf8'), 'the ConfigMap holds nats.conf as it is');
  const cluster: string = config['cluster.conf'];
  assert.match(cluster, /^include "nats\.conf"$/m);
  assert.match(cluster, /^http_port: 8222$/m);
  const routes = [...cluster.matchAll(/nats:\/\/(nats-\d)\.nats:6222/g)].map((match) => match[1]);
  assert.deepEqual(routes, ['nats-0', 'nats-1', 'nats-2'], 'a route to every pod of the StatefulSet');
  const container = statefulSet.spec.template.spec.containers[0];
  assert.deepEqual(
    container.volumeMounts.find((mount: Json) => mount.name === 'config'),
    { name: 'config', mountPath: '/etc/nats' },
  );
  assert.ok(container.args.includes('/etc/nats/cluster.conf'));
  // KEDA reaches a consumer's leader as <server name>.<headless service>: each server is named after its pod.
  assert.equal(container.args[container.args.indexOf('--server_name') + 1], '$(POD_NAME)');
  assert.deepEqual(envOf(container).POD_NAME.valueFrom, { fieldRef: { fieldPath: 'metadata.name' } });
  const pidFile = /^pid_file: "([^"]+)"$/m.exec(cluster)?.[1];
  const preStop = container.lifecycle.preStop.exec.command.join(' ');
  assert.ok(preStop.includes(`nats-server --signal ldm=${pidFile}`), `preStop puts the server in lame duck mode: ${preStop}`);
  const lameDuck = Number(/^lame_duck_duration: "(\d+)s"$/m.exec(cluster)?.[1]);
  assert.ok(statefulSet.spec.template.spec.terminationGracePeriodSeconds > lameDuck, 'the pod waits out lame duck mode');
  assert.equal(find('PodDisruptionBudget', 'nats').spec.maxUnavailable, 1, 'one node at a time keeps the quorum');
  // Every password nats.conf reads is given to the servers.
  const natsReads = [...config['nats.conf'].matchAll(/:\s*\$([A-Z][A-Z0-9_]*)/g)].map((match: RegExpMatchArray) => match[1]!);
  for (const variable of natsReads) assert.equal(secretKey(envOf(container)[variable]), variable, `the servers get ${variable}`);
});

test('a real nats-server accepts the ConfigMap, serves /jsz, and enters lame duck mode on the preStop signal', async () => {
  const config = find('ConfigMap', 'nats-config').data;
  await writeFile(join(work, 'nats.conf'), config['nats.conf']);
  await writeFile(join(work, 'cluster.conf'), config['cluster.conf']);
  // Loopback stand-ins for what differs on this machine: ports, the pid file, and
  // a route to nowhere (a JetStream cluster will not start without one).
  await writeFile(
    join(work, 'local.conf'),
    `include "cluster.conf"\nport: -1\nhttp_port: -1\npid_file: "${join(work, 'nats.pid')}"\nports_file_dir: "${work}"\n` +
      'cluster { name: shop, port: -1, routes: ["nats://127.0.0.1:1"] }\n',
  );
  const env = { ...process.env, ...Object.fromEntries(Object.keys(secretValues()).map((key) => [key, `x${key.toLowerCase()}`])) };
  const binary =
    ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'].find((path) => existsSync(path)) ?? 'nats-server';
  const check = spawn(binary, ['-t', '-c', join(work, 'cluster.conf'), '--server_name', 'nats-0', '-sd', join(work, 'js')], { env });
  let checkOutput = '';
  check.stderr.on('data', (chunk) => (checkOutput += chunk));
  assert.equal(await new Promise((resolve) => check.once('exit', resolve)), 0, `nats-server -t on cluster.conf: ${checkOutput}`);

  const server = spawn(binary, ['-c', join(work, 'local.conf'), '--server_name', 'nats-0', '-sd', join(work, 'js')], { env });
  let log = '';
  server.stderr.on('data', (chunk) => (log += chunk));
  const exited = new Promise((resolve) => server.once('exit', resolve));
  try {
    const monitor = await waitFor(
      async () => {
        if (server.exitCode !== null) throw new Error(`nats-server exited: ${log}`);
        const file = (await readdir(work)).find((name) => name.endsWith('.ports'));
        if (!file) return undefined;
        const ports = JSON.parse(await readFile(join(work, file), 'utf8')) as { monitoring?: string[] };
        return ports.monitoring?.[0];
      },
      { timeoutMs: 10_000, what: 'nats-server to listen' },
    );
    const jsz = (await (await fetch(`${monitor}/jsz`)).json()) as { config?: { store_dir?: string } };
    assert.ok(jsz.config?.store_dir, '/jsz answers with JetStream on');
    // Alone, the node has no meta leader: not ready, but alive (no restart loop while a cluster forms).
    const container = find('StatefulSet', 'nats').spec.template.spec.containers[0];
    assert.equal((await fetch(`${monitor}${container.livenessProbe.httpGet.path}`)).status, 200, 'alive');
    assert.equal((await fetch(`${monitor}${container.readinessProbe.httpGet.path}`)).status, 503, 'not ready without its peers');
    const signal = spawn(binary, ['--signal', `ldm=${join(work, 'nats.pid')}`], { env });
    assert.equal(await new Promise((resolve) => signal.once('exit', resolve)), 0);
    await waitFor(() => /entering lame duck mode/i.test(log), { timeoutMs: 10_000, what: 'lame duck mode' });
  } finally {
    server.kill('SIGKILL');
    await exited;
  }
});

test('the Secret: every key a manifest reads is one `npm run deploy -- secrets` writes, and each is read', () => {
  const referenced = new Set<string>();
  const visit = (value: Json) => {
    if (Array.isArray(value)) value.forEach(visit);
    else if (value && typeof value === 'object') {
      if (value.secretKeyRef) {
        assert.equal(value.secretKeyRef.name, kustomization.secretGenerator[0].name);
        referenced.add(value.secretKeyRef.key);
      }
      Object.values(value).forEach(visit);
    }
  };
  visit(objects);
  const written = secretValues();
  assert.deepEqual(new Set(Object.keys(written)), referenced);
  for (const [key, value] of Object.entries(written)) {
    if (key.startsWith('NATS_')) assert.match(value, /^[A-Za-z][A-Za-z0-9]*$/, `${key}: nats-server reads it as a plain string`);
  }
  assert.notEqual(secretValues().JWT_SECRET, written.JWT_SECRET, 'random each time');
  assert.ok(written.JWT_SECRET!.length >= 32, 'the BFF needs at least 32 characters');
});
