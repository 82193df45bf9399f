import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from '@jest/globals';

/**
 * The rooms of functions/commons from the top down. A file imports only from
 * its own room or a room further down; rooms of one rank do not import each
 * other. `local/` runs the Lambda handlers' chain (`aws/`), so it sits above
 * it. In the middle, a snapshot in the vault is a registry's layout stored
 * (vault/format.ts maps blob keys with registry/layout.ts; a snapshot is a
 * source fsck can check, vault/snapshot-source.ts), so vault/ sits above
 * registry/; registry/ implements the copy engine's policy
 * (registry/copy-policy.ts), so it sits above copy/, which knows keys, not
 * registries or vaults. '' is the files at the top of functions/commons
 * (errors.ts, log.ts, sha256.ts), which import no room.
 */
const RANKS: ReadonlyArray<readonly string[]> = [
  ['local'],
  ['aws'],
  ['workflows'],
  ['vault'],
  ['registry'],
  ['copy'],
  ['s3', 'cluster'],
  [''],
];

const RULE =
  'local > aws > workflows > vault > registry > copy > s3, cluster > errors.ts, log.ts, sha256.ts';

const commons = fileURLToPath(new URL('../functions/commons/', import.meta.url));

/** The room of a path below functions/commons ('' for the files at its top). */
function roomOf(path: string): string {
  const parts = path.split('/');
  return parts.length > 1 ? (parts[0] ?? '') : '';
}

/** The rank of a room (0 at the top), or undefined for a room the table does not name. */
function rankOf(room: string): number | undefined {
  const rank = RANKS.findIndex((rooms) => rooms.includes(room));
  return rank === -1 ? undefined : rank;
}

/**
 * Why an import from `from` of `to` (both below functions/commons, or `to`
 * outside it) breaks the rule, or undefined when it keeps it.
 */
function breach(from: string, to: string): string | undefined {
  if (to.startsWith('../'))
    return 'reaches outside functions/commons (an entry point, above every room)';
  const [source, target] = [roomOf(from), roomOf(to)];
  if (source === target) return undefined;
  const [above, below] = [rankOf(source), rankOf(target)];
  if (above === undefined || below === undefined)
    return `room ${above === undefined ? source : target}/ has no rank: add it to RANKS`;
  if (below > above) return undefined;
  return below === above
    ? `${source}/ and ${target}/ are of one rank`
    : `${target}/ is above ${source === '' ? 'the top files' : `${source}/`}`;
}

/** The module specifiers a source imports: static, type-only, re-exported and dynamic. */
function specifiersOf(source: string): string[] {
  return [...source.matchAll(/(?:\bfrom|^import|\bimport\s*\()\s*['"]([^'"]+)['"]/gm)].map(
    (match) => match[1] ?? '',
  );
}

/** Every TypeScript file below functions/commons, as a path relative to it with `/`. */
function commonsFiles(): string[] {
  return readdirSync(commons, { recursive: true, encoding: 'utf8' })
    .filter((path) => path.endsWith('.ts'))
    .map((path) => path.split(sep).join('/'))
    .sort();
}

/** Every relative import in functions/commons: which file, what it names, where that resolves. */
function importsOf(files: readonly string[]): Array<{ file: string; target: string }> {
  return files.flatMap((file) =>
    specifiersOf(readFileSync(join(commons, file), 'utf8'))
      .filter((specifier) => specifier.startsWith('.'))
      .map((specifier) => ({
        file,
        target: relative(commons, join(commons, dirname(file), specifier))
          .split(sep)
          .join('/'),
      })),
  );
}

describe(`imports in functions/commons point down (${RULE})`, () => {
  it('finds the imports of every file, whatever their form', () => {
    // Prepare
    const source = [
      "import { a } from './a.ts';",
      "import type { B } from '../registry/b.ts';",
      'import {',
      '  c,',
      "} from '../copy/c.ts';",
      "export { d } from '../vault/d.ts';",
      "import '../s3/side-effect.ts';",
      "const e = await import('../cluster/e.ts');",
    ].join('\n');
    // Act
    const specifiers = specifiersOf(source);
    // Assess
    expect(specifiers).toEqual([
      './a.ts',
      '../registry/b.ts',
      '../copy/c.ts',
      '../vault/d.ts',
      '../s3/side-effect.ts',
      '../cluster/e.ts',
    ]);
  });

  it.each([
    ['copy/plan.ts', 'registry/layout.ts', 'registry/ is above copy/'],
    ['copy/engine.ts', 'vault/store.ts', 'vault/ is above copy/'],
    ['registry/fsck.ts', 'vault/store.ts', 'vault/ is above registry/'],
    ['vault/format.ts', 'workflows/backup.ts', 'workflows/ is above vault/'],
    ['workflows/worker.ts', 'aws/runtime.ts', 'aws/ is above workflows/'],
    ['aws/runtime.ts', 'local/runner.ts', 'local/ is above aws/'],
    ['s3/client.ts', 'cluster/kube.ts', 's3/ and cluster/ are of one rank'],
    ['errors.ts', 's3/client.ts', 's3/ is above the top files'],
    [
      'copy/plan.ts',
      '../copy-worker.ts',
      'reaches outside functions/commons (an entry point, above every room)',
    ],
    ['queue/sqs.ts', 'errors.ts', 'room queue/ has no rank: add it to RANKS'],
  ])('refuses %s importing %s: %s', (from, to, why) => {
    expect(breach(from, to)).toBe(why);
  });

  it.each([
    ['registry/copy-policy.ts', 'copy/policy.ts'],
    ['vault/format.ts', 'registry/layout.ts'],
    ['vault/store.ts', 'copy/model.ts'],
    ['workflows/backup.ts', 'vault/runs.ts'],
    ['local/runner.ts', 'aws/step-handler.ts'],
    ['copy/plan.ts', 's3/fast-copy.ts'],
    ['cluster/kube.ts', 'errors.ts'],
    ['errors.ts', 'log.ts'],
    ['copy/engine.ts', 'copy/plan.ts'],
  ])('allows %s importing %s', (from, to) => {
    expect(breach(from, to)).toBeUndefined();
  });

  it('holds for every import of every file', () => {
    // Prepare
    const files = commonsFiles();
    // Act
    const imports = importsOf(files);
    const breaches = imports.flatMap(({ file, target }) => {
      const why = breach(file, target);
      return why === undefined ? [] : [`${file} imports ${target}: ${why}`];
    });
    // Assess: the scan saw the tree, then every breach is listed at once.
    expect(files).toEqual(expect.arrayContaining(['errors.ts', 'copy/policy.ts']));
    expect(imports.length).toBeGreaterThan(100);
    expect(breaches).toEqual([]);
  });
});

/** The folders of shipped source: every file in them keeps to `MAX_LINES`. */
const SOURCE_ROOTS = ['functions', 'bin', 'infra', 'scripts'] as const;
const MAX_LINES = 500;
const repo = fileURLToPath(new URL('..', import.meta.url));

describe(`no source file outside test/ and sandbox/ is over ${MAX_LINES} lines`, () => {
  it('holds for every TypeScript file of functions/, bin/, infra/ and scripts/', () => {
    // Act
    const files = SOURCE_ROOTS.flatMap((root) =>
      readdirSync(join(repo, root), { recursive: true, encoding: 'utf8' })
        .filter((path) => path.endsWith('.ts'))
        .map((path) => join(root, path)),
    );
    const long = files.flatMap((file) => {
      const lines = readFileSync(join(repo, file), 'utf8').split('\n').length - 1;
      return lines > MAX_LINES ? [`${file}: ${lines} lines`] : [];
    });
    // Assess: the scan saw the tree, then every long file is listed at once.
    expect(files.length).toBeGreaterThan(100);
    expect(long).toEqual([]);
  });
});

describe('a backup that reaches no cluster does not load the Kubernetes client', () => {
  it("keeps @kubernetes/client-node out of the backup command's static imports (it loads when a cluster is used)", async () => {
    // Arrange: the import graph as the CLI's bundler sees it (scripts/build-cli.mjs).
    const { build } = await import('esbuild');
    const entry = 'bin/commands/backup.ts';
    const { metafile } = await build({
      entryPoints: [entry],
      bundle: true,
      platform: 'node',
      format: 'esm',
      write: false,
      metafile: true,
      logLevel: 'silent',
      outdir: 'unused',
    });

    // Act: every module the entry reaches through static imports.
    const reached = new Set([entry]);
    const queue = [entry];
    for (let file = queue.shift(); file !== undefined; file = queue.shift())
      for (const found of metafile.inputs[file]?.imports ?? [])
        if (found.kind !== 'dynamic-import' && !reached.has(found.path)) {
          reached.add(found.path);
          queue.push(found.path);
        }

    // Assert
    expect(reached.size).toBeGreaterThan(100);
    expect([...reached].filter((path) => path.includes('@kubernetes/client-node'))).toEqual([]);
  });
});
