/**
 * State machine definitions live in `state-machines/<name>.asl.json` with every
 * ARN and URL a `${Placeholder}`; this fills them from what the stack made and
 * fails the synth when a placeholder has no value or a value no placeholder.
 */
import { readFileSync } from 'node:fs';

const PLACEHOLDER = /\$\{([A-Za-z][A-Za-z0-9]*)\}/g;

/** The `${...}` placeholders a definition's text holds. */
export function placeholdersIn(text: string): Set<string> {
  return new Set(Array.from(text.matchAll(PLACEHOLDER), (match) => match[1] ?? ''));
}

/**
 * The substitutions of one ASL file: exactly its placeholders, each given a
 * value. `text`: the definition the stack deploys, when it adds to the file.
 */
export function substitutionsFor(
  file: string,
  values: Readonly<Record<string, string>>,
  text: string = readFileSync(file, 'utf8'),
): Record<string, string> {
  const wanted = placeholdersIn(text);
  const missing = [...wanted].filter((name) => values[name] === undefined);
  const unused = Object.keys(values).filter((name) => !wanted.has(name));
  if (missing.length > 0 || unused.length > 0) {
    throw new Error(
      `the placeholders of ${file} do not match what the stack provides: ` +
        `missing ${JSON.stringify(missing)}, unused ${JSON.stringify(unused)}; ` +
        'give every placeholder a value in infra/workflows.ts, or drop the value the definition no longer uses',
    );
  }
  return Object.fromEntries([...wanted].map((name) => [name, values[name] ?? '']));
}
