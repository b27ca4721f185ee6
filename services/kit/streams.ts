// Creates or updates the JetStream streams named in subjects/ at start, so a
// fresh NATS server (or a changed definition) needs no manual step.
import { RetentionPolicy, StorageType, DiscardPolicy, nanos, type JetStreamManager, type StreamConfig } from 'nats';
import type { StreamDefinition } from '../../subjects/index.ts';
import type { Logger } from './log.ts';

export function toStreamConfig(definition: StreamDefinition, replicas: number): Partial<StreamConfig> & { name: string } {
  return {
    name: definition.name,
    subjects: [...definition.subjects],
    description: definition.description,
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(definition.maxAgeSeconds * 1000),
    max_bytes: definition.maxBytes,
    duplicate_window: nanos(definition.duplicateWindowSeconds * 1000),
    num_replicas: replicas,
  };
}

export async function ensureStreams(
  jsm: JetStreamManager,
  definitions: readonly StreamDefinition[],
  replicas: number,
  log: Logger,
): Promise<void> {
  for (const definition of definitions) {
    const config = toStreamConfig(definition, replicas);
    try {
      await jsm.streams.info(definition.name);
      await jsm.streams.update(definition.name, config);
    } catch (error) {
      if ((error as { code?: string }).code !== '404') throw error;
      try {
        await jsm.streams.add(config);
        log.info({ stream: definition.name }, 'stream created');
      } catch (raced) {
        // Another instance created it in between; make sure ours is current.
        if (!/already in use/i.test((raced as Error).message)) throw raced;
        await jsm.streams.update(definition.name, config);
      }
    }
  }
}
