import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from '@jest/globals';
import { typeScriptCommand } from '../../sandbox/process.ts';

const bench = fileURLToPath(new URL('../../scripts/bench.ts', import.meta.url));

interface Run {
  ok: boolean;
  outOfMemory: boolean;
  heapMiB: number;
  peakRssMiB: number;
  requests: Record<string, number>;
  requestsPerObject: number;
  steps: Array<{ state: string; seconds: number }>;
  result: { restore?: { objects: number; proof: { ok: boolean } } };
}

/** `npm run bench -- scale` with these arguments: its JSON results. */
function benchScale(...args: string[]): Promise<Record<string, unknown>> {
  const { command, args: loader } = typeScriptCommand(bench);
  return new Promise((resolve, reject) => {
    execFile(
      command,
      [...loader, 'scale', ...args, '--json'],
      { timeout: 300_000, maxBuffer: 16 * 1024 ** 2 },
      (err, out, stderr) =>
        err === null
          ? resolve(JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>)
          : reject(new Error(`bench scale failed: ${stderr}`)),
    );
  });
}

/**
 * The scale benchmark, small: the figures it prints come from the runs it
 * says they come from. Growth is judged at 100,000 objects and up
 * (docs/scale.md), not here.
 */
describe('npm run bench -- scale, on a small registry', () => {
  it('backs up, backs up unchanged and restores through the CLI, with requests, steps and memory on record', async () => {
    // Act
    const results = await benchScale('--objects', '700', '--concurrency', '8');
    // Assess
    expect(results['objects']).toBe(700);
    const backup = (results['backup'] as { capped: Run; uncapped?: Run }).capped;
    const unchanged = (results['unchanged'] as { capped: Run }).capped;
    const restore = (results['restore'] as { capped: Run }).capped;
    for (const run of [backup, unchanged, restore]) {
      expect(run.ok).toBe(true);
      expect(run.heapMiB).toBe(512);
      expect(run.peakRssMiB).toBeGreaterThan(50);
    }
    expect(backup.requests['CopyObject']).toBe(700);
    expect(backup.steps.map((s) => s.state)).toEqual(
      expect.arrayContaining(['PlanShards', 'EnqueueShards', 'FinalizeSnapshot']),
    );
    // Nothing changed: LISTs and the run's own files, no copy.
    expect(unchanged.requests['CopyObject']).toBeUndefined();
    expect(unchanged.requestsPerObject).toBeLessThan(0.2);
    expect(restore.requests['CopyObject']).toBe(700);
    expect(restore.result.restore?.objects).toBe(700);
    expect(restore.result.restore?.proof.ok).toBe(true);
    expect(restore.steps.map((s) => s.state)).toContain('ProveRestoredContent');
  });
});
