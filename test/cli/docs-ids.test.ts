import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from '@jest/globals';
import {
  newSnapshotId,
  SNAPSHOT_ID,
  SNAPSHOT_ID_EXAMPLE,
} from '../../functions/commons/vault/format.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));

/** Anything that looks like a snapshot id: a date, `T`, a time, maybe fractions, a zone and a suffix. */
const ID_LIKE = /\d{8}T\d{2,}[\d.]*Z?(?:-[0-9A-Za-z]{1,12})?/g;

/** Files below `dir` (relative to the repository) whose names end in one of `endings`. */
async function filesIn(dir: string, endings: readonly string[]): Promise<string[]> {
  const entries = await readdir(join(root, dir), { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && endings.some((end) => e.name.endsWith(end)))
    .map((e) => relative(root, join(e.parentPath, e.name)));
}

describe('snapshot ids shown to users', () => {
  it('has every id in the README, the docs and the code that shows ids in the form the validator accepts', async () => {
    // Prepare: the docs, and the CLI and workflows whose messages show example ids
    const files = [
      'README.md',
      ...(await filesIn('docs', ['.md'])),
      ...(await filesIn('bin', ['.ts'])),
      ...(await filesIn('functions', ['.ts'])),
      ...(await filesIn('state-machines', ['.json'])),
    ];
    // Act
    const shown: Array<{ file: string; id: string }> = [];
    for (const file of files)
      for (const match of (await readFile(join(root, file), 'utf8')).matchAll(ID_LIKE))
        shown.push({ file, id: match[0] });
    // Assess: the docs do show ids, and each one parses
    expect(shown.filter((s) => s.file.startsWith('docs/')).length).toBeGreaterThan(0);
    expect(shown.filter((s) => !SNAPSHOT_ID.test(s.id))).toEqual([]);
  });

  it('accepts the ids the backup makes, and the example messages give', () => {
    // Act
    const made = [new Date(0), new Date('2026-11-23T02:00:00Z'), new Date()].map(newSnapshotId);
    // Assess
    for (const id of [...made, SNAPSHOT_ID_EXAMPLE]) expect(id).toMatch(SNAPSHOT_ID);
  });
});
