// One pino logger per process, JSON by default (pretty only on a terminal),
// every line naming its service. Request and event handlers log through child
// loggers that add the trace ids.
import { pino, type Logger, type LevelWithSilent } from 'pino';
import { trace } from '@opentelemetry/api';

export type { Logger };

export function createLogger(service: string, level: LevelWithSilent = 'info'): Logger {
  const pretty = process.stdout.isTTY && process.env.LOG_FORMAT !== 'json';
  return pino({
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
  });
}
