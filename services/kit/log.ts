// One pino logger per process, JSON by default (pretty only on a terminal),
// every line naming its service. Request and event handlers log through child
// loggers that add the trace ids.
//
// Lines go to stdout asynchronously (pino.destination with sync: false):
// lines logged while a write is under way leave together in the next one,
// instead of one write system call per line, a cost bench/saga.ts showed in
// every service at load. pino flushes what is pending when the process
// exits; only a kill -9 can lose the last few milliseconds of lines.
import { pino, type Logger, type LevelWithSilent } from 'pino';
import { trace } from '@opentelemetry/api';

export type { Logger };

export function createLogger(service: string, level: LevelWithSilent = 'info'): Logger {
  const pretty = process.stdout.isTTY && process.env.LOG_FORMAT !== 'json';
  return pino(
    {
      level,
      base: { service },
      timestamp: pino.stdTimeFunctions.isoTime,
      // Every line written while a span is active carries its ids.
      mixin() {
        const span = trace.getActiveSpan();
        if (!span) return {};
        const { traceId, spanId } = span.spanContext();
        return { trace_id: traceId, span_id: spanId };
      },
      ...(pretty ? { transport: { target: 'pino-pretty', options: { colorize: true } } } : {}),
    },
    pretty ? undefined : pino.destination({ dest: 1, sync: false }),
  );
}
