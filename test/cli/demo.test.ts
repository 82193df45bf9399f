import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from '@jest/globals';
import { typeScriptCommand } from '../../sandbox/process.ts';

const demo = fileURLToPath(new URL('../../scripts/demo.ts', import.meta.url));

describe('npm run demo', () => {
  it('backs up, loses and restores a registry, ending --json output with one result object', async () => {
    // Prepare
    const { command, args } = typeScriptCommand(demo);
    // Act
    const { code, stdout } = await new Promise<{ code: number; stdout: string }>((resolve) => {
      execFile(
        command,
        [...args, '--json', '--repositories', '2', '--tags', '2'],
        { timeout: 180_000 },
        (err, out) =>
          resolve({
            code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1,
            stdout: out,
          }),
      );
    });
    // Assess
    const lines = stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(code).toBe(0);
    expect(lines.at(-1)).toMatchObject({
      backup: { status: 'complete' },
      restore: { status: 'succeeded', bucket: 'registry-bucket-restored' },
      verify: { ok: true, pulled: 4, pulledOk: 4 },
    });
    expect(lines.at(-1)?.['objects']).toBeGreaterThan(0);
    expect(lines.at(-1)?.['bytes']).toBeGreaterThan(0);
  });
});
