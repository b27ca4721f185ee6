// Summarises V8 CPU profiles (.cpuprofile, as written by `node --cpu-prof`,
// e.g. by BENCH_CPU_PROF=<dir> npm run bench:saga): for each file, the share
// of samples by where the time was spent (self time), grouped by package or
// project file, and the top functions.
//
//   npx node bench/profile.ts <dir or files...> [--top 25]
import { readFile, readdir, stat } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import { ROOT } from '../scripts/lib/launcher.ts';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** Where a frame's code lives: a package, a project folder, node itself, or V8's own bookkeeping. */
function placeOf(url: string, functionName: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const packageMatch = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (packageMatch) return packageMatch[1]!;
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  const path = url.replace(/^file:\/\//, '');
  if (path.startsWith(ROOT)) return relative(ROOT, path);
  return path;
}

export async function summarise(file: string, top: number): Promise<string> {
  const profile = JSON.parse(await readFile(file, 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfMicros = new Map<number, number>();
  for (const [index, id] of profile.samples.entries()) selfMicros.set(id, (selfMicros.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0));
  const total = [...selfMicros.values()].reduce((a, b) => a + b, 0);
  const idle = [...selfMicros].filter(([id]) => byId.get(id)?.callFrame.functionName === '(idle)').reduce((a, [, us]) => a + us, 0);
  const busy = total - idle;
  const places = new Map<string, number>();
  const functions = new Map<string, number>();
  for (const [id, micros] of selfMicros) {
    const node = byId.get(id)!;
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') continue;
    const place = placeOf(url, functionName);
    places.set(place, (places.get(place) ?? 0) + micros);
    const name = `${functionName || '(anonymous)'} ${place}:${lineNumber + 1}`;
    functions.set(name, (functions.get(name) ?? 0) + micros);
  }
  const pct = (micros: number) => `${((micros / busy) * 100).toFixed(1).padStart(5)}%`;
  const lines = [
    `${basename(file)}: ${(total / 1e6).toFixed(1)} s profiled, ${(busy / 1e6).toFixed(1)} s busy (${((busy / total) * 100).toFixed(0)}%)`,
    '  by place (self time, share of busy):',
    ...[...places]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([place, micros]) => `    ${pct(micros)}  ${place}`),
    '  by function:',
    ...[...functions]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, micros]) => `    ${pct(micros)}  ${name}`),
  ];
  return lines.join('\n');
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const topAt = args.indexOf('--top');
  const top = topAt >= 0 ? Number(args.splice(topAt, 2)[1]) || 25 : 25;
  const files: string[] = [];
  for (const arg of args) {
    if ((await stat(arg)).isDirectory()) {
      files.push(
        ...(await readdir(arg))
          .filter((name) => name.endsWith('.cpuprofile'))
          .sort()
          .map((name) => join(arg, name)),
      );
    } else {
      files.push(arg);
    }
  }
  if (files.length === 0) {
    process.stderr.write('usage: npx node bench/profile.ts <dir or .cpuprofile files> [--top N]\n');
    process.exit(2);
  }
  for (const file of files) process.stdout.write(`${await summarise(file, top)}\n\n`);
}
