/**
 * A vault with S3 Object Lock default retention refuses uploads that carry
 * no Content-MD5. The sandbox server refuses them the same way for the
 * buckets it is told are locked, and reports their retention; it keeps no
 * versions, so that a locked version outlives a delete is S3's part, not
 * tested here.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createCopyContext, prefixMapper } from '../../functions/commons/copy/context.ts';
import type { Location } from '../../functions/commons/copy/model.ts';
import { genericCopyPolicy } from '../../functions/commons/copy/plan.ts';
import { runShard } from '../../functions/commons/copy/shard-runner.ts';
import { emptyTarget } from '../../functions/commons/copy/target-state.ts';
import { CopyMode } from '../../functions/commons/copy/transfer.ts';
import { prune } from '../../functions/commons/vault/prune.ts';
import { describeObjectLock } from '../../functions/commons/vault/prune-report.ts';
import { getBytes, putBytes, readObjectLock } from '../../functions/commons/vault/store.ts';
import { seededBytes } from '../../sandbox/dataset.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, listAll, locationOn, putObjects } from '../support/s3.ts';

const MiB = 1024 ** 2;
let s3: S3ServerHandle;
let client: S3Client;

beforeAll(async () => {
  s3 = await startS3Server({
    name: 's3-object-lock',
    objectLockBuckets: ['locked', 'locked-vault'],
    objectLockRetention: { mode: 'COMPLIANCE', days: 35 },
  });
  client = clientFor(s3, 1);
  await Promise.all(
    ['source', 'locked', 'locked-vault', 'plain-vault'].map((bucket) =>
      createBucket(client, bucket),
    ),
  );
  await putObjects(client, 'source', [
    { key: 'small/link', body: 'sha256:abc' },
    { key: 'big/layer', body: seededBytes('locked-layer', 11 * MiB) },
  ]);
});

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
});

function streamInto(target: Location) {
  const source = locationOn(s3, 'source');
  return createCopyContext({
    source: { location: source, client },
    target: { location: target, client },
    mapKey: prefixMapper(source, target),
    targetState: emptyTarget,
    policy: genericCopyPolicy,
    concurrency: 4,
    // Streamed, with small parts, so both PutObject and UploadPart are exercised.
    transfer: { mode: CopyMode.Stream, partSize: 5 * MiB },
  });
}

describe('uploading into a vault with Object Lock default retention', () => {
  it('is refused without Content-MD5, naming the reason for each object', async () => {
    // Act
    const result = await runShard(streamInto(locationOn(s3, 'locked', 'refused/')), {
      id: 'all',
      kind: 'objects',
      prefix: '',
    });
    // Assess
    expect(result.totals.failed).toBe(2);
    expect(result.failures.map((f) => [f.key, f.code]).sort()).toEqual([
      ['big/layer', 'InvalidRequest'],
      ['small/link', 'InvalidRequest'],
    ]);
  });

  it('succeeds for whole objects and parts when the location asks for Content-MD5', async () => {
    // Act
    const result = await runShard(
      streamInto({ ...locationOn(s3, 'locked', 'accepted/'), contentMd5: true }),
      { id: 'all', kind: 'objects', prefix: '' },
    );
    // Assess
    expect(result.failures).toEqual([]);
    expect(result.totals).toMatchObject({ copied: 2, failed: 0 });
    const stored = await listAll(client, 'locked');
    expect(stored.get('accepted/big/layer')?.size).toBe(11 * MiB);
    expect(stored.get('accepted/small/link')?.size).toBe(10);
  });

  it('stores vault files with Content-MD5 when the vault location asks for it', async () => {
    // Prepare
    const vault = (contentMd5: boolean) => ({
      location: { ...locationOn(s3, 'locked', 'vault/'), contentMd5 },
      client,
    });
    // Act
    const refused = putBytes(
      vault(false),
      'vault/refused.json',
      Buffer.from('{}'),
      'application/json',
    );
    await putBytes(
      vault(true),
      'vault/manifest.json',
      Buffer.from('{"ok":true}'),
      'application/json',
    );
    // Assess
    await expect(refused).rejects.toMatchObject({ name: 'InvalidRequest' });
    expect((await getBytes(vault(true), 'vault/manifest.json'))?.toString()).toBe('{"ok":true}');
  });
});

describe('pruning a vault with Object Lock', () => {
  /** A vault in `bucket` holding one pool blob no snapshot refers to, which prune sweeps. */
  async function vaultWithStrayBlob(bucket: string) {
    const vault = {
      location: { ...locationOn(s3, bucket, 'regvault/'), contentMd5: true },
      client,
    };
    await putBytes(
      vault,
      `regvault/blobs/sha256/ab/ab${'0'.repeat(62)}`,
      Buffer.from('stray'),
      'application/octet-stream',
    );
    return vault;
  }

  it('reads the default retention the bucket reports, and none where it has no lock', async () => {
    // Act
    const locked = await readObjectLock({ location: locationOn(s3, 'locked-vault'), client });
    const plain = await readObjectLock({ location: locationOn(s3, 'plain-vault'), client });

    // Assess
    expect(locked).toEqual({ state: 'locked', mode: 'COMPLIANCE', days: 35 });
    expect(plain).toEqual({ state: 'none' });
  });

  it.each([
    ['a locked vault', 'locked-vault', true],
    ['a vault without a lock', 'plain-vault', false],
  ])('says what its deletes leave behind on %s', async (_case, bucket, locked) => {
    // Prepare
    const vault = await vaultWithStrayBlob(bucket);
    const now = new Date(Date.now() + 60_000);

    // Act
    const report = await prune(vault, {}, { now, graceMs: 0 });
    const note = describeObjectLock(report);

    // Assess
    expect(report.deleted.keys).toBe(1);
    if (locked) {
      expect(note).toContain('Object Lock (COMPLIANCE, 35 days)');
      expect(note).toContain('left delete markers');
      expect(note).toContain(new Date(now.getTime() + 35 * 86_400_000).toISOString());
    } else {
      expect(note).toBeUndefined();
    }
  });
});
