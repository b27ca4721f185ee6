// Prometheus metrics of one process, served on the operations port
// (ops.ts) as /metrics in the Prometheus text format. Each process keeps a
// registry of its own (tests run several services in one process), with the
// process's name as the `service` label of every series.
//
//   shop_rpc_requests_total{subject}                 requests answered, by endpoint
//   shop_rpc_request_errors_total{subject,code}      of which answered with an error
//   shop_rpc_request_duration_seconds{subject}       time to answer (histogram)
//   shop_rpc_breaker_state{subject}                  0 closed, 1 half-open, 2 open (calls to other services)
//   shop_events_handled_total{consumer,subject,outcome}  processed | duplicate | retry | dead_letter
//   shop_event_handling_duration_seconds{consumer}   time to handle one delivery (histogram)
//   shop_events_published_total{subject}             events the outbox relay published
//   shop_outbox_backlog                              outbox rows waiting to be published
//   shop_consumer_pending{consumer,stream}           events not yet delivered to the consumer (lag)
//   shop_consumer_ack_pending{consumer,stream}       delivered, not yet acknowledged
//   shop_nats_connected                              1 while the NATS connection is up
//   shop_http_requests_total{method,route,status}    the BFF's HTTP requests
//   shop_http_request_duration_seconds{method,route} (histogram)
//   shop_saga_duration_seconds{outcome}              the order service: placed to CONFIRMED / CANCELLED (histogram)
// plus prom-client's process_* and nodejs_* series (CPU, memory, event loop lag,
// GC), less the three nodejs_active_*_total gauges that fail promtool's lint.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export type EventOutcome = 'processed' | 'duplicate' | 'retry' | 'dead_letter';

/** What a failed request answered: our stable code and the micro status. */
export interface AnswerFailure {
  code: string;
  status: number;
  message: string;
}

/** Told once per answered request, with the whole time it took (async work included). */
export type RequestObserver = (subject: string, seconds: number, failure?: AnswerFailure) => void;

const LINT_FAILING_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

type Sample = { labels?: Record<string, string>; value: number };

export class ProcessMetrics {
  readonly registry = new Registry();
  /** Per endpoint subject: requests answered, and the duration histogram's child (its labels bound once). */
  readonly #rpcSeries = new Map<string, { requests: number; duration: { observe(value: number): void } }>();
  readonly #requestErrors: Counter<'subject' | 'code'>;
  readonly #requestDuration: Histogram<'subject'>;
  readonly #events: Counter<'consumer' | 'subject' | 'outcome'>;
  readonly #eventDuration: Histogram<'consumer'>;
  readonly #published: Counter<'subject'>;
  readonly #http: Counter<'method' | 'route' | 'status'>;
  readonly #httpDuration: Histogram<'method' | 'route'>;
  #readModelLag: Histogram<'bucket'> | undefined;

  /** `processMetrics: false` leaves out the process_* and nodejs_* series (nobody will scrape them). */
  constructor(process: string, { processMetrics = true }: { processMetrics?: boolean } = {}) {
    this.registry.setDefaultLabels({ service: process });
    if (processMetrics) {
      collectDefaultMetrics({ register: this.registry });
      // Gauges named like counters, which `promtool check metrics` rejects; each
      // is the sum of its by-type gauge (nodejs_active_handles{type} etc.).
      for (const name of LINT_FAILING_DEFAULTS) this.registry.removeSingleMetric(name);
    }
    const registers = [this.registry];
    const rpcSeries = this.#rpcSeries;
    // Registered, then read only through the registry (collect below).
    new Counter({
      name: 'shop_rpc_requests_total',
      help: 'Requests answered, by endpoint subject.',
      labelNames: ['subject'],
      registers,
      // Counted in a plain field per request and handed over when scraped:
      // prom-client's inc() (label checks and hashing) cost ~0.2 µs a request.
      collect() {
        this.reset();
        for (const [subject, { requests }] of rpcSeries) this.inc({ subject }, requests);
      },
    });
    this.#requestErrors = new Counter({
      name: 'shop_rpc_request_errors_total',
      help: 'Requests answered with an error, by subject and error code.',
      labelNames: ['subject', 'code'],
      registers,
    });
    this.#requestDuration = new Histogram({
      name: 'shop_rpc_request_duration_seconds',
      help: 'Time from receiving a request to answering it, async work included.',
      labelNames: ['subject'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#events = new Counter({
      name: 'shop_events_handled_total',
      help: 'Event deliveries handled by a durable consumer, by outcome (processed, duplicate, retry, dead_letter).',
      labelNames: ['consumer', 'subject', 'outcome'],
      registers,
    });
    this.#eventDuration = new Histogram({
      name: 'shop_event_handling_duration_seconds',
      help: 'Time to handle one event delivery, transaction included.',
      labelNames: ['consumer'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.#published = new Counter({
      name: 'shop_events_published_total',
      help: 'Events the outbox relay published to JetStream.',
      labelNames: ['subject'],
      registers,
    });
    this.#http = new Counter({
      name: 'shop_http_requests_total',
      help: 'HTTP requests answered, by method, route and status.',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.#httpDuration = new Histogram({
      name: 'shop_http_request_duration_seconds',
      help: 'Time to answer an HTTP request.',
      labelNames: ['method', 'route'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
  }

  readonly requestAnswered: RequestObserver = (subject, seconds, failure) => {
    let series = this.#rpcSeries.get(subject);
    if (!series) {
      series = { requests: 0, duration: this.#requestDuration.labels(subject) };
      this.#rpcSeries.set(subject, series);
    }
    series.requests++;
    series.duration.observe(seconds);
    if (failure) this.#requestErrors.inc({ subject, code: failure.code });
  };

  eventHandled(consumer: string, subject: string, outcome: EventOutcome, seconds: number): void {
    this.#events.inc({ consumer, subject, outcome });
    this.#eventDuration.observe({ consumer }, seconds);
  }

  eventPublished(subject: string): void {
    this.#published.inc({ subject });
  }

  httpAnswered(method: string, route: string, status: number, seconds: number): void {
    this.#http.inc({ method, route, status: String(status) });
    this.#httpDuration.observe({ method, route }, seconds);
  }

  /** A histogram of the service's own (e.g. the order saga's duration), in this process's registry. */
  histogram<Label extends string>(
    name: string,
    help: string,
    labelNames: readonly Label[],
    buckets: readonly number[] = LATENCY_BUCKETS,
  ): Histogram<Label> {
    return new Histogram({ name, help, labelNames: [...labelNames], buckets: [...buckets], registers: [this.registry] });
  }

  /** A state applied to a read model, `seconds` after its change was written (registered on first use: only readers have it). */
  readModelApplied(bucket: string, seconds: number): void {
    this.#readModelLag ??= new Histogram({
      name: 'shop_read_model_lag_seconds',
      help: "Time from a change's write (in its transaction) to its state applied in a read model, by bucket.",
      labelNames: ['bucket'],
      buckets: LATENCY_BUCKETS,
      registers: [this.registry],
    });
    this.#readModelLag.observe({ bucket }, Math.max(0, seconds));
  }

  /**
   * A gauge whose samples are read when /metrics is scraped (a backlog, a lag,
   * a state). A read that fails leaves the gauge without samples this time.
   */
  sampled(name: string, help: string, labelNames: readonly string[], read: () => Promise<Sample[]> | Sample[]): void {
    new Gauge({
      name,
      help,
      labelNames: [...labelNames],
      registers: [this.registry],
      async collect() {
        this.reset();
        let samples: Sample[];
        try {
          samples = await read();
        } catch {
          return;
        }
        for (const { labels, value } of samples) {
          if (labels) this.set(labels, value);
          else this.set(value);
        }
      },
    });
  }

  /** The Prometheus text exposition of every series. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** Records every answer of a fastify instance (structurally typed: the kit does not depend on fastify). */
export function observeHttp(
  app: {
    addHook(
      name: 'onResponse',
      hook: (
        request: { method: string; url: string; routeOptions?: { url?: string } },
        reply: { statusCode: number; elapsedTime: number },
      ) => Promise<void>,
    ): unknown;
  },
  metrics: ProcessMetrics,
): void {
  app.addHook('onResponse', async (request, reply) => {
    // The route pattern, not the URL: ids in paths must not become label values.
    const route = request.routeOptions?.url ?? 'unmatched';
    metrics.httpAnswered(request.method, route, reply.statusCode, reply.elapsedTime / 1000);
  });
}
