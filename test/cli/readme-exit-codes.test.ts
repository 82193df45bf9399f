/** The README's exit-code table says what the code does: every code, and every failure name at its code. */
import { readFile } from 'node:fs/promises';
import { describe, expect, it } from '@jest/globals';
import { ExitCode, exitCodeOf, FAILURES } from '../../functions/commons/errors.ts';

const readme = new URL('../../README.md', import.meta.url);

/** The rows of the table under `| Exit |`: the code and the names in its last column. */
async function exitCodeRows(): Promise<Array<{ code: number; names: string[] }>> {
  const lines = (await readFile(readme, 'utf8')).split('\n');
  const header = lines.findIndex((line) => line.startsWith('| Exit |'));
  const rows: Array<{ code: number; names: string[] }> = [];
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith('|')) break;
    const cells = line.split('|').map((cell) => cell.trim());
    rows.push({
      code: Number(/`(\d+)`/.exec(cells[1] ?? '')?.[1]),
      names: [...(cells[3] ?? '').matchAll(/`(\w+)`/g)].map((match) => match[1] ?? ''),
    });
  }
  return rows;
}

describe("the README's exit codes", () => {
  it('lists every exit code the CLI has, once', async () => {
    // Act
    const rows = await exitCodeRows();
    // Assess
    expect(rows.map((row) => row.code)).toEqual(Object.values(ExitCode).sort());
  });

  it('puts every failure name regvault gives at the code it exits with', async () => {
    // Act
    const rows = await exitCodeRows();
    // Assess
    const listed = rows.flatMap((row) => row.names.map((name) => ({ name, code: row.code })));
    expect(listed.map((entry) => entry.name).sort()).toEqual(Object.keys(FAILURES).sort());
    for (const { name, code } of listed)
      expect({ name, code: exitCodeOf(name) }).toEqual({ name, code });
  });
});
