/**
 * Finalize reads the workers' records shard by shard: the inventory is
 * written part by part (a multipart upload once it outgrows one part), and
 * the reference check matches the links' references against the blobs as
 * they come, naming what dangles. Real S3 server, real backups.
 */
import { randomBytes } from 'node:crypto';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  HeadObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { InventoryRecord } from '../../functions/commons/copy/model.ts';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { type SnapshotManifest, vaultKeys } from '../../functions/commons/vault/format.ts';
import { InventoryWriter } from '../../functions/commons/vault/inventory.ts';
import { InventoryLookup } from '../../functions/commons/vault/inventory-lookup.ts';
import {
  listSnapshots,
  readInventory,
  readManifest,
  type Vault,
} from '../../functions/commons/vault/store.ts';
import { buildDataset, type Dataset, writeDataset } from '../../sandbox/dataset.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, locationOn, vaultDeps } from '../support/s3.ts';

const MiB = 1024 ** 2;

let s3: S3ServerHandle;
let client: S3Client;
let dataset: Dataset;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-finalize', objectLockBuckets: ['locked'] });
  client = clientFor(s3);
  for (const bucket of ['source', 'vault', 'locked'])
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  dataset = buildDataset({ repositories: 12, tagsPerRepository: 2, layersPerImage: 3, seed: 11 });
  await writeDataset(client, 'source', dataset.objects);
}, 120_000);

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
});

/** Records whose ETags are random hex, so the gzip'd inventory is about 100 bytes a record. */
function bulkyRecords(count: number): InventoryRecord[] {
  const hex = randomBytes(32 * count).toString('hex');
  return Array.from({ length: count }, (_, i) => {
    const digest = hex.slice(i * 64, i * 64 + 64);
    return {
      key: `docker/registry/v2/blobs/sha256/${digest.slice(0, 2)}/${digest}/data`,
      size: i,
      etag: digest.slice(0, 32),
      targetKey: `blobs/sha256/${digest}`,
      copied: true,
    };
  });
}

describe("finalize's inventory, written as the records come", () => {
  it('writes an inventory larger than an upload part as a multipart upload with Content-MD5, read back whole and part by part', async () => {
    // Prepare: an Object Lock vault refuses any upload without Content-MD5.
    const vault: Vault = {
      location: { ...locationOn(s3, 'locked', ''), contentMd5: true },
      client,
    };
    const records = bulkyRecords(240_000).sort((a, b) => (a.key < b.key ? -1 : 1));
    const id = '20261203T000000.000Z-multi1';
    const writer = new InventoryWriter(vault, id, 'docker/registry/v2/', {
      uploadPartBytes: 5 * MiB,
    });
    // Act: in three runs in key order, as finalize adds shards.
    await s3.resetCounters();
    await writer.add(records.slice(0, 70_000));
    await writer.add(records.slice(70_000, 150_000));
    await writer.add(records.slice(150_000));
    const inventory = await writer.finish();
    const counters = await s3.counters();
    // Assess
    expect(counters['CreateMultipartUpload']).toBe(1);
    expect(counters['UploadPart']).toBeGreaterThanOrEqual(2);
    expect(counters['CompleteMultipartUpload']).toBe(1);
    expect(counters['PutObject'] ?? 0).toBe(0);
    expect(inventory.records).toBe(records.length);
    expect(inventory.parts).toHaveLength(24);
    const head = await client.send(
      new HeadObjectCommand({ Bucket: 'locked', Key: vaultKeys.inventory('', id) }),
    );
    expect(head.ContentLength).toBe(inventory.parts.reduce((sum, p) => sum + p.length, 0));
    expect(head.ContentLength ?? 0).toBeGreaterThan(10 * MiB);
    const manifest = { id, inventory } as Pick<SnapshotManifest, 'id' | 'inventory'>;
    const read = await readInventory(vault, manifest as SnapshotManifest);
    expect(read.map((r) => r.key)).toEqual(records.map((r) => r.key));
    const lookup = new InventoryLookup(vault, manifest as SnapshotManifest, { wholeBytes: 0 });
    const probe = records[177_777] as InventoryRecord;
    const found = await lookup.lookup([
      { object: { key: probe.key, size: probe.size, etag: 'x' }, targetKey: probe.targetKey },
    ]);
    expect(found.get(probe.key)).toMatchObject({ size: probe.size, sourceEtag: probe.etag });
    expect(lookup.requests).toBe(1);
  }, 60_000);

  it('fails with the refusal of an upload part while later parts compress, and aborts the upload', async () => {
    // Prepare: parts are compressed while the next records come; the vault
    // refuses the first upload part, which goes out during the adds.
    const vault: Vault = { location: locationOn(s3, 'vault', ''), client };
    const records = bulkyRecords(130_000);
    const writer = new InventoryWriter(vault, '20261204T000000.000Z-refused', undefined, {
      uploadPartBytes: 5 * MiB,
    });
    await s3.resetCounters();
    await s3.injectFaults({
      operation: 'UploadPart',
      status: 403,
      code: 'AccessDenied',
      count: 10,
      bucket: 'vault',
    });
    let failure: unknown;
    try {
      // Act
      for (let at = 0; at < records.length; at += 20_000)
        await writer.add(records.slice(at, at + 20_000));
      await writer.finish();
    } catch (err) {
      failure = err;
      await writer.abort();
    } finally {
      await s3.clearFaults();
    }
    // Assess
    const counters = await s3.counters();
    expect(String(failure)).toContain('AccessDenied');
    expect(counters['UploadPart']).toBeGreaterThanOrEqual(1);
    expect(counters['CompleteMultipartUpload'] ?? 0).toBe(0);
    expect(counters['AbortMultipartUpload']).toBe(1);
  }, 60_000);

  it('writes a small inventory with one PUT', async () => {
    // Prepare
    const vault: Vault = { location: locationOn(s3, 'vault', ''), client };
    const writer = new InventoryWriter(vault, '20261203T000000.000Z-small1', undefined);
    // Act
    await s3.resetCounters();
    await writer.add(bulkyRecords(500));
    const inventory = await writer.finish();
    const counters = await s3.counters();
    // Assess
    expect(counters['PutObject']).toBe(1);
    expect(counters['CreateMultipartUpload'] ?? 0).toBe(0);
    expect(inventory.parts.map((p) => [p.kind, p.records])).toEqual([['objects', 500]]);
  });
});

describe("a backup's reference check, from the records shard by shard", () => {
  it('names the repository and digest of a layer whose blob the source lost, and fails the snapshot', async () => {
    // Prepare: one layer only one image uses goes missing from a copy of the source.
    const counts = new Map<string, number>();
    for (const image of dataset.images)
      for (const blob of image.blobs) counts.set(blob, (counts.get(blob) ?? 0) + 1);
    const image = dataset.images.find((candidate) =>
      candidate.blobs.some((blob) => counts.get(blob) === 1),
    );
    const lost = image?.blobs.find((blob) => counts.get(blob) === 1) ?? '';
    const hex = lost.replace('sha256:', '');
    await client.send(new CreateBucketCommand({ Bucket: 'source-lost' }));
    await writeDataset(client, 'source-lost', dataset.objects);
    await client.send(
      new DeleteObjectCommand({
        Bucket: 'source-lost',
        Key: `docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`,
      }),
    );
    await client.send(new CreateBucketCommand({ Bucket: 'vault-lost' }));
    const deps = vaultDeps(s3, 'vault-lost', '');
    try {
      // Act: small shards, so the links and blobs come in several shards each.
      const result = await runBackupLocally(
        {
          source: { bucket: 'source-lost', region: s3.region, endpoint: s3.endpoint },
          targetObjectsPerShard: 100,
        },
        { deps },
      );
      // Assess
      expect(result.status).toBe('FAILED');
      expect(result.cause).toContain(`layer sha256:${hex} (blob)`);
      const [manifest] = await listSnapshots(deps.vault);
      expect(manifest?.checks['references']?.ok).toBe(false);
      expect(manifest?.checks['references']?.detail).toContain(
        `${image?.repository} layer sha256:${hex} (blob)`,
      );
      expect(manifest?.checks['references']?.detail).toMatch(/^1 dangling references/);
    } finally {
      deps.close();
    }
  }, 120_000);

  it('passes a whole registry backed up in many shards, every reference matched', async () => {
    // Prepare
    const deps = vaultDeps(s3, 'vault', 'many/');
    try {
      // Act
      const result = await runBackupLocally(
        {
          source: { bucket: 'source', region: s3.region, endpoint: s3.endpoint },
          targetObjectsPerShard: 100,
        },
        { deps },
      );
      // Assess
      const output = result.output as { snapshotId: string; status: string; objects: number };
      expect(output.status).toBe('complete');
      expect(output.objects).toBe(dataset.objects.length);
      const manifest = await readManifest(deps.vault, output.snapshotId);
      expect(manifest?.checks['references']).toMatchObject({ ok: true });
      expect(manifest?.inventory.records).toBe(dataset.objects.length);
      const inventory = await readInventory(deps.vault, manifest as SnapshotManifest);
      expect(inventory.map((r) => r.key).sort()).toEqual(dataset.objects.map((o) => o.key).sort());
    } finally {
      deps.close();
    }
  }, 120_000);
});
