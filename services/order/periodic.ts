// A loop of the order service's own: one round, a pause, the next round.
// Every instance runs it; what a round does is safe beside other instances.
import type { BackgroundTask, Logger } from '../kit/index.ts';

/**
 * Runs `round` every `intervalMs`, counted from the end of the previous one.
 * A failed round is logged and the next one tries again (the database may be
 * away for a moment); stop waits for the round in flight.
 */
export function periodicTask(
  name: string,
  log: Logger,
  intervalMs: number,
  round: (stopping: () => boolean) => Promise<void>,
): BackgroundTask {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;

  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = round(() => stopped)
        .catch((error) => log.warn({ err: error }, `${name} failed; will retry`))
        .finally(() => {
          running = undefined;
          schedule();
        });
    }, intervalMs);
  };

  return {
    name,
    start() {
      schedule();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
