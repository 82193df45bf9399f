import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from '@jest/globals';
import { typeScriptCommand } from '../../sandbox/process.ts';

const bench = fileURLToPath(new URL('../../scripts/bench.ts', import.meta.url));

/**
 * The benchmark itself, small: every peer runs and regvault's results are
 * right. Speed is judged by `npm run bench` at full size, not here.
 */
describe('npm run bench, on a small data set', () => {
  it('runs every peer and reports exact change detection, request counts and streaming memory', async () => {
    // Prepare
    const { command, args } = typeScriptCommand(bench);
    // Act
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(
        command,
        [
          ...args,
          '--objects',
          '400',
          '--rounds',
          '3',
          '--stream-rounds',
          '2',
          '--workflow-rounds',
          '2',
          '--big-mib',
          '24',
          '--json',
          '--no-write',
        ],
        { timeout: 300_000, maxBuffer: 16 * 1024 ** 2 },
        (err, out, stderr) =>
          err === null ? resolve(out) : reject(new Error(`bench failed: ${stderr}`)),
      );
    });
    // Assess
    const results = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as Record<
      string,
      number | number[]
    >;
    for (const peer of ['floorSeconds', 'rcloneSeconds', 'awsSeconds', 'streamRcloneSeconds'])
      expect(results[peer]).toBeGreaterThan(0);
    expect(results['objects']).toBe(400);
    expect(results['floorRounds']).toHaveLength(3);
    expect(results['streamRounds']).toHaveLength(2);
    // The headline ratio pairs each regvault round with the floor round it ran beside.
    const floorRounds = results['floorRounds'] as number[];
    const regvaultRounds = results['regvaultRounds'] as number[];
    const roundRatios = regvaultRounds.map((v, i) => v / (floorRounds[i] ?? Number.NaN));
    const middle = [...roundRatios].sort((a, b) => a - b)[1];
    expect(results['floorRatio']).toBeCloseTo(middle ?? Number.NaN, 9);
    expect(results['changedFound']).toBe(results['changedExpected']);
    expect(results['mismatchedAfterIncremental']).toBe(0);
    expect(results['unchangedNonListRequests']).toBe(0);
    expect(results['requestsPerObjectFull']).toBeLessThan(1.1);
    expect(results['streamPeakRssMiB']).toBeLessThan(300);
    // The headline: backups through the compiled CLI and the workflow, paired with the floor.
    const workflow = results['workflow'] as unknown as {
      rounds: number[];
      floorRounds: number[];
      requestsPerObjectFull: number;
      requestsPerObjectUnchanged: number;
      cliStartupMs: number;
    };
    expect(workflow.rounds).toHaveLength(2);
    expect(workflow.floorRounds).toHaveLength(2);
    expect(workflow.requestsPerObjectFull).toBeGreaterThanOrEqual(1);
    expect(workflow.requestsPerObjectUnchanged).toBeLessThan(workflow.requestsPerObjectFull);
    expect(workflow.cliStartupMs).toBeGreaterThan(0);
    expect(results['workflowFloorRatio']).toBeGreaterThan(0);
  });
});
