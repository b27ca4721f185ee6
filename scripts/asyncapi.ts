// `npm run asyncapi`: writes docs/asyncapi.json, an AsyncAPI 3 document of
// every subject in subjects/: the request-reply operations (with their
// replies and errors), the events and their streams, the state buckets of
// the read models, the dead letters, and the live settings in the `config`
// bucket. Who sends and who receives is
// read from the declarations, not written down twice:
//   - the processes: the registry (subjects/services.ts);
//   - an event's sender: the `emits` of each service's definition (app.ts);
//   - an event's receivers: the consumers each service's build() returns
//     (built here with a context that does no I/O);
//   - a request's receiver: the service of its contract; its senders: the
//     `calls` of each service's definition and of the BFF's registry entry
//     (each process's client refuses a call it did not declare);
//   - the BFF's order feed (bff/feed.ts) reads every ORDERS and SHIPMENTS event;
//   - a state bucket's writer: the `states` of each service's definition;
//     its reader: the BFF's replicas (bff/read-models.ts).
// test/asyncapi.test.ts checks that the committed document is current and valid.
import { readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { TSchema } from '@sinclair/typebox';
import {
  CONFIG_BUCKET,
  ERROR_CODE_HEADER,
  ErrorCodes,
  PROCESSES,
  SERVICES,
  registry,
  allEvents,
  allOperations,
  allSettings,
  allStates,
  streams,
  type EventContract,
  type StateContract,
  type ProcessEntry,
  type RpcContract,
  type SettingContract,
} from '../subjects/index.ts';
import { loadConfig, serviceSettingsSchema } from '../services/kit/config.ts';
import { DeadLetterHeaders } from '../services/kit/consumer.ts';
import { LiveSettings } from '../services/kit/live-config.ts';
import { createLogger } from '../services/kit/log.ts';
import { ProcessMetrics } from '../services/kit/metrics.ts';
import { serviceDefinition } from '../services/kit/definitions.ts';
import { FEED_STREAMS } from '../bff/feed.ts';
import type { ServiceContext } from '../services/kit/service.ts';

export const ROOT = join(import.meta.dirname, '..');
export const DOCUMENT_PATH = join(ROOT, 'docs', 'asyncapi.json');

/** The streams the BFF's feed reads (bff/feed.ts); it is not a ServiceDefinition, so they are named there. */
const BFF_FEED_STREAMS = new Set(FEED_STREAMS.map((stream) => stream.name));

export interface ServiceInfo {
  name: string;
  emits: readonly EventContract[];
  states: readonly StateContract[];
  calls: readonly RpcContract[];
  consumers: { contract: EventContract; durable: string }[];
}

// ---------------------------------------------------------------------------
// Reading the code

/** Every service of the registry with its definition, and the consumers its build() wires. */
export async function readServices(): Promise<ServiceInfo[]> {
  const found: ServiceInfo[] = [];
  for (const name of SERVICES) {
    const definition = await serviceDefinition(registry[name]);
    const settings = loadConfig(serviceSettingsSchema(definition), {});
    const { consumers } = definition.build(inertContext(definition.name), settings);
    found.push({
      name: definition.name,
      emits: definition.emits,
      states: definition.states ?? [],
      calls: definition.calls ?? [],
      consumers: consumers.map((handler) => ({ contract: handler.contract, durable: `${definition.name}-${handler.name}` })),
    });
  }
  return found;
}

/** A context for build() that refuses any use: wiring must not do I/O, and here nothing runs. */
function inertContext(name: string): ServiceContext {
  const refuse = (what: string) =>
    new Proxy(
      {},
      {
        get(_target, property) {
          throw new Error(`${name}: build() used ${what}.${String(property)}; wiring must not do I/O`);
        },
      },
    );
  const log = createLogger(name, 'silent');
  return {
    name,
    log,
    pool: refuse('pool') as ServiceContext['pool'],
    databaseUrl: `postgresql://127.0.0.1:1/${name}_asyncapi`,
    nc: refuse('nc') as ServiceContext['nc'],
    js: refuse('js') as ServiceContext['js'],
    client: refuse('client') as ServiceContext['client'],
    settings: LiveSettings.fixed(name, { log, environment: {} }),
    metrics: new ProcessMetrics(name, { processMetrics: false }),
  };
}

/** Which process sends which request: the services' `calls`, and those of the other processes' registry entries. */
function readCallers(services: ServiceInfo[]): Map<string, Set<string>> {
  const declared = [
    ...services.map((service) => ({ process: service.name, calls: service.calls })),
    ...PROCESSES.map((name): ProcessEntry => registry[name])
      .filter((entry) => !entry.isService)
      .map((entry) => ({ process: entry.name, calls: entry.calls ?? [] })),
  ];
  const callers = new Map<string, Set<string>>();
  for (const { process, calls } of declared) {
    for (const contract of calls) {
      if (!callers.has(contract.subject)) callers.set(contract.subject, new Set());
      callers.get(contract.subject)!.add(process);
    }
  }
  return callers;
}

// ---------------------------------------------------------------------------
// The document

type Json = Record<string, unknown>;

/** A TypeBox schema as plain JSON Schema (TypeBox's own markers are symbols and drop out). */
function plain(schema: TSchema): Json {
  return JSON.parse(JSON.stringify(schema)) as Json;
}

const ref = (pointer: string) => ({ $ref: pointer });
const escapePointer = (key: string) => key.replace(/~/g, '~0').replace(/\//g, '~1');

const traceHeaders = {
  traceparent: { type: 'string', description: 'W3C trace context of the sender.' },
  tracestate: { type: 'string', description: 'W3C trace state, when present.' },
};

function eventMessage(contract: EventContract): Json {
  return {
    name: contract.subject,
    title: contract.subject,
    summary: contract.description,
    contentType: 'application/json',
    headers: {
      type: 'object',
      properties: {
        'Nats-Msg-Id': { type: 'string', description: 'The envelope id: JetStream drops a repeat within the duplicate window.' },
        ...traceHeaders,
      },
    },
    payload: {
      type: 'object',
      description: 'The event envelope; `data` is checked by the contract.',
      required: ['id', 'type', 'occurredAt', 'data'],
      additionalProperties: false,
      properties: {
        id: { type: 'string', minLength: 1, maxLength: 200, description: 'Unique event id, also the Nats-Msg-Id.' },
        type: { const: contract.subject },
        occurredAt: { type: 'string', format: 'date-time' },
        data: plain(contract.data.schema),
      },
    },
  };
}

const errorMessage: Json = {
  name: 'error',
  title: 'Error reply',
  summary: 'A NATS micro error: numeric status in Nats-Service-Error-Code, our stable code beside it.',
  contentType: 'application/json',
  headers: {
    type: 'object',
    properties: {
      'Nats-Service-Error-Code': { type: 'string', description: 'Numeric status (400, 404, 409, 500, 503, 504).' },
      'Nats-Service-Error': { type: 'string', description: 'The error message.' },
      [ERROR_CODE_HEADER]: { type: 'string', enum: Object.keys(ErrorCodes) },
    },
  },
  payload: {
    type: 'object',
    required: ['code', 'message', 'details'],
    properties: {
      code: { type: 'string', enum: Object.keys(ErrorCodes) },
      message: { type: 'string' },
      details: { description: 'What was wrong, e.g. the failing fields of a VALIDATION_FAILED; null otherwise.' },
    },
  },
};

function settingMessage(contract: SettingContract): Json {
  return {
    name: contract.key,
    title: contract.key,
    summary: contract.description,
    description:
      `Default ${JSON.stringify(contract.default)}` +
      (contract.env ? `; the environment variable ${contract.env} replaces the default at start` : '') +
      '; a value in the bucket replaces both. A bare word is read as text.',
    contentType: 'application/json',
    payload: { ...plain(contract.value.schema), default: contract.default },
  };
}

export async function asyncApiDocument(): Promise<Json> {
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string; description: string };
  const services = await readServices();
  const callers = readCallers(services);
  const channels: Json = {};
  const operations: Json = {};
  const messages: Json = { error: errorMessage };

  for (const contract of allOperations) {
    const request = `${contract.subject}.request`;
    const reply = `${contract.subject}.reply`;
    messages[request] = {
      name: request,
      title: `${contract.subject} request`,
      summary: contract.description,
      contentType: 'application/json',
      headers: { type: 'object', properties: traceHeaders },
      payload: plain(contract.request.schema),
    };
    messages[reply] = {
      name: reply,
      title: `${contract.subject} reply`,
      contentType: 'application/json',
      payload: plain(contract.reply.schema),
    };
    channels[contract.subject] = {
      address: contract.subject,
      title: contract.subject,
      description: `${contract.description} Served by the NATS micro service "${contract.service}" (endpoint ${contract.endpoint}, queue group ${contract.service}).`,
      messages: { request: ref(`#/components/messages/${request}`) },
    };
    channels[reply] = {
      address: null,
      title: `${contract.subject} reply`,
      description: "The requester's reply inbox.",
      messages: { reply: ref(`#/components/messages/${reply}`), error: ref('#/components/messages/error') },
    };
    const replyOf = {
      channel: ref(`#/channels/${reply}`),
      messages: [ref(`#/channels/${reply}/messages/reply`), ref(`#/channels/${reply}/messages/error`)],
    };
    const tags = [{ name: contract.idempotent ? 'idempotent' : 'not-idempotent' }];
    operations[`${contract.service}.receive.${contract.subject}`] = {
      action: 'receive',
      title: `${contract.service} answers ${contract.subject}`,
      summary: contract.description,
      channel: ref(`#/channels/${contract.subject}`),
      messages: [ref(`#/channels/${contract.subject}/messages/request`)],
      reply: replyOf,
      tags,
      'x-service': contract.service,
    };
    for (const caller of [...(callers.get(contract.subject) ?? [])].sort()) {
      operations[`${caller}.send.${contract.subject}`] = {
        action: 'send',
        title: `${caller} asks ${contract.subject}`,
        channel: ref(`#/channels/${contract.subject}`),
        messages: [ref(`#/channels/${contract.subject}/messages/request`)],
        reply: replyOf,
        tags,
        'x-service': caller,
      };
    }
  }

  for (const contract of allEvents) {
    messages[contract.subject] = eventMessage(contract);
    const stream = (streams as Record<string, { subjects: readonly string[]; description: string }>)[contract.stream]!;
    channels[contract.subject] = {
      address: contract.subject,
      title: contract.subject,
      description: `${contract.description} Stored in the JetStream stream ${contract.stream} (${stream.subjects.join(', ')}).`,
      messages: { event: ref(`#/components/messages/${contract.subject}`) },
      'x-stream': contract.stream,
    };
    const message = [ref(`#/channels/${contract.subject}/messages/event`)];
    for (const service of services.filter((candidate) => candidate.emits.includes(contract))) {
      operations[`${service.name}.send.${contract.subject}`] = {
        action: 'send',
        title: `${service.name} emits ${contract.subject}`,
        summary: 'Written to the outbox in the transaction of the change, published by the relay.',
        channel: ref(`#/channels/${contract.subject}`),
        messages: message,
        'x-service': service.name,
      };
    }
    for (const service of services) {
      for (const consumer of service.consumers.filter((candidate) => candidate.contract === contract)) {
        operations[`${service.name}.receive.${contract.subject}`] = {
          action: 'receive',
          title: `${service.name} consumes ${contract.subject}`,
          summary: `Durable pull consumer ${consumer.durable} on ${contract.stream}; handled once per event id (inbox).`,
          channel: ref(`#/channels/${contract.subject}`),
          messages: message,
          'x-service': service.name,
          'x-durable': consumer.durable,
        };
      }
    }
    if (BFF_FEED_STREAMS.has(contract.stream)) {
      operations[`bff.receive.${contract.subject}`] = {
        action: 'receive',
        title: `bff follows ${contract.subject}`,
        summary: 'Ordered consumer of each BFF instance (bff/feed.ts): pushes order updates to GraphQL subscribers.',
        channel: ref(`#/channels/${contract.subject}`),
        messages: message,
        'x-service': 'bff',
      };
    }
  }

  for (const contract of allStates) {
    const id = `state.${contract.bucket}`;
    messages[id] = {
      name: id,
      title: `${contract.bucket} state`,
      summary: contract.description,
      contentType: 'application/json',
      headers: {
        type: 'object',
        properties: { 'Nats-Msg-Id': { type: 'string', description: 'Named by bucket, key and version: one version is stored once.' } },
      },
      payload: {
        type: 'object',
        description: "The event envelope; `data` is the item's public view with its `version`.",
        required: ['id', 'type', 'occurredAt', 'data'],
        additionalProperties: false,
        properties: {
          id: { type: 'string', format: 'uuid' },
          type: { const: contract.bucket },
          occurredAt: { type: 'string', format: 'date-time', description: 'When the change was written, in its transaction.' },
          data: plain(contract.value.schema),
        },
      },
    };
    channels[id] = {
      address: `$KV.${contract.bucket}.{id}`,
      title: `${contract.bucket} bucket`,
      description: `The NATS KV bucket "${contract.bucket}" (stream KV_${contract.bucket}, history 1): ${contract.description}`,
      parameters: { id: { description: "The item's id." } },
      messages: { state: ref(`#/components/messages/${id}`) },
    };
    const message = [ref(`#/channels/${id}/messages/state`)];
    for (const service of services.filter((candidate) => candidate.states.includes(contract))) {
      operations[`${service.name}.send.${id}`] = {
        action: 'send',
        title: `${service.name} publishes ${contract.bucket} state`,
        summary: "Written to the outbox in the transaction of every change of an item's public view, put by the relay.",
        channel: ref(`#/channels/${id}`),
        messages: message,
        'x-service': service.name,
      };
    }
    operations[`bff.receive.${id}`] = {
      action: 'receive',
      title: `bff keeps a replica of ${contract.bucket}`,
      summary:
        'Ordered consumer of each BFF instance (bff/replica.ts): the newest state per key, then every change; an older version is ignored.',
      channel: ref(`#/channels/${id}`),
      messages: message,
      'x-service': 'bff',
    };
  }

  const streamNames = Object.keys(streams).filter((name) => name !== 'DLQ');
  messages['dead-letter'] = {
    name: 'dead-letter',
    title: 'Dead letter',
    summary: 'An event a consumer gave up on, as it was received, with why in the headers.',
    headers: {
      type: 'object',
      properties: {
        [DeadLetterHeaders.error]: { type: 'string', description: 'The last error.' },
        [DeadLetterHeaders.subject]: { type: 'string', description: 'Subject of the original event.' },
        [DeadLetterHeaders.stream]: { type: 'string', description: 'Stream of the original event.' },
        [DeadLetterHeaders.sequence]: { type: 'string', description: 'Its sequence in that stream.' },
        [DeadLetterHeaders.consumer]: { type: 'string', description: 'The durable consumer that gave up.' },
        [DeadLetterHeaders.deliveries]: { type: 'string', description: 'Deliveries tried.' },
      },
    },
    payload: { description: 'The original message bytes, unchanged.' },
  };
  channels.dlq = {
    address: 'dlq.{stream}.{consumer}',
    title: 'Dead letters',
    description: streams.DLQ.description,
    parameters: {
      stream: { enum: streamNames, description: 'Stream the event came from.' },
      consumer: { description: 'Durable consumer that gave up, `<service>-<name>`.' },
    },
    messages: { 'dead-letter': ref('#/components/messages/dead-letter') },
    'x-stream': streams.DLQ.name,
  };
  for (const service of services.filter((candidate) => candidate.consumers.length > 0)) {
    operations[`${service.name}.send.dlq`] = {
      action: 'send',
      title: `${service.name} stores dead letters`,
      summary: 'After the delivery limit, a failing event goes to the DLQ stream; `npm` tooling lists and replays them.',
      channel: ref('#/channels/dlq'),
      messages: [ref('#/channels/dlq/messages/dead-letter')],
      'x-service': service.name,
    };
  }

  const settingMessages: Json = {};
  for (const contract of allSettings) {
    const id = `config.${contract.key}`;
    messages[id] = settingMessage(contract);
    settingMessages[contract.key] = ref(`#/components/messages/${escapePointer(id)}`);
  }
  channels.config = {
    address: `$KV.${CONFIG_BUCKET}.{key}`,
    title: 'Live settings',
    description:
      `The NATS KV bucket "${CONFIG_BUCKET}" (stream KV_${CONFIG_BUCKET}): one key per setting of subjects/settings.ts, ` +
      'JSON values, changed with `npm run config -- set` or `nats kv put`; every reader applies a change at once.',
    parameters: { key: { enum: allSettings.map((contract) => contract.key), description: 'The setting.' } },
    messages: settingMessages,
  };
  operations['operator.send.config'] = {
    action: 'send',
    title: 'An operator changes a setting',
    summary: '`npm run config -- set <key> <value>` checks the value first; `nats kv put` does not, and readers refuse what does not fit.',
    channel: ref('#/channels/config'),
    messages: allSettings.map((contract) => ref(`#/channels/config/messages/${escapePointer(contract.key)}`)),
    'x-service': 'operator',
  };
  for (const process of PROCESSES) {
    const read = allSettings.filter((contract) => (contract.readers as readonly string[]).includes(process));
    operations[`${process}.receive.config`] = {
      action: 'receive',
      title: `${process} follows its settings`,
      summary: 'Watches the bucket; a valid value applies at once, an invalid one is logged and ignored.',
      channel: ref('#/channels/config'),
      messages: read.map((contract) => ref(`#/channels/config/messages/${escapePointer(contract.key)}`)),
      'x-service': process,
    };
  }

  return {
    asyncapi: '3.1.0',
    id: 'urn:the-shop',
    info: {
      title: 'The Shop',
      version: pkg.version,
      description:
        `${pkg.description}\n\nGenerated by \`npm run asyncapi\` from subjects/ and the services' wiring; do not edit by hand. ` +
        'Operation ids read `<process>.<send|receive>.<subject>`; `x-service` names the process.',
    },
    defaultContentType: 'application/json',
    servers: {
      local: {
        host: '127.0.0.1:4222',
        protocol: 'nats',
        description: 'The default NATS_URL; every process takes its servers from NATS_URL.',
      },
    },
    channels,
    operations,
    components: { messages },
  };
}

/** The document as written to disk. */
export function render(document: Json): string {
  return `${JSON.stringify(document, null, 2)}\n`;
}

if (import.meta.main) {
  const text = render(await asyncApiDocument());
  await writeFile(DOCUMENT_PATH, text);
  process.stdout.write(`wrote ${relative(process.cwd(), DOCUMENT_PATH)} (${text.length} bytes)\n`);
}
