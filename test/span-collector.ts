// Local trace back ends for tests: an HTTP endpoint that keeps every span
// POSTed to it, decoded by the caller (Zipkin's v2 JSON, OTLP's JSON). Zipkin
// and collectors cannot be installed here; the exporters are real, and this
// is what they talk to.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SpanCollector<S> {
  /** http://127.0.0.1:<port>, without the path. */
  url: string;
  /** Every span received so far, in arrival order. */
  spans: S[];
  close(): Promise<void>;
}

/** Keeps every span POSTed to `path` (decoded from its JSON body by `decode`); anything else is 404. */
export async function collectSpans<S>(path: string, decode: (body: unknown) => S[]): Promise<SpanCollector<S>> {
  const spans: S[] = [];
  const server: Server = createServer((request, response) => {
    if (request.method !== 'POST' || request.url !== path) {
      response.writeHead(404).end();
      return;
    }
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      spans.push(...decode(JSON.parse(Buffer.concat(chunks).toString('utf8'))));
      response.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, spans, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** A span as the Zipkin exporter sends it (Zipkin API v2, a JSON array of spans). */
export interface ZipkinSpan {
  traceId: string;
  id: string;
  parentId?: string;
  name: string;
  kind?: string;
  localEndpoint?: { serviceName?: string };
  tags?: Record<string, string>;
}

export const ZIPKIN_SPANS_PATH = '/api/v2/spans';

/** A local Zipkin: give the exporter `${url}${ZIPKIN_SPANS_PATH}`. */
export function startZipkin(): Promise<SpanCollector<ZipkinSpan>> {
  return collectSpans(ZIPKIN_SPANS_PATH, (body) => body as ZipkinSpan[]);
}
