/**
 * Quay's copy policy on a real S3 server: a bucket in Quay's layout
 * (`<storage_path>/sha256/<2>/<hex>`, uploads under `<storage_path>/uploads/`)
 * is planned as blob shards over the fan-outs and objects shards around them,
 * every key in exactly one shard; a blob is named by the digest of its key,
 * an upload is left out, anything else is copied as it is.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { planShards } from '../../functions/commons/copy/plan.ts';
import { quayCopyPolicy, treatQuayKey } from '../../functions/commons/registry/quay-copy-policy.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { holders } from '../copy/coverage.ts';
import { clientFor, createBucket, putObjects } from '../support/s3.ts';

const ROOT = 'datastorage/registry/';
let s3: S3ServerHandle;
let keys: string[];
const hexOf = (i: number) => createHash('sha256').update(`blob-${i}`).digest('hex');

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-quay-policy' });
  const client = clientFor(s3);
  await createBucket(client, 'quay-plan');
  keys = [
    ...Array.from({ length: 300 }, (_, i) => `${ROOT}sha256/${hexOf(i).slice(0, 2)}/${hexOf(i)}`),
    `${ROOT}uploads/5e1c7a3e-0000-4000-8000-000000000001`,
    'aaa-before-the-storage-path.txt',
    `${ROOT}other/notes.txt`,
  ];
  await putObjects(
    client,
    'quay-plan',
    keys.map((key) => ({ key, body: key })),
  );
  client.destroy();
}, 60_000);

afterAll(async () => {
  await s3?.stop();
});

describe("Quay's copy policy", () => {
  it('plans blob shards over the fan-outs and objects shards around them, each key in one shard', async () => {
    // Act
    const client = clientFor(s3);
    const plan = await planShards(client, 'quay-plan', ROOT, quayCopyPolicy, {
      targetObjectsPerShard: 100,
    });
    client.destroy();

    // Assess
    expect(plan.linkShards).toEqual([]);
    const blobShards = plan.dataShards.filter((s) => s.kind === 'blobs');
    expect(blobShards.length).toBeGreaterThanOrEqual(3);
    for (const shard of blobShards) expect(shard.registryPrefix).toBe(ROOT);
    const shards = [...plan.linkShards, ...plan.dataShards];
    for (const key of keys) expect(holders(shards, key)).toHaveLength(1);
    const blob = keys[0] ?? '';
    expect(shards.find((s) => holders([s], blob).length === 1)?.kind).toBe('blobs');
    expect(
      shards.find(
        (s) => holders([s], `${ROOT}uploads/5e1c7a3e-0000-4000-8000-000000000001`).length === 1,
      )?.kind,
    ).toBe('objects');
  });

  it.each([
    [
      'a blob, named by its digest',
      `sha256/${hexOf(1).slice(0, 2)}/${hexOf(1)}`,
      { digest: `sha256:${hexOf(1)}` },
    ],
    ['an upload, left out with its id', 'uploads/abc-123', { leaveOut: true, uploadId: 'abc-123' }],
    ['a blob key in the wrong fan-out, copied as a plain object', `sha256/00/${hexOf(1)}`, {}],
    ['anything else, copied as it is', 'other/notes.txt', {}],
  ])('treats %s', (_what, key, treatment) => {
    // Act & Assess
    expect(treatQuayKey(key)).toEqual(treatment);
  });

  it('routes a shard in one pass, keys relative to the storage path', () => {
    // Act
    const route = quayCopyPolicy.route({
      id: 'blobs-0000',
      kind: 'blobs',
      prefix: `${ROOT}sha256/`,
      registryPrefix: ROOT,
    });

    // Assess
    expect(route.passes).toHaveLength(1);
    expect(route.treat(`${ROOT}sha256/${hexOf(2).slice(0, 2)}/${hexOf(2)}`, 0)).toEqual({
      digest: `sha256:${hexOf(2)}`,
    });
    expect(route.treat(`${ROOT}uploads/u1`, 0)).toEqual({ leaveOut: true, uploadId: 'u1' });
  });
});
