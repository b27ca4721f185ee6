// Request-reply through the kit against a real nats-server: a test service on
// the customers contracts whose handlers misbehave on purpose (by id), the
// typed client with its timeouts, retries and breaker, tracing across the
// wire, `nats micro` discovery and queue groups.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, headers as natsHeaders, type Msg, type MsgHdrs, type NatsConnection, type QueuedIterator } from 'nats';
import { ROOT_CONTEXT, TraceFlags, context, trace, type SpanContext } from '@opentelemetry/api';
import { customers, products, type Customer, type Product } from '../../../subjects/index.ts';
import { RpcClient, ServiceError, endpoint, startTracing, stopTracing, type RpcClientOptions, type ServiceDefinition } from '../index.ts';
import { dropTestDatabases, startNats, startTestService, waitFor, type TestNats } from '../../../test/harness.ts';

// Ids that pick a behaviour of the test service's customers.get.
const OK_ID = '00000000-0000-4000-8000-000000000001';
const THROW_ID = '00000000-0000-4000-8000-000000000002';
const BAD_REPLY_ID = '00000000-0000-4000-8000-000000000003';
const SILENT_ID = '00000000-0000-4000-8000-000000000004';
const FLAKY_ID = '00000000-0000-4000-8000-000000000005';
const SLOW_FIRST_ID = '00000000-0000-4000-8000-000000000006';
const TRACE_ID = '00000000-0000-4000-8000-000000000007';
const SECRET = 'password=hunter2 at db.internal';

/** How often each behaviour was reached, across instances. */
const attempts = new Map<string, number>();
const count = (key: string) => {
  const n = (attempts.get(key) ?? 0) + 1;
  attempts.set(key, n);
  return n;
};

/** Pending silent handlers; released at the end so no instance waits on them when stopping. */
const silent = new Set<() => void>();
const hold = () => new Promise<void>((resolve) => silent.add(resolve));
const releaseSilent = () => {
  for (const release of silent) release();
  silent.clear();
};

/** What the server's span looked like while handling TRACE_ID. */
let serverSpan: { traceId: string; spanId: string; parentSpanId: string | undefined } | undefined;

function customer(id: string, name: string): Customer {
  return { id, email: 'ann@shop.test', name, role: 'customer', createdAt: new Date().toISOString() };
}

let migrations: string;

/** A service on the customers contracts; `label` tells instances apart in replies. */
function testService(label: string): ServiceDefinition {
  return {
    name: 'customers',
    version: '9.9.9',
    description: 'kit test service',
    migrations,
    emits: [],
    build: () => ({
      consumers: [],
      endpoints: [
        endpoint(customers.get, async ({ id }) => {
          count(id);
          switch (id) {
            case THROW_ID:
              throw new Error(SECRET);
            case BAD_REPLY_ID:
              return { id, password: 'leaked' } as unknown as Customer;
            case SILENT_ID:
              await hold();
              return customer(id, label);
            case FLAKY_ID:
              if (attempts.get(id) === 1) throw new ServiceError('SERVICE_UNAVAILABLE', 'warming up');
              return customer(id, label);
            case SLOW_FIRST_ID:
              if (attempts.get(id) === 1) await hold();
              return customer(id, label);
            case TRACE_ID: {
              const span = trace.getActiveSpan();
              assert.ok(span, 'a span is active in the handler');
              // A recorded span (the SDK's) names its parent; a span carried unsampled does not.
              const parent = (span as { parentSpanContext?: SpanContext }).parentSpanContext;
              serverSpan = { ...span.spanContext(), parentSpanId: parent?.spanId };
              return customer(id, label);
            }
            default:
              return customer(id, label);
          }
        }),
        endpoint(customers.register, async ({ email, name }) => {
          count(`register:${name}`);
          if (name === 'flaky') throw new ServiceError('SERVICE_UNAVAILABLE', 'try later');
          if (name === 'silent') await hold();
          return { ...customer(OK_ID, label), email };
        }),
        endpoint(customers.getMany, async ({ ids }) => ({ customers: ids.map((id) => customer(id, label)) })),
      ],
    }),
  };
}

const product: Product = {
  id: OK_ID,
  sku: 'SKU-1',
  name: 'Kettle',
  description: '',
  price: { amount: 2500, currency: 'EUR' },
  available: 3,
  createdAt: new Date().toISOString(),
  updatedAt: new Date().toISOString(),
};

function productService(): ServiceDefinition {
  return {
    name: 'products',
    version: '1.0.0',
    description: 'kit test products',
    migrations,
    emits: [],
    build: () => ({ consumers: [], endpoints: [endpoint(products.get, async () => product)] }),
  };
}

type Running = Awaited<ReturnType<typeof startTestService>>;

let nats: TestNats;
let nc: NatsConnection;
let first: Running;
const clients: RpcClient[] = [];
const extra: Running[] = [];

/** A client of its own per test, so one test's failures never open another's breaker. */
function newClient(options: Partial<RpcClientOptions> = {}): RpcClient {
  const client = new RpcClient(nc, { timeoutMs: 2000, ...options });
  clients.push(client);
  return client;
}

async function rejection(promise: Promise<unknown>): Promise<ServiceError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ServiceError, `a ServiceError, not ${String(error)}`);
    return error;
  }
  assert.fail('expected the call to fail');
}

async function collect<T>(iterator: Promise<QueuedIterator<T>>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of await iterator) items.push(item);
  return items;
}

before(async () => {
  startTracing('kit-rpc-test');
  migrations = await mkdtemp(join(tmpdir(), 'shop-kit-migrations-'));
  nats = await startNats();
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  first = await startTestService(testService('A'), nats);
});

after(async () => {
  releaseSilent();
  for (const client of clients) client.close();
  for (const running of [first, ...extra]) await running?.stop();
  await nc?.close();
  await nats?.cleanup();
  await dropTestDatabases();
  await stopTracing();
  await rm(migrations, { recursive: true, force: true });
});

test('a call resolves with the reply its contract promises', async () => {
  const client = newClient();
  const reply = await client.call(customers.get, { id: OK_ID });
  assert.equal(reply.id, OK_ID);
  assert.equal(reply.name, 'A');
  const many = await client.call(customers.getMany, { ids: [OK_ID, FLAKY_ID] });
  assert.deepEqual(
    many.customers.map((c) => c?.id),
    [OK_ID, FLAKY_ID],
  );
});

test('malformed JSON sent with plain nc.request is answered 400 VALIDATION_FAILED', async () => {
  const reply = await nc.request('customers.get', Buffer.from('{"id": '), { timeout: 2000 });
  assert.equal(reply.headers?.get('Nats-Service-Error-Code'), '400');
  assert.equal(reply.headers?.get('Shop-Error-Code'), 'VALIDATION_FAILED');
  assert.ok(reply.headers?.get('Nats-Service-Error'), 'a readable description');
  const body = reply.json<{ code: string; message: string }>();
  assert.equal(body.code, 'VALIDATION_FAILED');
  assert.match(body.message, /not valid JSON/);
});

test('wrong-typed payloads sent with plain nc.request are answered 400 VALIDATION_FAILED', async () => {
  const before = attempts.get(OK_ID) ?? 0;
  for (const payload of [{ id: 42 }, { id: 'not-a-uuid' }, { id: OK_ID, extra: true }, {}, [OK_ID], 'text']) {
    const reply = await nc.request('customers.get', Buffer.from(JSON.stringify(payload)), { timeout: 2000 });
    assert.equal(reply.headers?.get('Nats-Service-Error-Code'), '400', JSON.stringify(payload));
    assert.equal(reply.headers?.get('Shop-Error-Code'), 'VALIDATION_FAILED');
    const body = reply.json<{ code: string; details: { path: string; message: string }[] }>();
    assert.equal(body.code, 'VALIDATION_FAILED');
    assert.ok(Array.isArray(body.details) && body.details.length > 0, 'the issues are listed');
  }
  // No handler ran for any of them.
  assert.equal(attempts.get(OK_ID) ?? 0, before);
});

test('the client rejects a request outside its contract locally, sending nothing', async () => {
  const client = newClient();
  const seen: Msg[] = [];
  const sub = nc.subscribe('customers.get', { callback: (_error, msg) => seen.push(msg) });
  try {
    await nc.flush();
    const error = await rejection(client.call(customers.get, { id: 'not-a-uuid' }));
    assert.equal(error.code, 'VALIDATION_FAILED');
    assert.ok(Array.isArray(error.details));
    assert.equal((error.details as { path: string }[])[0]?.path, '/id');
    const extraProperty = await rejection(client.call(customers.get, { id: OK_ID, admin: true } as unknown as { id: string }));
    assert.equal(extraProperty.code, 'VALIDATION_FAILED');
    // A valid call after them is the first message that reaches the subject.
    await client.call(customers.get, { id: OK_ID });
    await waitFor(() => seen.length > 0, { what: 'the valid request to be seen' });
    assert.deepEqual(JSON.parse(seen[0]!.string()), { id: OK_ID });
  } finally {
    sub.unsubscribe();
  }
});

test('a handler throwing a plain Error answers INTERNAL without leaking its message', async () => {
  const client = newClient();
  const error = await rejection(client.call(customers.get, { id: THROW_ID }));
  assert.equal(error.code, 'INTERNAL');
  assert.equal(error.status, 500);
  assert.doesNotMatch(error.message, /hunter2|db\.internal/);

  const raw = await nc.request('customers.get', Buffer.from(JSON.stringify({ id: THROW_ID })), { timeout: 2000 });
  assert.equal(raw.headers?.get('Nats-Service-Error-Code'), '500');
  assert.equal(raw.headers?.get('Shop-Error-Code'), 'INTERNAL');
  assert.doesNotMatch(raw.string(), /hunter2|db\.internal/);
  assert.doesNotMatch(raw.headers?.get('Nats-Service-Error') ?? '', /hunter2|db\.internal/);
});

test('a handler replying outside its contract answers INTERNAL', async () => {
  const client = newClient();
  const error = await rejection(client.call(customers.get, { id: BAD_REPLY_ID }));
  assert.equal(error.code, 'INTERNAL');
  const raw = await nc.request('customers.get', Buffer.from(JSON.stringify({ id: BAD_REPLY_ID })), { timeout: 2000 });
  assert.equal(raw.headers?.get('Nats-Service-Error-Code'), '500');
  assert.equal(raw.headers?.get('Shop-Error-Code'), 'INTERNAL');
  assert.doesNotMatch(raw.string(), /leaked/);
});

test('no responders fails with SERVICE_UNAVAILABLE, not a timeout', { timeout: 10_000 }, async () => {
  // A 30 s timeout: only a no-responders answer can end this test in time.
  const client = newClient({ timeoutMs: 30_000 });
  const error = await rejection(client.call(customers.authenticate, { email: 'ann@shop.test', password: 'x' }));
  assert.equal(error.code, 'SERVICE_UNAVAILABLE');
  assert.equal(error.transient, true);
  const notIdempotent = await rejection(
    client.call(products.create, {
      sku: 'SKU-2',
      name: 'Pot',
      price: { amount: 100, currency: 'EUR' },
    }),
  );
  assert.equal(notIdempotent.code, 'SERVICE_UNAVAILABLE');
  // The message names the operation called, not the reply inbox.
  assert.match(notIdempotent.message, /no instance answers products\.create/);
});

test('a silent endpoint fails with TIMEOUT; an idempotent call tried each time', async () => {
  const client = newClient({ timeoutMs: 150 });
  try {
    const error = await rejection(client.call(customers.get, { id: SILENT_ID }));
    assert.equal(error.code, 'TIMEOUT');
    assert.equal(error.status, 504);
    // One attempt plus the two retries of an idempotent operation.
    await waitFor(() => attempts.get(SILENT_ID) === 3, { what: 'three attempts' });
  } finally {
    releaseSilent();
  }
});

test('a non-idempotent call that times out is not retried', async () => {
  const client = newClient({ timeoutMs: 150 });
  try {
    const error = await rejection(client.call(customers.register, { email: 'b@shop.test', name: 'silent', password: 'secret123' }));
    assert.equal(error.code, 'TIMEOUT');
    assert.equal(attempts.get('register:silent'), 1);
  } finally {
    releaseSilent();
  }
});

test('an idempotent call is retried after a transient failure and succeeds', async () => {
  const client = newClient();
  const reply = await client.call(customers.get, { id: FLAKY_ID });
  assert.equal(reply.id, FLAKY_ID);
  assert.equal(attempts.get(FLAKY_ID), 2);
});

test('an idempotent call is retried after a timeout and succeeds', async () => {
  // The retry must be answered within it: ample for an in-process handler on a loaded machine.
  const client = newClient({ timeoutMs: 1000 });
  try {
    const reply = await client.call(customers.get, { id: SLOW_FIRST_ID });
    assert.equal(reply.id, SLOW_FIRST_ID);
    assert.equal(attempts.get(SLOW_FIRST_ID), 2);
  } finally {
    releaseSilent();
  }
});

test('a non-idempotent call is not retried after a transient failure', async () => {
  const client = newClient();
  const error = await rejection(client.call(customers.register, { email: 'c@shop.test', name: 'flaky', password: 'secret123' }));
  assert.equal(error.code, 'SERVICE_UNAVAILABLE');
  assert.equal(error.message, 'try later');
  // The call has settled, so any retry would already have reached the handler.
  assert.equal(attempts.get('register:flaky'), 1);
});

test('the breaker opens while a service is away, fails fast, and closes once it is back', async () => {
  const client = newClient({ breaker: { resetTimeoutMs: 300 } });
  let running = await startTestService(productService(), nats);
  extra.push(running);
  assert.equal((await client.call(products.get, { id: OK_ID })).sku, 'SKU-1');
  await running.stop();

  let open: ServiceError | undefined;
  for (let i = 0; i < 20 && !open; i++) {
    const error = await rejection(client.call(products.get, { id: OK_ID }));
    assert.equal(error.code, 'SERVICE_UNAVAILABLE');
    if ((error.details as { circuit?: string } | undefined)?.circuit === 'open') open = error;
  }
  assert.ok(open, 'the circuit opened');
  assert.deepEqual(open.details, { circuit: 'open' });
  assert.equal(open.transient, true);
  assert.equal(client.breakerState('products.get'), 'open');
  // Another operation has a breaker of its own.
  assert.equal(client.breakerState('customers.get'), 'closed');

  running = await startTestService(productService(), nats);
  extra.push(running);
  // After the reset timeout one call goes through, succeeds and closes the circuit.
  const reply = await waitFor(() => client.call(products.get, { id: OK_ID }), { what: 'the circuit to close' });
  assert.equal(reply.id, OK_ID);
  assert.equal(client.breakerState('products.get'), 'closed');
});

test('a breaker opens after timeouts, fails fast without sending, and one success after the reset closes it', async () => {
  const client = newClient({ timeoutMs: 100, retries: 0, breaker: { volumeThreshold: 4, resetTimeoutMs: 300 } });
  try {
    // Successes first: the failures that follow must outweigh them. Each with a budget of its own:
    // 100 ms is for the silent calls to time out quickly, not a bound on a loaded machine's answers.
    const answered = { timeoutMs: 5000 };
    for (let i = 0; i < 3; i++) await client.call(customers.get, { id: OK_ID }, answered);
    let open: ServiceError | undefined;
    for (let i = 0; i < 20 && !open; i++) {
      const error = await rejection(client.call(customers.get, { id: SILENT_ID }));
      if ((error.details as { circuit?: string } | undefined)?.circuit === 'open') open = error;
      else assert.equal(error.code, 'TIMEOUT');
    }
    assert.ok(open, 'the circuit opened');
    assert.equal(open.code, 'SERVICE_UNAVAILABLE');
    assert.equal(client.breakerState('customers.get'), 'open');
    // While open, calls fail without reaching the service.
    const reached = attempts.get(OK_ID) ?? 0;
    const fast = await rejection(client.call(customers.get, { id: OK_ID }));
    assert.deepEqual(fast.details, { circuit: 'open' });
    assert.equal(attempts.get(OK_ID) ?? 0, reached);

    const reply = await waitFor(() => client.call(customers.get, { id: OK_ID }, answered), { what: 'the circuit to let a call through' });
    assert.equal(reply.id, OK_ID);
    assert.equal(client.breakerState('customers.get'), 'closed');
  } finally {
    releaseSilent();
  }
});

test('refused requests never open the circuit: the remote is there', async () => {
  const client = newClient({ retries: 0, breaker: { volumeThreshold: 2 } });
  for (let i = 0; i < 8; i++) {
    const error = await rejection(client.call(customers.get, { id: THROW_ID }));
    assert.equal(error.code, 'INTERNAL');
  }
  assert.equal(client.breakerState('customers.get'), 'closed');
  assert.equal((await client.call(customers.get, { id: OK_ID })).id, OK_ID);
});

/** The traceparent headers seen on customers.get requests for TRACE_ID while `during` runs. */
async function traceparentsSent(during: () => Promise<void>): Promise<string[]> {
  const seen: string[] = [];
  const sub = nc.subscribe('customers.get', {
    callback: (_error, msg) => {
      if (msg.string().includes(TRACE_ID)) seen.push(msg.headers?.get('traceparent') ?? '');
    },
  });
  try {
    await nc.flush();
    await during();
    await waitFor(() => seen.length > 0, { what: 'the request to be seen' });
    return seen;
  } finally {
    sub.unsubscribe();
  }
}

/** The span of the last TRACE_ID request handled (read through a function: the handler sets it meanwhile). */
const handledSpan = () => serverSpan;

test('traceparent reaches the server, whose span continues the caller trace', async () => {
  // No exporter in this process: the caller's trace is not sampled, and is carried all the same.
  const client = newClient();
  let caller: SpanContext | undefined;
  serverSpan = undefined;
  const [traceparent] = await traceparentsSent(() =>
    trace.getTracer('kit-test').startActiveSpan('caller', async (span) => {
      try {
        caller = span.spanContext();
        await client.call(customers.get, { id: TRACE_ID });
      } finally {
        span.end();
      }
    }),
  );
  assert.ok(caller);
  const [, traceId, sendSpanId, flags] = (traceparent ?? '').split('-');
  assert.equal(traceId, caller.traceId);
  assert.equal(flags, '00');
  assert.notEqual(sendSpanId, caller.spanId, 'the request has a span of its own');
  const span = handledSpan();
  assert.ok(span, 'the handler ran');
  assert.equal(span.traceId, caller.traceId);
  assert.ok(![caller.spanId, sendSpanId].includes(span.spanId), 'the server has a span of its own');
});

test('a trace sampled upstream stays sampled through the client and the server', async () => {
  const client = newClient();
  const upstream: SpanContext = {
    traceId: '0af7651916cd43dd8448eb211c80319c',
    spanId: 'b7ad6b7169203331',
    traceFlags: TraceFlags.SAMPLED,
    isRemote: true,
  };
  serverSpan = undefined;
  const [traceparent] = await traceparentsSent(async () => {
    await context.with(trace.setSpanContext(ROOT_CONTEXT, upstream), () => client.call(customers.get, { id: TRACE_ID }));
  });
  const [, traceId, sendSpanId, flags] = (traceparent ?? '').split('-');
  assert.equal(traceId, upstream.traceId);
  assert.equal(flags, '01');
  assert.notEqual(sendSpanId, upstream.spanId);
  const span = handledSpan();
  assert.ok(span, 'the handler ran');
  assert.equal(span.traceId, upstream.traceId);
  // Recorded: the server span knows its parent, the client's span the header names.
  assert.equal(span.parentSpanId, sendSpanId);
});

test('a traceparent among other headers continues the trace too', async () => {
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  const parentSpanId = '00f067aa0ba902b7';
  const headers = natsHeaders();
  headers.set('X-Request-Note', 'beside the trace context');
  headers.set('traceparent', `00-${traceId}-${parentSpanId}-01`);
  serverSpan = undefined;
  const reply = await nc.request('customers.get', JSON.stringify({ id: TRACE_ID }), { headers, timeout: 2000 });
  assert.equal(reply.json<Customer>().id, TRACE_ID);
  const span = handledSpan();
  assert.ok(span, 'the handler ran');
  assert.equal(span.traceId, traceId);
  assert.equal(span.parentSpanId, parentSpanId);
});

test('a request whose header block nats.js cannot decode is answered, in a trace of its own', async () => {
  // A key with a space: nats.js throws when it decodes these headers.
  const block = Buffer.from('NATS/1.0\r\nbad key: x\r\n\r\n');
  serverSpan = undefined;
  const reply = await nc.request('customers.get', JSON.stringify({ id: TRACE_ID }), {
    headers: { encode: () => block } as unknown as MsgHdrs,
    timeout: 2000,
  });
  assert.equal(reply.json<Customer>().id, TRACE_ID);
  const span = handledSpan();
  assert.ok(span, 'the handler ran');
  assert.equal(span.parentSpanId, undefined);
});

test('nats micro discovery lists the service and its endpoints', async () => {
  const services = nc.services.client();
  const infos = await collect(services.info('customers'));
  assert.equal(infos.length, 1);
  const info = infos[0]!;
  assert.equal(info.id, first.server.service.info().id);
  assert.equal(info.name, 'customers');
  assert.equal(info.version, '9.9.9');
  assert.equal(info.description, 'kit test service');
  const bySubject = new Map(info.endpoints.map((e) => [e.subject, e]));
  assert.deepEqual([...bySubject.keys()].sort(), ['customers.get', 'customers.getMany', 'customers.register']);
  const get = bySubject.get('customers.get')!;
  assert.equal(get.name, 'get');
  assert.equal(get.queue_group, 'customers');
  assert.equal(get.metadata?.idempotent, 'true');
  assert.equal(get.metadata?.description, customers.get.description);
  assert.equal(bySubject.get('customers.register')?.metadata?.idempotent, 'false');

  const pings = await collect(services.ping('customers'));
  assert.deepEqual(
    pings.map((p) => [p.name, p.id]),
    [['customers', info.id]],
  );

  const stats = await collect(services.stats('customers'));
  const getStats = stats[0]?.endpoints?.find((e) => e.subject === 'customers.get');
  assert.ok(getStats && getStats.num_requests > 0, 'stats count requests');
  // The framework times only a handler's synchronous part; `data` holds each answer's whole time and the error answers.
  const answered = getStats.data as {
    num_requests: number;
    num_errors: number;
    processing_time: number;
    average_processing_time: number;
    last_error?: string;
  };
  assert.ok(answered.num_requests > 0 && answered.num_requests <= getStats.num_requests, JSON.stringify(answered));
  assert.ok(answered.processing_time > 0 && answered.average_processing_time > 0, JSON.stringify(answered));
  assert.ok(answered.num_errors > 0, 'error answers are counted');
  assert.match(answered.last_error ?? '', /^\d{3} [A-Z_]+: /);
});

test('two instances in the queue group share the requests', async () => {
  const second = await startTestService(testService('B'), nats);
  extra.push(second);
  const client = newClient();
  const pings = await collect(nc.services.client().ping('customers'));
  assert.equal(pings.length, 2);

  const replies = await Promise.all(Array.from({ length: 60 }, () => client.call(customers.get, { id: OK_ID })));
  const byInstance = new Map<string, number>();
  for (const reply of replies) byInstance.set(reply.name, (byInstance.get(reply.name) ?? 0) + 1);
  assert.ok((byInstance.get('A') ?? 0) > 0, `instance A answered: ${JSON.stringify([...byInstance])}`);
  assert.ok((byInstance.get('B') ?? 0) > 0, `instance B answered: ${JSON.stringify([...byInstance])}`);
  assert.equal((byInstance.get('A') ?? 0) + (byInstance.get('B') ?? 0), 60);
  await second.stop();
});
