// The registry (subjects/services.ts) is the one list of the shop's
// processes: every program of the code is in it, each entry's folder holds
// its program and the definition of the service it names, its NATS user is a
// user of nats.conf, no two processes share an operations port, and
// docs/services.md names every variable and setting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  PROCESSES,
  SERVICES,
  allSettings,
  entryScript,
  folderName,
  processByFolder,
  registry,
  streams,
  type ProcessEntry,
} from '../subjects/index.ts';
import { serviceSettingsSchema } from '../services/kit/config.ts';
import { serviceDefinition } from '../services/kit/definitions.ts';
import { ROOT } from './harness.ts';

const entries: ProcessEntry[] = PROCESSES.map((name) => registry[name]);

test('every program of the code is a process of the registry, and every process has its program', async () => {
  const programs = (await readdir(join(ROOT, 'services'), { withFileTypes: true }))
    .filter((entry) => entry.isDirectory() && existsSync(join(ROOT, 'services', entry.name, 'main.ts')))
    .map((entry) => `services/${entry.name}`);
  if (existsSync(join(ROOT, 'bff', 'main.ts'))) programs.push('bff');
  assert.deepEqual(
    programs.filter((folder) => !processByFolder(folder)),
    [],
    'a main.ts the registry does not know',
  );
  for (const entry of entries) assert.ok(existsSync(join(ROOT, entryScript(entry))), `${entry.name}: ${entryScript(entry)} exists`);
});

test("each service's folder defines the service the registry names, writing to the streams it says", async () => {
  for (const name of SERVICES) {
    const definition = await serviceDefinition(registry[name]);
    assert.equal(definition.name, name);
    assert.deepEqual(
      [...new Set(definition.emits.map((event) => event.stream))].sort(),
      [...registry[name].streams].sort(),
      `${name} streams`,
    );
    for (const stream of registry[name].streams) assert.ok(stream in streams, `${stream} is a stream of subjects/streams.ts`);
  }
  assert.equal(processByFolder('order'), registry.orders);
  assert.equal(processByFolder('services/order/'), registry.orders);
  assert.equal(folderName(registry.notifications), 'notification');
});

test('each process has its own operations port and its own NATS user of nats.conf', async () => {
  const ports = entries.map((entry) => entry.opsPort);
  assert.equal(new Set(ports).size, ports.length, `distinct ops ports: ${ports.join(', ')}`);
  const natsConf = await readFile(join(ROOT, 'nats.conf'), 'utf8');
  for (const entry of entries) {
    assert.match(natsConf, new RegExp(`user: ${entry.natsUser}\\s+password: \\$NATS_${entry.natsUser.toUpperCase()}_PASSWORD`), entry.name);
  }
});

test('docs/services.md names every variable a service reads and every live setting', async () => {
  const doc = await readFile(join(ROOT, 'docs', 'services.md'), 'utf8');
  const missing: string[] = [];
  for (const name of SERVICES) {
    for (const variable of Object.keys(serviceSettingsSchema(await serviceDefinition(registry[name])))) {
      if (!doc.includes(`\`${variable}\``)) missing.push(`${name}: ${variable}`);
    }
  }
  for (const contract of allSettings) {
    const key = contract.key.endsWith('.log_level') ? '<process>.log_level' : contract.key;
    if (!doc.includes(`\`${key}\``)) missing.push(contract.key);
  }
  assert.deepEqual(missing, [], 'add them to docs/services.md');
});
