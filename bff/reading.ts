// The loop behind the BFF's long-lived stream readers (the order feed, the
// read models' replicas): read until the read ends or fails, wait, read
// again, until stopped. Stopping cuts the wait short.
import { setTimeout as sleep } from 'node:timers/promises';

export interface ReadingOptions {
  /** Aborted when the reader stops: no further read starts, and the wait ends at once. */
  signal: AbortSignal;
  /** Wait before reading again. */
  retryMs: number;
  /** A read that failed while not stopping (logged by the caller, then retried). */
  onFailure(error: unknown): void;
  /** After every read, ended or failed. */
  afterRead?(): void;
}

export async function readUntilStopped(read: () => Promise<void>, options: ReadingOptions): Promise<void> {
  const { signal } = options;
  while (!signal.aborted) {
    try {
      await read();
    } catch (error) {
      if (!signal.aborted) options.onFailure(error);
    }
    options.afterRead?.();
    if (signal.aborted) break;
    await sleep(options.retryMs, undefined, { signal }).catch(() => {
      // Aborted: the loop ends.
    });
  }
}
