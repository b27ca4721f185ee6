// One order, one trace. Every process runs as a real child process with
// ZIPKIN_URL pointing at a small local HTTP endpoint that speaks Zipkin's v2
// API (what a Zipkin server receives); the order is placed through the BFF's
// GraphQL API. The services sample none of the traces they would start
// themselves (parentbased_traceidratio, ratio 0): the decision is the BFF's,
// at the edge, and every hop follows it. The spans received must form one
// tree: from the BFF's HTTP request through every request-reply call, the
// outboxes, every JetStream hop and consumer, to the email, with every parent
// present; the official instrumentations add HTTP, GraphQL and pg spans to
// it, every span named by what happened. The JSON log lines about that order
// carry its trace id, and so do those of an order whose trace nobody records.
// And every process serves /metrics and its health on its operations port.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { orders, products, type Product } from '../subjects/index.ts';
import { RpcClient } from '../services/kit/index.ts';
import { startSmtpServer, type TestSmtpServer } from '../services/notification/test/smtp.ts';
import {
  ROOT,
  dropTestDatabases,
  freePort,
  spawnService,
  startNats,
  testDatabaseUrl,
  waitFor,
  type ServiceProcess,
  type TestNats,
} from './harness.ts';
import { startZipkin, ZIPKIN_SPANS_PATH, type SpanCollector, type ZipkinSpan } from './span-collector.ts';

let zipkin: SpanCollector<ZipkinSpan>;
let nats: TestNats;
let smtp: TestSmtpServer;
let nc: NatsConnection;
let client: RpcClient;
const processes = new Map<string, ServiceProcess>();
let graphqlUrl: string;

before(async () => {
  zipkin = await startZipkin();
  const zipkinUrl = `${zipkin.url}${ZIPKIN_SPANS_PATH}`;

  nats = await startNats();
  smtp = await startSmtpServer();
  const common = {
    NATS_URL: nats.url,
    ZIPKIN_URL: zipkinUrl,
    // Export within a moment rather than the default 5 s batches.
    OTEL_BSP_SCHEDULE_DELAY: '100',
    LOG_LEVEL: 'info',
    LOG_FORMAT: 'json',
    RPC_TIMEOUT_MS: '5000',
    // Every process serves its operations port, on a free port it logs.
    OPS_PORT: '0',
  };
  // The services record only what the BFF's request decided to record.
  const followOnly = { OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' };
  const services: Record<string, Record<string, string>> = {
    customer: {},
    product: {},
    order: { ORDER_DEADLINE_MS: '60000' },
    payment: {},
    notification: { SMTP_HOST: '127.0.0.1', SMTP_PORT: String(smtp.port), NOTIFY_RETRY_BASE_MS: '50' },
    shipping: {},
  };
  await Promise.all(
    Object.entries(services).map(async ([dir, env]) => {
      processes.set(dir, await spawnService(dir, { ...common, ...followOnly, DATABASE_URL: testDatabaseUrl(dir), ...env }));
    }),
  );
  const port = await freePort();
  // spawnService runs services/<dir>/main.ts: the BFF's is ../bff/main.ts from there.
  processes.set(
    'bff',
    await spawnService('../bff', {
      ...common,
      BFF_HOST: '127.0.0.1',
      BFF_PORT: String(port),
      JWT_SECRET: 'tracing-test-secret-0123456789-abcdefghij',
    }),
  );
  graphqlUrl = `http://127.0.0.1:${port}/graphql`;
  nc = await connect({ servers: nats.url, noAsyncTraces: true });
  client = new RpcClient(nc, { timeoutMs: 5000 });
});

after(async () => {
  client?.close();
  await nc?.drain().catch(() => {});
  await Promise.all([...processes.values()].map((child) => child.stop()));
  await smtp?.close();
  await nats?.cleanup();
  await dropTestDatabases();
  await zipkin?.close();
});

async function graphql<T>(
  query: string,
  variables: Record<string, unknown>,
  token?: string,
  headers: Record<string, string> = {},
): Promise<T> {
  const response = await fetch(graphqlUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as { data?: T; errors?: unknown[] };
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data!;
}

const serviceOf = (span: ZipkinSpan) => span.localEndpoint?.serviceName ?? '?';

/** Every problem with `spans` as one tree of the whole order; none when it is complete. */
function treeProblems(spans: ZipkinSpan[]): string[] {
  const problems: string[] = [];
  const ids = new Set(spans.map((span) => span.id));
  const roots = spans.filter((span) => !span.parentId);
  if (roots.length !== 1) problems.push(`${roots.length} roots: ${roots.map((span) => `${serviceOf(span)} ${span.name}`).join(', ')}`);
  for (const span of spans) {
    if (span.parentId && !ids.has(span.parentId)) problems.push(`parent of ${serviceOf(span)} "${span.name}" is missing`);
  }
  const has = (service: string, name: string) => spans.some((span) => serviceOf(span) === service && span.name === name);
  const expected: [string, string][] = [
    ['bff', 'orders.place send'],
    ['orders', 'orders.place process'],
    ['orders', 'customers.shippingAddress send'],
    ['customers', 'customers.shippingAddress process'],
    ['orders', 'products.getMany send'],
    ['products', 'products.getMany process'],
    ['orders', 'orders.events.placed send'],
    ['products', 'orders.events.placed process'],
    ['products', 'inventory.events.reserved send'],
    ['payments', 'inventory.events.reserved process'],
    ['payments', 'payments.events.captured send'],
    ['orders', 'payments.events.captured process'],
    ['orders', 'orders.events.confirmed send'],
    ['products', 'orders.events.confirmed process'],
    ['notifications', 'orders.events.confirmed process'],
    ['notifications', 'smtp send'],
    ['shipments', 'orders.events.confirmed process'],
  ];
  for (const [service, name] of expected) if (!has(service, name)) problems.push(`no span "${name}" from ${service}`);
  return problems;
}

test('one trace follows an order from the GraphQL request to the email, and its log lines carry its id', async () => {
  const product: Product = await client.call(products.create, {
    sku: `TRACE-${randomUUID().slice(0, 8)}`,
    name: 'Traced lamp',
    price: { amount: 4200, currency: 'EUR' },
    initialStock: 3,
  });
  const email = `${randomUUID()}@example.com`;
  const { register } = await graphql<{ register: { token: string } }>(
    'mutation ($email: String!, $password: String!) { register(email: $email, name: "Tracy", password: $password) { token } }',
    { email, password: 'correct horse battery' },
  );
  const { placeOrder } = await graphql<{ placeOrder: { id: string; status: string } }>(
    'mutation ($lines: [OrderLineInput!]!) { placeOrder(lines: $lines, paymentToken: "tok_visa") { id status } }',
    { lines: [{ productId: product.id, quantity: 1 }] },
    register.token,
  );
  assert.equal(placeOrder.status, 'PENDING');
  await waitFor(async () => (await client.call(orders.get, { id: placeOrder.id })).status === 'CONFIRMED', {
    timeoutMs: 20_000,
    what: 'the order to be confirmed',
  });
  await waitFor(() => smtp.mailsTo(email).length === 1, { what: 'the email' });

  // The BFF's call to orders.place starts the order's part of the request's trace.
  const place = await waitFor(() => zipkin.spans.find((span) => serviceOf(span) === 'bff' && span.name === 'orders.place send'), {
    what: 'the span of orders.place from the BFF',
  });
  const traceId = place.traceId;
  const spans = await waitFor(
    () => {
      const trace = zipkin.spans.filter((span) => span.traceId === traceId);
      return treeProblems(trace).length === 0 ? trace : undefined;
    },
    { timeoutMs: 15_000, what: 'the whole trace' },
  ).catch((error: Error) => {
    const trace = zipkin.spans.filter((span) => span.traceId === traceId);
    throw new Error(`${error.message}\n  ${treeProblems(trace).join('\n  ')}`);
  });

  // Every process of the order is in it.
  assert.deepEqual([...new Set(spans.map(serviceOf))].sort(), [
    'bff',
    'customers',
    'notifications',
    'orders',
    'payments',
    'products',
    'shipments',
  ]);
  // The root is the BFF's HTTP request (instrumentation-http), named by its route, above GraphQL's spans.
  const root = spans.find((span) => !span.parentId)!;
  assert.equal(serviceOf(root), 'bff');
  assert.equal(root.kind, 'SERVER');
  assert.equal(root.name, 'POST /graphql');
  assert.equal(root.tags?.['http.route'], '/graphql');
  assert.equal(root.tags?.['http.request.method'] ?? root.tags?.['http.method'], 'POST');
  for (const span of spans) {
    assert.ok(!['node_modules', '->', ROOT].some((file) => span.name.includes(file)), `${serviceOf(span)} "${span.name}" names a file`);
  }
  const byId = new Map(spans.map((span) => [span.id, span]));
  const ancestors = (span: ZipkinSpan) => {
    const chain: ZipkinSpan[] = [];
    for (let at = span.parentId ? byId.get(span.parentId) : undefined; at; at = at.parentId ? byId.get(at.parentId) : undefined)
      chain.push(at);
    return chain;
  };
  const placeAncestors = ancestors(place).map((span) => span.name);
  assert.ok(
    placeAncestors.some((name) => /graphql|mutation|placeOrder/i.test(name)),
    `a GraphQL span above orders.place: ${placeAncestors}`,
  );
  assert.ok(
    spans.some((span) => serviceOf(span) === 'orders' && (span.tags?.['db.system'] ?? span.tags?.['db.system.name']) === 'postgresql'),
    'pg spans in the order service',
  );

  // Messaging spans carry the messaging attributes; each hop hangs under the previous one.
  const consumed = spans.find((span) => serviceOf(span) === 'payments' && span.name === 'inventory.events.reserved process')!;
  assert.equal(consumed.kind, 'CONSUMER');
  assert.equal(consumed.tags?.['messaging.system'], 'nats');
  assert.equal(consumed.tags?.['messaging.destination.name'], 'inventory.events.reserved');
  assert.equal(consumed.tags?.['messaging.operation.type'], 'process');
  assert.equal(byId.get(consumed.parentId!)?.name, 'inventory.events.reserved send');
  const mail = spans.find((span) => span.name === 'smtp send')!;
  assert.ok(
    ancestors(mail).some((span) => span.name === 'orders.events.confirmed process' && serviceOf(span) === 'notifications'),
    'the email continues the trace of the event that asked for it',
  );
  assert.ok(ancestors(mail).includes(place), 'and the email hangs, hop by hop, under the GraphQL request');

  // Log lines about this order carry its trace id, in every service that logs one.
  const lines = logLines();
  const aboutOrder = lines.filter(({ entry }) => entry.orderId === placeOrder.id);
  assert.ok(aboutOrder.length >= 2, `log lines name the order: ${aboutOrder.length}`);
  for (const { process, entry } of aboutOrder) {
    assert.equal(entry.trace_id, traceId, `${process}: "${String(entry.msg)}" carries the order's trace id`);
    assert.match(String(entry.span_id), /^[0-9a-f]{16}$/);
  }
  const sent = lines.filter(({ process, entry }) => process === 'notification' && entry.msg === 'email sent' && entry.trace_id === traceId);
  assert.equal(sent.length, 1, 'the "email sent" line carries the trace id');
  for (const service of ['product', 'payment', 'notification']) {
    assert.ok(
      lines.some(({ process, entry }) => process === service && entry.trace_id === traceId),
      `${service} logged within the order's trace`,
    );
  }
});

/** Every JSON line the processes have written so far, by process. */
function logLines(): { process: string; entry: Record<string, unknown> }[] {
  return [...processes.entries()].flatMap(([process, child]) =>
    child.output.flatMap((line) => {
      try {
        return [{ process, entry: JSON.parse(line) as Record<string, unknown> }];
      } catch {
        return [];
      }
    }),
  );
}

test('an order whose trace the caller does not record: no span of it, and its log lines carry its trace id all the same', async () => {
  const product: Product = await client.call(products.create, {
    sku: `UNTRACED-${randomUUID().slice(0, 8)}`,
    name: 'Untraced lamp',
    price: { amount: 4200, currency: 'EUR' },
    initialStock: 3,
  });
  const email = `${randomUUID()}@example.com`;
  const { register } = await graphql<{ register: { token: string } }>(
    'mutation ($email: String!, $password: String!) { register(email: $email, name: "Ulla", password: $password) { token } }',
    { email, password: 'correct horse battery' },
  );
  // The sampled flag 00: the caller records nothing, and neither does the shop.
  const traceId = randomBytes(16).toString('hex');
  const { placeOrder } = await graphql<{ placeOrder: { id: string } }>(
    'mutation ($lines: [OrderLineInput!]!) { placeOrder(lines: $lines, paymentToken: "tok_visa") { id } }',
    { lines: [{ productId: product.id, quantity: 1 }] },
    register.token,
    { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-00` },
  );
  await waitFor(() => smtp.mailsTo(email).length === 1, { timeoutMs: 20_000, what: 'the email' });
  // The email went out in the trace of the request.
  await waitFor(
    () => logLines().some(({ process, entry }) => process === 'notification' && entry.msg === 'email sent' && entry.trace_id === traceId),
    { what: 'the "email sent" line with the trace id' },
  );
  const aboutOrder = logLines().filter(({ entry }) => entry.orderId === placeOrder.id);
  assert.ok(new Set(aboutOrder.map(({ process }) => process)).size >= 2, `log lines name the order: ${aboutOrder.length}`);
  for (const { process, entry } of aboutOrder) {
    assert.equal(entry.trace_id, traceId, `${process}: "${String(entry.msg)}" carries the order's trace id`);
  }
  assert.deepEqual(
    zipkin.spans.filter((span) => span.traceId === traceId).map((span) => `${serviceOf(span)} ${span.name}`),
    [],
    'nothing of it recorded',
  );
});

test("a POST /graphql sent with a caller's traceparent is handled in the caller's trace, under the caller's span", async () => {
  const traceId = randomBytes(16).toString('hex');
  const callerSpanId = randomBytes(8).toString('hex');
  const response = await fetch(graphqlUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${callerSpanId}-01` },
    body: JSON.stringify({ query: '{ products(search: "lamp", first: 1) { edges { node { id } } } }' }),
  });
  assert.equal(response.status, 200);
  const spans = await waitFor(
    () => {
      const trace = zipkin.spans.filter((span) => span.traceId === traceId);
      // The HTTP server span ends last in the BFF: once it is here, the BFF's other spans are too.
      const whole =
        trace.some((span) => serviceOf(span) === 'products' && span.name.endsWith(' process')) &&
        trace.some(
          (span) =>
            serviceOf(span) === 'bff' && span.kind === 'SERVER' && (span.tags?.['http.request.method'] ?? span.tags?.['http.method']),
        );
      return whole ? trace : undefined;
    },
    { what: "the request's spans, from the BFF's HTTP span down to the product service" },
  );
  // The caller's span is not among them: exactly one span hangs right under it, the BFF's HTTP server span.
  const underCaller = spans.filter((span) => span.parentId === callerSpanId);
  const described = underCaller.map(
    (span) => `${serviceOf(span)} ${span.kind} "${span.name}" from ${span.tags?.['otel.scope.name'] ?? '?'}`,
  );
  assert.equal(underCaller.length, 1, `one child of the caller span: ${described.join(', ')}`);
  const server = underCaller[0]!;
  assert.equal(serviceOf(server), 'bff');
  assert.equal(server.kind, 'SERVER');
  assert.equal(server.tags?.['http.request.method'] ?? server.tags?.['http.method'], 'POST', described[0]);
  // Everything else of the request hangs, hop by hop, below that span.
  const ids = new Set(spans.map((span) => span.id));
  for (const span of spans) {
    if (span !== server)
      assert.ok(span.parentId && ids.has(span.parentId), `${serviceOf(span)} "${span.name}" has its parent in the trace`);
  }
});

/** The operations port a process logged when it started. */
function opsPort(child: ServiceProcess): number {
  for (const line of child.output) {
    if (!line.includes('operations server listening')) continue;
    return (JSON.parse(line) as { port: number }).port;
  }
  throw new Error('no operations port logged');
}

/** The value of one series in a Prometheus text exposition. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([key, value]) => found[key] === value)) return Number(match[3]);
  }
  return undefined;
}

test('every process serves /metrics in the Prometheus text format and its health on its operations port', async () => {
  const expected: Record<string, [string, Record<string, string>][]> = {
    customer: [['shop_rpc_requests_total', { subject: 'customers.shippingAddress' }]],
    product: [
      ['shop_rpc_requests_total', { subject: 'products.getMany' }],
      ['shop_events_handled_total', { consumer: 'products-reserve-stock', outcome: 'processed' }],
      ['shop_events_published_total', { subject: 'inventory.events.reserved' }],
    ],
    order: [
      ['shop_rpc_requests_total', { subject: 'orders.place' }],
      ['shop_events_published_total', { subject: 'orders.events.placed' }],
      ['shop_events_handled_total', { consumer: 'orders-payments-captured', outcome: 'processed' }],
      ['shop_saga_duration_seconds_count', { outcome: 'CONFIRMED' }],
    ],
    payment: [['shop_events_handled_total', { consumer: 'payments-charge-reserved', outcome: 'processed' }]],
    notification: [['shop_events_handled_total', { consumer: 'notifications-order-confirmed', outcome: 'processed' }]],
    shipping: [['shop_events_handled_total', { consumer: 'shipments-create-shipment', outcome: 'processed' }]],
    bff: [['shop_http_requests_total', { method: 'POST', route: '/graphql', status: '200' }]],
  };
  for (const [name, child] of processes) {
    const base = `http://127.0.0.1:${opsPort(child)}`;
    // The order's last steps run in the background (the shipment is made after the email, its relay
    // publishes after each commit): poll until the scrape shows them, rather than read it once.
    const text = await waitFor(
      async () => {
        const response = await fetch(`${base}/metrics`);
        assert.equal(response.status, 200, name);
        assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/, name);
        const text = await response.text();
        for (const [series, labels] of expected[name]!) {
          assert.ok((sample(text, series, labels) ?? 0) >= 1, `${name}: ${series}${JSON.stringify(labels)}`);
        }
        if (name !== 'bff') assert.equal(sample(text, 'shop_outbox_backlog'), 0, `${name}: shop_outbox_backlog`);
        if (name === 'order') {
          // Consumer lag: everything the order service's consumers were given has been handled.
          const lag = sample(text, 'shop_consumer_pending', { consumer: 'orders-payments-captured', stream: 'PAYMENTS' });
          assert.equal(lag, 0, `${name}: shop_consumer_pending`);
        }
        return text;
      },
      { what: `${name}'s metrics to show its part of the order` },
    );
    assert.equal(sample(text, 'shop_nats_connected'), 1, `${name}: shop_nats_connected`);
    if (name !== 'bff') {
      assert.ok(text.includes('# TYPE shop_rpc_request_duration_seconds histogram'), `${name}: latency histogram`);
      assert.ok(text.includes('# TYPE shop_rpc_breaker_state gauge'), `${name}: breaker states`);
    }
    assert.equal((await fetch(`${base}/health/live`)).status, 200, `${name}: live`);
    const ready = await fetch(`${base}/health/ready`);
    const body = (await ready.json()) as { status: string };
    assert.equal(ready.status, 200, `${name}: ready ${JSON.stringify(body)}`);
    assert.equal(body.status, 'ready');
  }
});
