/**
 * A link shard whose listing keeps failing aborts with a cursor, so a retry
 * can list on from where it stopped. The blob shards wait for every link
 * shard to list (docs/consistency.md); an aborted one must free them too, or
 * the backup waits until the copy deadline (a day, locally) instead of
 * failing at once and naming the shard. Real S3 server, real workflow.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { loadJob } from '../../functions/commons/vault/runs.ts';
import { listSnapshots } from '../../functions/commons/vault/store.ts';
import { retryFailedObjects } from '../../functions/commons/workflows/retry.ts';
import { buildDataset, type Dataset, writeDataset } from '../../sandbox/dataset.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, vaultDeps } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let dataset: Dataset;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-link-listing' });
  client = clientFor(s3);
  for (const bucket of ['source', 'vault']) await createBucket(client, bucket);
  dataset = buildDataset({
    repositories: 12,
    tagsPerRepository: 2,
    layersPerImage: 2,
    seed: 7,
  });
  await writeDataset(client, 'source', dataset.objects);
}, 120_000);

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
});

describe('a backup whose link listing keeps failing', () => {
  it('fails promptly, naming the link shards that could not list, and a retry completes the snapshot', async () => {
    // Prepare: every listing that rolls up `/_layers/` fails: a link shard's
    // tag and revision passes (the planner rolls up `/_` or nothing), so each
    // link shard aborts on its first page with a cursor to list on from.
    await s3.injectFaults({
      operation: 'ListObjectsV2',
      status: 503,
      code: 'SlowDown',
      count: 100_000,
      listingDelimiter: '/_layers/',
    });
    const deps = vaultDeps(s3, 'vault', '');
    try {
      // Act
      const started = Date.now();
      const result = await runBackupLocally(
        {
          source: { bucket: 'source', region: s3.region, endpoint: s3.endpoint },
          targetObjectsPerShard: 100,
        },
        { deps },
      );
      const seconds = (Date.now() - started) / 1_000;
      // Assess
      expect(result.status).toBe('FAILED');
      expect(result.cause).toContain('listing failed');
      expect(seconds).toBeLessThan(60);
      const [manifest] = await listSnapshots(deps.vault);
      expect(manifest?.status).toBe('failed');
      const job = await loadJob(deps.vault, manifest?.runId ?? '');
      const links = job.purpose === 'backup' ? job.shards.filter((s) => s.kind === 'links') : [];
      expect(links.length).toBeGreaterThan(1);
      for (const link of links) expect(result.cause).toContain(`${link.id} (listing failed`);

      // Act: the listings work again; the retry lists the link shards from their cursors.
      await s3.clearFaults();
      const retry = await retryFailedObjects(manifest?.runId ?? '', deps);
      // Assess
      expect(retry.shardsCopiedAgain).toEqual(expect.arrayContaining(links.map((s) => s.id)));
      expect(retry.status).toBe('complete');
      expect(retry.objects).toBe(dataset.objects.length);
    } finally {
      await s3.clearFaults();
      deps.close();
    }
  }, 120_000);
});
