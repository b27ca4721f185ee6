// Options of the npm scripts that take them (load, soak): `--name value`, else
// the environment variable <PREFIX>_<NAME> (dashes as underscores); `--help`
// prints the script's header comment. A bad number ends the script with one
// line naming the option and the way to the help.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

export interface ScriptOptions<Name extends string> {
  option(name: Name): string | undefined;
  /** A number of at least `min`; `fallback` when the option is not given. */
  numberOption(name: Name, fallback: number, min?: number): number;
}

export function scriptOptions<Name extends string>(script: {
  /** `import.meta.url` of the script: its header comment is the help. */
  url: string;
  /** The npm script's name, e.g. `soak`. */
  command: string;
  envPrefix: string;
  names: readonly Name[];
}): ScriptOptions<Name> {
  const { values } = parseArgs({
    options: {
      ...Object.fromEntries(script.names.map((name) => [name, { type: 'string' as const }])),
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    const header = readFileSync(fileURLToPath(script.url), 'utf8').split('\nimport ')[0]!;
    process.stdout.write(`${header.replace(/^\/\/ ?/gm, '')}\n`);
    process.exit(0);
  }
  const option = (name: Name): string | undefined => {
    const value = (values as Record<string, string | boolean | undefined>)[name];
    if (typeof value === 'string') return value;
    return process.env[`${script.envPrefix}_${name.toUpperCase().replace(/-/g, '_')}`] || undefined;
  };
  return {
    option,
    numberOption(name, fallback, min = 0) {
      const text = option(name);
      if (text === undefined) return fallback;
      const value = Number(text);
      if (!Number.isFinite(value) || value < min) {
        process.stderr.write(
          `${script.command}: --${name} must be a number of at least ${min}, not "${text}" (npm run ${script.command} -- --help)\n`,
        );
        process.exit(2);
      }
      return value;
    },
  };
}
