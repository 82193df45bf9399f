import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from '@jest/globals';
import { DEFAULT_OBJECTS_PER_SHARD } from '../../functions/commons/copy/plan.ts';
import { MAX_SHARDS } from '../../functions/commons/workflows/backup-plan.ts';
import { typeScriptCommand } from '../../sandbox/process.ts';
import type { ScalePlanInput, ScalePlanOutput } from './plan-at-scale.ts';

const run = promisify(execFile);

/** The heap a plan must fit in (issue 17: "produced within 512 MiB"). */
const HEAP_MIB = 512;

/** Plans a synthetic registry in a child process whose heap is capped at HEAP_MIB. */
async function planAtScale(input: ScalePlanInput): Promise<ScalePlanOutput> {
  const { command, args } = typeScriptCommand(
    fileURLToPath(new URL('./plan-at-scale.ts', import.meta.url)),
  );
  const { stdout } = await run(
    command,
    [`--max-old-space-size=${HEAP_MIB}`, '--expose-gc', ...args, JSON.stringify(input)],
    { timeout: 280_000 },
  );
  return JSON.parse(stdout) as ScalePlanOutput;
}

const target = DEFAULT_OBJECTS_PER_SHARD;

describe('planning a registry of millions of objects (a synthetic listing)', () => {
  it.each([
    {
      objects: '1 million',
      registry: { blobs: 900_000, links: 100_000, repositories: 5_000 },
      shards: 200,
      requests: 500,
    },
    {
      objects: '10 million',
      // Five repositories of 12,000 links each: larger than a shard, never split.
      registry: {
        blobs: 9_000_000,
        links: 1_000_000,
        repositories: 50_000,
        giantEvery: 10_000,
        giantLinks: 12_000,
      },
      shards: 2_000,
      requests: 2_000,
    },
  ])(
    'plans $objects objects at the default target into at least $shards shards holding every key once, within 512 MiB',
    async ({ registry, shards, requests }) => {
      // Act
      const plan = await planAtScale({ ...registry, targetObjectsPerShard: target });
      // Assess
      expect(plan.unheld).toBe(0);
      expect(plan.linkShards + plan.blobShards).toBeGreaterThanOrEqual(shards);
      expect(plan.requests).toBeLessThan(requests);
      // Blobs are estimated from a page a fan-out: within a tenth of the target.
      expect(plan.held.blobs.max).toBeLessThanOrEqual(target * 1.1);
      // Links are counted: only a single repository larger than a shard holds more.
      expect(plan.over.filter((shard) => shard.held !== registry.giantLinks)).toEqual([]);
      expect(Math.abs(plan.estimatedObjects / plan.objects - 1)).toBeLessThan(0.02);
      // It ran under the cap; what it keeps is far below it.
      expect(plan.peakHeapMiB).toBeLessThan(HEAP_MIB / 4);
      // A backup takes the plan as it is (no replanning at a larger size), and
      // the ids of MAX_SHARDS shards leave most of a state's 256 KiB to the rest.
      const shardCount = plan.linkShards + plan.blobShards + plan.otherShards;
      expect(shardCount).toBeLessThanOrEqual(MAX_SHARDS);
      expect((plan.idBytes / shardCount) * MAX_SHARDS).toBeLessThan((256 * 1024) / 3);
    },
    300_000,
  );

  it('samples the repositories past its page budget, each link shard within 30% of the target', async () => {
    // Act: 300,000 links would take about 300 pages; the budget allows 64.
    const plan = await planAtScale({
      blobs: 20_000,
      links: 300_000,
      repositories: 15_000,
      targetObjectsPerShard: target,
      countPages: 64,
    });
    // Assess
    expect(plan.unheld).toBe(0);
    expect(plan.requests).toBeLessThan(200);
    expect(plan.held.links.max).toBeLessThanOrEqual(target * 1.3);
    expect(Math.abs(plan.estimatedObjects / plan.objects - 1)).toBeLessThan(0.02);
  }, 120_000);
});
