/**
 * A vault with S3 Object Lock default retention refuses uploads that carry
 * no Content-MD5. The sandbox server refuses them the same way for the
 * buckets it is told are locked.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createCopyContext, prefixMapper } from '../../functions/commons/copy/context.ts';
import type { Location } from '../../functions/commons/copy/model.ts';
import { genericCopyPolicy } from '../../functions/commons/copy/plan.ts';
import { runShard } from '../../functions/commons/copy/shard-runner.ts';
import { emptyTarget } from '../../functions/commons/copy/target-state.ts';
import { CopyMode } from '../../functions/commons/copy/transfer.ts';
import { getBytes, putBytes } from '../../functions/commons/vault/store.ts';
import { seededBytes } from '../../sandbox/dataset.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, listAll, locationOn, putObjects } from '../support/s3.ts';

const MiB = 1024 ** 2;
let s3: S3ServerHandle;
let client: S3Client;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-object-lock', objectLockBuckets: ['locked'] });
  client = clientFor(s3, 1);
  await Promise.all(['source', 'locked'].map((bucket) => createBucket(client, bucket)));
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
