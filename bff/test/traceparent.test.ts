// A caller's trace continues through the BFF in one tree, its spans named by
// what happened (the request by its route, no file paths): bff/main.ts runs as
// a child process exporting to a small local Zipkin endpoint, a GraphQL
// request comes with a W3C `traceparent`, and the BFF's spans of that request
// hang under exactly one server span, the child of the caller's. (A span of
// the BFF's own beside the instrumentations' used to take the caller's span
// as parent too: two server spans, the request's work split between them.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ROOT, freePort, spawnService, startNats, waitFor, type ServiceProcess, type TestNats } from '../../test/harness.ts';
import { startZipkin, ZIPKIN_SPANS_PATH, type SpanCollector, type ZipkinSpan } from '../../test/span-collector.ts';

let zipkin: SpanCollector<ZipkinSpan>;
let nats: TestNats;
let bff: ServiceProcess;
let url: string;
/** A BFF with no exporter: it records nothing, its requests still have trace ids. */
let plain: ServiceProcess;
let plainUrl: string;

before(async () => {
  zipkin = await startZipkin();
  nats = await startNats();
  const port = await freePort();
  // spawnService runs services/<dir>/main.ts: the BFF's is ../bff/main.ts from there.
  bff = await spawnService('../bff', {
    NATS_URL: nats.url,
    ZIPKIN_URL: `${zipkin.url}${ZIPKIN_SPANS_PATH}`,
    OTEL_BSP_SCHEDULE_DELAY: '100',
    BFF_HOST: '127.0.0.1',
    BFF_PORT: String(port),
    JWT_SECRET: 'traceparent-test-secret-0123456789-abcdef',
  });
  url = `http://127.0.0.1:${port}`;
  const plainPort = await freePort();
  plain = await spawnService('../bff', {
    NATS_URL: nats.url,
    // fastify writes its two lines per request only at debug (bff/app.ts).
    LOG_LEVEL: 'debug',
    BFF_HOST: '127.0.0.1',
    BFF_PORT: String(plainPort),
    JWT_SECRET: 'traceparent-test-secret-0123456789-abcdef',
  });
  plainUrl = `http://127.0.0.1:${plainPort}`;
});

after(async () => {
  await bff?.stop();
  await plain?.stop();
  await nats?.cleanup();
  await zipkin?.close();
});

test("a GraphQL request with a traceparent is one server span under the caller's, with everything else beneath it", async () => {
  const traceId = randomBytes(16).toString('hex');
  const callerSpanId = randomBytes(8).toString('hex');
  // A search asks the product service (none runs here: the call fails at once), so a NATS call is traced too.
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', traceparent: `00-${traceId}-${callerSpanId}-01` },
    body: JSON.stringify({ query: '{ products(search: "lamp", first: 1) { edges { node { id } } } }' }),
  });
  assert.equal(response.status, 200);

  // Spans reach the collector as they end, the server's last: wait for the whole trace, every parent in it,
  // rather than for a while (a span whose parent has not arrived yet would fail the checks below).
  const trace = await waitFor(
    () => {
      const spans = zipkin.spans.filter((span) => span.traceId === traceId);
      const ids = new Set(spans.map((span) => span.id));
      const whole =
        spans.some((span) => span.name === 'products.list send') &&
        spans.some((span) => /graphql|query/i.test(span.name)) &&
        spans.some((span) => span.parentId === callerSpanId) &&
        spans.every((span) => span.parentId === callerSpanId || (span.parentId && ids.has(span.parentId)));
      return whole && spans;
    },
    { what: "the request's whole trace, its NATS call and GraphQL's included", timeoutMs: 15_000 },
  );
  assert.ok(trace.every((span) => span.localEndpoint?.serviceName === 'bff'));

  const underCaller = trace.filter((span) => span.parentId === callerSpanId);
  assert.deepEqual(
    underCaller.map((span) => `${span.kind} ${span.name}`),
    [`SERVER ${underCaller[0]?.name}`],
    "one span, the server's, is the caller's child",
  );
  assert.equal(trace.filter((span) => span.kind === 'SERVER').length, 1, 'one server span for one request');
  // Named by what happened, never by a file: the server span by its route.
  assert.equal(underCaller[0]?.name, 'POST /graphql');
  assert.equal(underCaller[0]?.tags?.['http.route'], '/graphql');
  for (const span of trace) {
    assert.ok(!['node_modules', '->', ROOT].some((file) => span.name.includes(file)), `"${span.name}" names a file`);
  }
  const ids = new Set(trace.map((span) => span.id));
  for (const span of trace) {
    if (span !== underCaller[0]) assert.ok(span.parentId && ids.has(span.parentId), `"${span.name}" hangs under a span of the request`);
  }
});

/** The BFF's JSON log lines of one request (fastify's reqId), once its last one is written. */
async function linesOfRequest(child: ServiceProcess, reqId: string): Promise<Record<string, unknown>[]> {
  const lines = () => child.output.map((line) => JSON.parse(line) as Record<string, unknown>).filter((entry) => entry.reqId === reqId);
  await waitFor(() => lines().some((entry) => entry.msg === 'request completed'), { what: `the lines of ${reqId}` });
  return lines();
}

/** Sends a GraphQL request to `base`; returns the reqId the BFF logged it under (the newest "incoming request" of that body). */
async function request(base: string, child: ServiceProcess, headers: Record<string, string> = {}): Promise<string> {
  const marker = randomBytes(4).toString('hex');
  const before = child.output.length;
  const response = await fetch(`${base}/graphql?marker=${marker}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ query: '{ __typename }' }),
  });
  assert.equal(response.status, 200);
  const incoming = await waitFor(
    () =>
      child.output
        .slice(before)
        .map((line) => JSON.parse(line) as { reqId?: string; msg?: string; req?: { url?: string } })
        .find((entry) => entry.msg === 'incoming request' && entry.req?.url?.includes(marker)),
    { what: 'the "incoming request" line' },
  );
  return incoming.reqId!;
}

test("without an exporter, every log line of a request carries its trace id: a caller's, else one of its own", async () => {
  const traceId = randomBytes(16).toString('hex');
  const traced = await linesOfRequest(
    plain,
    await request(plainUrl, plain, { traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01` }),
  );
  assert.ok(traced.length >= 2, JSON.stringify(traced));
  for (const entry of traced) assert.equal(entry.trace_id, traceId, `"${String(entry.msg)}" carries the caller's trace id`);

  const own = await linesOfRequest(plain, await request(plainUrl, plain));
  const ids = new Set(own.map((entry) => entry.trace_id));
  assert.equal(ids.size, 1, `one trace id on every line: ${JSON.stringify(own)}`);
  assert.match(String([...ids][0]), /^[0-9a-f]{32}$/);
  assert.notEqual([...ids][0], traceId);
});
