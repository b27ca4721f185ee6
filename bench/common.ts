// What only the benchmarks share (bench/*.ts): their settings from the
// environment and the JSON file a run ends with. The shop they run and the
// tools they measure with are shared with scripts/ (scripts/lib/).
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT } from '../scripts/lib/launcher.ts';

/**
 * An integer of at least `min` from the environment, or `fallback` when unset.
 * A value set but not such an integer stops the bench: a typo must not measure
 * something else in silence.
 */
export function intEnv(name: string, fallback: number, min = 1): number {
  const raw = process.env[name]?.trim();
  if (!raw) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`${name}=${JSON.stringify(process.env[name])}: expected an integer of at least ${min}; unset it for ${fallback}`);
  }
  return value;
}

/** Where results go: bench-results/ (git-ignored), or BENCH_RESULTS_DIR (the smoke test's own folder). */
export function resultsDir(): string {
  return process.env.BENCH_RESULTS_DIR || join(ROOT, 'bench-results');
}

/** Writes `<resultsDir>/<name>.json` (made when missing) and returns its path. */
export async function writeResults(name: string, data: unknown): Promise<string> {
  const dir = resultsDir();
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${name}.json`);
  await writeFile(file, `${JSON.stringify(data, null, 2)}\n`);
  return file;
}
