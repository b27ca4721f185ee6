// The programs of the registry as deployment checks see them: each process's
// entry script, and the environment variables its code reads (its settings
// schema, its live settings, and `process.env.X` in its code, the kit's and
// the contracts' included). test/compose.test.ts and test/deploy.test.ts
// check that compose.yaml and the Kubernetes manifests set nothing else.
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { PROCESSES, entryScript, registry, settingsOf, type ProcessEntry } from '../subjects/index.ts';
import { serviceSettingsSchema } from '../services/kit/config.ts';
import { serviceDefinition } from '../services/kit/definitions.ts';
import { ROOT } from './harness.ts';

export interface Program {
  name: string;
  dir: string;
  /** Its environment schema's variables (a service's at start, live settings' included). */
  schema: readonly string[];
}

/** Every process of the registry, as `entry -> program`. */
export async function programs(): Promise<Map<string, Program>> {
  const found = new Map<string, Program>();
  for (const name of PROCESSES) {
    const entry: ProcessEntry = registry[name];
    let schema: string[] = [];
    if (entry.isService) {
      const definition = await serviceDefinition(entry);
      schema = Object.keys(serviceSettingsSchema(definition));
    } else {
      // The BFF: the schema its app.ts exports (an object of TypeBox schemas with NATS_URL among them).
      for (const value of Object.values((await import(join(ROOT, entry.folder, 'app.ts'))) as Record<string, unknown>)) {
        if (typeof value === 'object' && value !== null && 'NATS_URL' in value) schema.push(...Object.keys(value));
      }
    }
    found.set(entryScript(entry), { name: entry.name, dir: entry.folder, schema });
  }
  return found;
}

/** Every .ts file under `dir`, tests excluded. */
async function sources(dir: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(join(ROOT, dir), { withFileTypes: true, recursive: true })) {
    const path = relative(ROOT, join(entry.parentPath, entry.name));
    if (entry.isFile() && path.endsWith('.ts') && !path.split('/').includes('test')) files.push(path);
  }
  return files;
}

/** The environment variables a program reads: its settings schema, its live settings, and `process.env.X` in its code. */
export async function variablesRead(program: Program): Promise<Set<string>> {
  const read = new Set<string>(program.schema);
  for (const setting of settingsOf(program.name)) if (setting.env) read.add(setting.env);
  const files = [...(await sources('services/kit')), ...(await sources('subjects')), ...(await sources(program.dir))];
  for (const file of files) {
    const text = await readFile(join(ROOT, file), 'utf8');
    for (const match of text.matchAll(/process\.env(?:\.([A-Z][A-Z0-9_]*)|\[['"]([A-Z][A-Z0-9_]*)['"]\])/g))
      read.add(match[1] ?? match[2]!);
  }
  return read;
}
