/**
 * A registry backup plans with the last backup's shards when they still fit
 * the source (registry/plan-reuse.ts): an unchanged re-run lists only the
 * three ranges around the registry's trees to plan, what was written since
 * is still captured whatever shard it falls in, and a source that grew far,
 * or a new shard size, is split afresh. Run against the real S3 server.
 */
import { CreateBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { eachInventoryRecord, readManifest } from '../../functions/commons/vault/store.ts';
import { buildDataset, type Dataset, writeDataset } from '../../sandbox/dataset.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, vaultDeps } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let first: Dataset;
let buckets = 0;

/** Two hundred objects a shard: the data set plans into several link and blob shards. */
const SHARD = 200;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-plan-reuse' });
  client = clientFor(s3);
  first = buildDataset({ repositories: 60, tagsPerRepository: 2, layersPerImage: 3, seed: 11 });
}, 120_000);

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
});

interface Planned {
  readonly shards: number;
  readonly reused: boolean;
  readonly listRequests: number;
}

/** A source holding `first` and an empty vault, both new, with dependencies that keep the plan's log line. */
async function freshPair() {
  const n = ++buckets;
  const source = `source-${n}`;
  for (const bucket of [source, `vault-${n}`])
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  await writeDataset(client, source, first.objects);
  const plans: Planned[] = [];
  const deps = vaultDeps(s3, `vault-${n}`, '', {
    concurrency: 16,
    logger: {
      info: (message, fields) => {
        if (message === 'backup planned') plans.push(fields as unknown as Planned);
      },
      warn: () => {},
    },
  });
  return { source, deps, plans };
}

async function backup(pair: Awaited<ReturnType<typeof freshPair>>, targetObjectsPerShard = SHARD) {
  const result = await runBackupLocally(
    {
      source: { bucket: pair.source, region: s3.region, endpoint: s3.endpoint },
      targetObjectsPerShard,
    },
    { deps: pair.deps },
  );
  expect(result.cause).toBeUndefined();
  const output = result.output as { snapshotId: string; status: string; objects: number };
  expect(output.status).toBe('complete');
  return { output, plan: pair.plans.at(-1) };
}

/** Every key of the snapshot's inventory. */
async function inventoryKeys(pair: Awaited<ReturnType<typeof freshPair>>, snapshotId: string) {
  const manifest = await readManifest(pair.deps.vault, snapshotId);
  if (manifest === undefined) throw new Error(`snapshot ${snapshotId} has no manifest`);
  const keys = new Set<string>();
  for await (const record of eachInventoryRecord(pair.deps.vault, manifest)) keys.add(record.key);
  return keys;
}

describe('a backup planning with the last backup of its source', () => {
  it('takes the last shards again on an unchanged re-run, listing only the ranges around the trees', async () => {
    // Prepare
    const pair = await freshPair();
    try {
      const fresh = await backup(pair);
      // Act
      const again = await backup(pair);
      // Assess
      expect(fresh.plan?.reused).toBe(false);
      expect(fresh.plan?.shards).toBeGreaterThan(3);
      expect(again.plan).toEqual({
        runId: expect.any(String),
        shards: fresh.plan?.shards,
        reused: true,
        listRequests: 3,
      });
      expect(again.output.objects).toBe(first.objects.length);
    } finally {
      pair.deps.close();
    }
  });

  it('captures repositories, blobs and stray keys written since, in whichever shard they fall', async () => {
    // Prepare: a first backup, then a few new repositories and a key outside the registry's trees
    const pair = await freshPair();
    try {
      await backup(pair);
      const more = buildDataset({
        repositories: 4,
        tagsPerRepository: 2,
        layersPerImage: 3,
        seed: 12,
        namespace: 'later',
      });
      await writeDataset(client, pair.source, more.objects);
      const stray = 'docker/registry/v2/zz-notes.txt';
      await client.send(
        new PutObjectCommand({ Bucket: pair.source, Key: stray, Body: Buffer.from('kept') }),
      );
      // Act
      const grown = await backup(pair);
      // Assess: planned with the last shards, and every source key is in the snapshot
      expect(grown.plan?.reused).toBe(true);
      const keys = await inventoryKeys(pair, grown.output.snapshotId);
      const missing = [...first.objects, ...more.objects]
        .map((object) => object.key)
        .filter((key) => !keys.has(key));
      expect(missing).toEqual([]);
      expect(keys.has(stray)).toBe(true);
    } finally {
      pair.deps.close();
    }
  });

  it('splits afresh when the shard size changed', async () => {
    // Prepare
    const pair = await freshPair();
    try {
      await backup(pair);
      // Act
      const resized = await backup(pair, SHARD * 5);
      // Assess
      expect(resized.plan?.reused).toBe(false);
      expect(resized.output.objects).toBe(first.objects.length);
    } finally {
      pair.deps.close();
    }
  });

  it('splits afresh, one backup later, when the source grew past the drift a plan allows', async () => {
    // Prepare: a first backup, then the source more than triples
    const pair = await freshPair();
    try {
      const fresh = await backup(pair);
      const more = buildDataset({
        repositories: 150,
        tagsPerRepository: 2,
        layersPerImage: 3,
        seed: 13,
        namespace: 'burst',
      });
      await writeDataset(client, pair.source, more.objects);
      // Act
      const grown = await backup(pair);
      const after = await backup(pair);
      // Assess: the backup that copied the growth still planned with the old
      // shards (it cannot see it without listing), and copied all of it; the
      // next one sees its counts far past the estimates and splits afresh
      expect(grown.plan?.reused).toBe(true);
      expect(grown.output.objects).toBe(first.objects.length + more.objects.length);
      expect(after.plan?.reused).toBe(false);
      expect(after.plan?.shards).toBeGreaterThan((fresh.plan?.shards ?? 0) * 2);
      expect(after.output.objects).toBe(first.objects.length + more.objects.length);
    } finally {
      pair.deps.close();
    }
  });
});
