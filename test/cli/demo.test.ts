import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from '@jest/globals';
import { typeScriptCommand } from '../../sandbox/process.ts';

const demo = fileURLToPath(new URL('../../scripts/demo.ts', import.meta.url));

/** Runs the demo with `args`; its exit code and its --json lines. */
async function runDemo(
  args: readonly string[],
): Promise<{ code: number; lines: Array<Record<string, unknown>> }> {
  const { command, args: prefix } = typeScriptCommand(demo);
  const { code, stdout } = await new Promise<{ code: number; stdout: string }>((resolve) => {
    execFile(command, [...prefix, ...args], { timeout: 180_000 }, (err, out) =>
      resolve({
        code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1,
        stdout: out,
      }),
    );
  });
  const lines = stdout
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  return { code, lines };
}

describe('npm run demo', () => {
  it('backs up, loses and restores a registry, ending --json output with one result object', async () => {
    // Act
    const { code, lines } = await runDemo(['--json', '--repositories', '2', '--tags', '2']);
    // Assess
    expect(code).toBe(0);
    expect(lines.at(-1)).toMatchObject({
      backup: { status: 'complete' },
      restore: { status: 'succeeded', bucket: 'registry-bucket-restored' },
      verify: { ok: true, pulled: 4, pulledOk: 4 },
    });
    expect(lines.at(-1)?.['objects']).toBeGreaterThan(0);
    expect(lines.at(-1)?.['bytes']).toBeGreaterThan(0);
  });

  it('runs the Quay round trip with --profile quay: bucket and database lost, both restored', async () => {
    // Act
    const { code, lines } = await runDemo(['--profile', 'quay', '--json', '--repositories', '2']);
    // Assess
    expect(code).toBe(0);
    expect(lines.at(-1)).toMatchObject({
      profile: 'quay',
      backup: { status: 'complete' },
      restore: { status: 'succeeded', bucket: 'quay-restored' },
      database: { rows: 2, same: true },
      verify: { ok: true, pulled: 2, pulledOk: 2 },
    });
  });
});
