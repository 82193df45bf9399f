/**
 * A backup through the workflow costs about one request per object: finalize
 * builds the catalog and the reference check from what the workers recorded,
 * reading a tag link only when its tag moved, and an unchanged re-run makes
 * no per-object request at all. Counted by the real S3 server.
 */
import { CreateBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { registryPrefix } from '../../functions/commons/registry/layout.ts';
import { catalogSchema, vaultKeys } from '../../functions/commons/vault/format.ts';
import { getJson } from '../../functions/commons/vault/store.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import { buildDataset, type Dataset, writeDataset } from '../../sandbox/dataset.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, vaultDeps } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let dataset: Dataset;
let buckets = 0;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-backup-requests' });
  client = clientFor(s3);
  dataset = buildDataset({ repositories: 30, tagsPerRepository: 3, layersPerImage: 3, seed: 7 });
}, 120_000);

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
});

/** A source bucket with the data set and an empty vault, both new; dependencies on them. */
async function freshPair(): Promise<{ source: string; deps: WorkflowDeps & { close(): void } }> {
  const n = ++buckets;
  const source = `source-${n}`;
  for (const bucket of [source, `vault-${n}`])
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  await writeDataset(client, source, dataset.objects);
  const deps = vaultDeps(s3, `vault-${n}`, '', {
    concurrency: 16,
  });
  return { source, deps };
}

async function backup(deps: WorkflowDeps, source: string) {
  await s3.resetCounters();
  const result = await runBackupLocally(
    { source: { bucket: source, region: s3.region, endpoint: s3.endpoint } },
    { deps },
  );
  const counters = await s3.counters();
  const s3Requests = Object.fromEntries(
    Object.entries(counters).filter(([operation]) => !operation.startsWith('sqs:')),
  );
  const output = result.output as { snapshotId: string; status: string; objects: number };
  return { result, output, requests: s3Requests };
}

const expectedCatalog = (images: Dataset['images']) => {
  const tags = new Map<string, Record<string, string>>();
  for (const image of images)
    tags.set(image.repository, { ...tags.get(image.repository), [image.tag]: image.digest });
  return tags;
};

describe('the requests of a backup through the workflow', () => {
  it('copies each object with one request and reads no tag link or manifest it copied', async () => {
    // Prepare
    const { source, deps } = await freshPair();
    try {
      // Act
      const { result, output, requests } = await backup(deps, source);
      // Assess
      expect(result.cause).toBeUndefined();
      expect(output.status).toBe('complete');
      expect(requests['CopyObject']).toBe(dataset.objects.length);
      // The run's own files (job, plan, records, shard results) only: far fewer than the 90 tags.
      expect(requests['GetObject'] ?? 0).toBeLessThan(30);
      const total = Object.values(requests).reduce((sum, n) => sum + n, 0);
      expect(total / dataset.objects.length).toBeLessThan(1.1);
      const catalog = await getJson(
        deps.vault,
        vaultKeys.catalog('', output.snapshotId),
        catalogSchema,
      );
      const expected = expectedCatalog(dataset.images);
      expect(catalog?.repositories.length).toBe(expected.size);
      for (const repository of catalog?.repositories ?? [])
        expect(repository.tags).toEqual(expected.get(repository.name));
    } finally {
      deps.close();
    }
  });

  it('makes no per-object request on an unchanged re-run, and reads only a moved tag', async () => {
    // Prepare: a first backup
    const { source, deps } = await freshPair();
    try {
      await backup(deps, source);
      // Act: nothing changed
      const unchanged = await backup(deps, source);
      // Assess: listings and the run's own files, nothing per object
      expect(unchanged.output.status).toBe('complete');
      expect(unchanged.requests['CopyObject'] ?? 0).toBe(0);
      const total = Object.values(unchanged.requests).reduce((sum, n) => sum + n, 0);
      // Listings, the run's own files and the link shards' listed markers: a few dozen for about 1,000 objects.
      expect(total).toBeLessThan(80);
      expect(unchanged.requests['GetObject'] ?? 0).toBeLessThan(30);
      // A third run costs the same: the snapshots kept do not add manifest reads.
      const again = await backup(deps, source);
      expect(again.output.status).toBe('complete');
      expect(again.requests).toEqual(unchanged.requests);

      // Prepare: one tag moved to another image's manifest, as a registry writes it
      const moved = dataset.images[0];
      const other = dataset.images.find((image) => image.repository !== moved?.repository);
      if (moved === undefined || other === undefined) throw new Error('the data set is empty');
      const repo = `${registryPrefix('')}repositories/${moved.repository}/_manifests`;
      const hex = other.digest.slice('sha256:'.length);
      for (const key of [
        `${repo}/revisions/sha256/${hex}/link`,
        `${repo}/tags/${moved.tag}/index/sha256/${hex}/link`,
        `${repo}/tags/${moved.tag}/current/link`,
      ])
        await client.send(
          new PutObjectCommand({ Bucket: source, Key: key, Body: Buffer.from(other.digest) }),
        );
      // Act
      const retagged = await backup(deps, source);
      // Assess: the three new or changed links copied, the moved tag read from its current link
      expect(retagged.output.status).toBe('complete');
      expect(retagged.requests['CopyObject']).toBe(3);
      const catalog = await getJson(
        deps.vault,
        vaultKeys.catalog('', retagged.output.snapshotId),
        catalogSchema,
      );
      const tags = catalog?.repositories.find((r) => r.name === moved.repository)?.tags;
      expect(tags?.[moved.tag]).toBe(other.digest);
      expect(Object.keys(tags ?? {}).length).toBe(3);
    } finally {
      deps.close();
    }
  });
});
