// Traces leave through the standard exporters, set up by the standard
// variables alone: OTEL_TRACES_EXPORTER=zipkin to a local endpoint speaking
// Zipkin's v2 API, and OTEL_TRACES_EXPORTER=otlp to a local OTLP/HTTP
// endpoint (JSON, so that the test can read it). In each, this process calls
// the customer service (a real child process, its own main.ts) inside a span
// of its own; the call, its handling across NATS and the service's database
// queries must arrive as ONE trace: caller → `customers.get send` →
// `customers.get process` → pg, each the child of the one before.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import { trace } from '@opentelemetry/api';
import { customers } from '../subjects/index.ts';
import { RpcClient, startTracing, stopTracing } from '../services/kit/index.ts';
import { dropTestDatabases, spawnService, startNats, testDatabaseUrl, waitFor, type TestNats } from './harness.ts';
import { collectSpans, ZIPKIN_SPANS_PATH, type ZipkinSpan } from './span-collector.ts';

/** A span as either endpoint received it, in one shape. */
interface ReceivedSpan {
  service: string;
  traceId: string;
  id: string;
  parentId: string | undefined;
  name: string;
  kind: string;
  attributes: Record<string, unknown>;
}

const fromZipkin = (body: unknown): ReceivedSpan[] =>
  (body as ZipkinSpan[]).map((span) => ({
    service: span.localEndpoint?.serviceName ?? '?',
    traceId: span.traceId,
    id: span.id,
    parentId: span.parentId,
    name: span.name,
    kind: span.kind ?? 'INTERNAL',
    attributes: span.tags ?? {},
  }));

/** OTLP/HTTP JSON: ids in hex, kinds as numbers, attributes as key/value pairs. */
interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
}
interface OtlpTraces {
  resourceSpans: {
    resource?: { attributes?: { key: string; value: OtlpValue }[] };
    scopeSpans: {
      spans: {
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        name: string;
        kind: number;
        attributes?: { key: string; value: OtlpValue }[];
      }[];
    }[];
  }[];
}
const OTLP_KINDS = ['UNSPECIFIED', 'INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'];
const otlpAttributes = (list: { key: string; value: OtlpValue }[] = []) =>
  Object.fromEntries(list.map(({ key, value }) => [key, value.stringValue ?? value.intValue ?? value.boolValue]));

const fromOtlp = (body: unknown): ReceivedSpan[] =>
  (body as OtlpTraces).resourceSpans.flatMap((resourceSpans) => {
    const service = String(otlpAttributes(resourceSpans.resource?.attributes)['service.name'] ?? '?');
    return resourceSpans.scopeSpans.flatMap(({ spans }) =>
      spans.map((span) => ({
        service,
        traceId: span.traceId,
        id: span.spanId,
        parentId: span.parentSpanId || undefined,
        name: span.name,
        kind: OTLP_KINDS[span.kind] ?? String(span.kind),
        attributes: otlpAttributes(span.attributes),
      })),
    );
  });

let nats: TestNats;
let nc: NatsConnection;

before(async () => {
  nats = await startNats();
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
});

after(async () => {
  await nc?.close();
  await nats?.cleanup();
  await dropTestDatabases();
});

/** The OTEL_* variables of one test, set for this process (startTracing reads them) and given to the service. */
async function withEnvironment<T>(variables: Record<string, string>, run: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(variables).map((key) => [key, process.env[key]]));
  Object.assign(process.env, variables);
  try {
    return await run();
  } finally {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}

/**
 * Calls customers.get of a customer service exporting with `variables`, from
 * a span of this process exporting the same way; returns the trace received.
 */
async function oneCallTraced(variables: Record<string, string>, received: ReceivedSpan[]) {
  const exporting = { ...variables, OTEL_BSP_SCHEDULE_DELAY: '50' };
  return withEnvironment(exporting, async () => {
    const service = await spawnService('customer', { NATS_URL: nats.url, DATABASE_URL: testDatabaseUrl('customers'), ...exporting });
    startTracing('trace-test-caller');
    const client = new RpcClient(nc, { timeoutMs: 5000 });
    try {
      const created = await client.call(customers.register, {
        email: `${Date.now()}@trace.test`,
        name: 'Tracy',
        password: 'correct horse battery',
      });
      const caller = await trace.getTracer('trace-test').startActiveSpan('caller', async (span) => {
        try {
          await client.call(customers.get, { id: created.id });
          return span.spanContext();
        } finally {
          span.end();
        }
      });
      // Both sides export within a moment; this side's spans leave when its tracing stops.
      await stopTracing();
      const inTrace = () => received.filter((span) => span.traceId === caller.traceId);
      await waitFor(
        () =>
          inTrace().some((span) => span.name === 'customers.get process') &&
          inTrace().some((span) => span.attributes['db.system'] === 'postgresql' || span.attributes['db.system.name'] === 'postgresql'),
        {
          what: 'the service side of the trace',
        },
      ).catch((error: Error) => {
        throw new Error(
          `${error.message}; received: ${JSON.stringify(received.map(({ service, name, traceId }) => ({ service, name, traceId })))}`,
        );
      });
      return { caller, spans: inTrace() };
    } finally {
      client.close();
      await stopTracing();
      await service.stop();
    }
  });
}

function assertOneTrace(spans: ReceivedSpan[], callerSpanId: string): void {
  const byId = new Map(spans.map((span) => [span.id, span]));
  const named = (name: string) => {
    const found = spans.filter((span) => span.name === name);
    assert.equal(found.length, 1, `one span "${name}": ${JSON.stringify(spans.map((span) => span.name))}`);
    return found[0]!;
  };
  const caller = named('caller');
  const send = named('customers.get send');
  const processed = named('customers.get process');
  assert.equal(caller.id, callerSpanId);
  assert.equal(caller.parentId, undefined, 'the caller span is the root');
  assert.equal(send.parentId, caller.id, 'the request is the child of the caller span');
  assert.equal(processed.parentId, send.id, 'its handling, across NATS, the child of the request');
  assert.equal(send.service, 'trace-test-caller');
  // The service is named by the registry entry of its folder.
  assert.equal(processed.service, 'customers');
  assert.equal(send.kind, 'CLIENT');
  assert.equal(processed.kind, 'SERVER');
  for (const span of [send, processed]) {
    assert.equal(span.attributes['messaging.system'], 'nats');
    assert.equal(span.attributes['messaging.destination.name'], 'customers.get');
  }
  assert.equal(processed.attributes['messaging.operation.type'], 'process');
  // The service's queries (instrumentation-pg) hang below its handling.
  const queries = spans.filter((span) => (span.attributes['db.system.name'] ?? span.attributes['db.system']) === 'postgresql');
  assert.ok(queries.length > 0, 'pg spans in the trace');
  for (const query of queries) {
    let at: ReceivedSpan | undefined = query;
    while (at && at !== processed) at = at.parentId ? byId.get(at.parentId) : undefined;
    assert.ok(at, `pg span "${query.name}" hangs below customers.get process`);
  }
}

test('OTEL_TRACES_EXPORTER=zipkin: a call and its handling across NATS reach Zipkin as one trace', async () => {
  const zipkin = await collectSpans(ZIPKIN_SPANS_PATH, fromZipkin);
  try {
    const { caller, spans } = await oneCallTraced(
      { OTEL_TRACES_EXPORTER: 'zipkin', OTEL_EXPORTER_ZIPKIN_ENDPOINT: `${zipkin.url}${ZIPKIN_SPANS_PATH}` },
      zipkin.spans,
    );
    assertOneTrace(spans, caller.spanId);
  } finally {
    await zipkin.close();
  }
});

test('OTEL_TRACES_EXPORTER=otlp: a call and its handling across NATS reach an OTLP/HTTP endpoint as one trace', async () => {
  const otlp = await collectSpans('/v1/traces', fromOtlp);
  try {
    const { caller, spans } = await oneCallTraced(
      { OTEL_TRACES_EXPORTER: 'otlp', OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' },
      otlp.spans,
    );
    assertOneTrace(spans, caller.spanId);
  } finally {
    await otlp.close();
  }
});
