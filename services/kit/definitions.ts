// A service's definition, found through the registry: the ServiceDefinition
// its folder's app.ts exports. For tools that go over every service (the
// AsyncAPI generator, tests), so no list of services is written elsewhere.
import { join } from 'node:path';
import type { ProcessEntry } from '../../subjects/index.ts';
import type { ServiceDefinition } from './service.ts';

const ROOT = join(import.meta.dirname, '..', '..');

export function isServiceDefinition(value: unknown): value is ServiceDefinition<unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as ServiceDefinition).build === 'function' &&
    Array.isArray((value as ServiceDefinition).emits)
  );
}

/** The ServiceDefinition of `entry`'s app.ts; throws when it exports none, or one of another name. */
export async function serviceDefinition(entry: ProcessEntry): Promise<ServiceDefinition<unknown>> {
  const module = (await import(join(ROOT, entry.folder, 'app.ts'))) as Record<string, unknown>;
  const definition = Object.values(module).find(isServiceDefinition);
  if (!definition) throw new Error(`${entry.folder}/app.ts exports no ServiceDefinition`);
  if (definition.name !== entry.name) {
    throw new Error(`${entry.folder}/app.ts defines "${definition.name}", but the registry names that folder's service "${entry.name}"`);
  }
  return definition;
}
