import { randomUUID } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { fsckRegistry } from '../../functions/commons/registry/fsck.ts';
import { bucketSource } from '../../functions/commons/registry/fsck-sources.ts';
import { blobDigestOf, blobKeyOf } from '../../functions/commons/registry/layout.ts';
import { vaultKeys } from '../../functions/commons/vault/format.ts';
import { snapshotSource } from '../../functions/commons/vault/snapshot-source.ts';
import { resolveSnapshot } from '../../functions/commons/vault/store.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import type { PopulatedRegistry } from '../../sandbox/images/index.ts';
import type { RegistryHandle } from '../../sandbox/registry/index.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, listAll, readObject, vaultDeps } from '../support/s3.ts';
import {
  copyBucket,
  put,
  putOrphanBlob,
  randomBlob,
  recording,
  registryKey,
  registryOnS3,
  remove,
} from './support.ts';

let s3: S3ServerHandle;
let client: S3Client;
let registry: RegistryHandle;
let images: PopulatedRegistry;
/** Digests with a revision link: every manifest and index the registry holds. */
let manifestDigests: Set<string>;
/** Blob digests that are not manifests: configs and layers. */
let layerDigests: string[];
let copies = 0;

/** A fresh copy of the pushed registry bucket, for a test to damage. */
async function scratchCopy(): Promise<string> {
  const bucket = `scratch-${++copies}`;
  await copyBucket(client, 'registry', bucket);
  return bucket;
}

const fsckBucket = (bucket: string, options: { deep?: boolean; sample?: number } = {}) =>
  fsckRegistry(bucketSource(client, bucket, ''), options);

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-fsck' });
  client = clientFor(s3);
  ({ registry, images } = await registryOnS3(s3, client, 'registry', 3));
  const keys = [...(await listAll(client, 'registry')).keys()];
  manifestDigests = new Set(
    keys.flatMap((key) => {
      const hex = /\/_manifests\/revisions\/sha256\/([0-9a-f]{64})\/link$/.exec(key)?.[1];
      return hex === undefined ? [] : [`sha256:${hex}`];
    }),
  );
  layerDigests = keys
    .map((key) => blobDigestOf(key.slice('docker/registry/v2/'.length)))
    .filter((digest): digest is string => digest !== undefined && !manifestDigests.has(digest));
}, 240_000);

afterAll(async () => {
  await registry?.stop();
  client?.destroy();
  await s3?.stop();
});

describe('fsck of a registry bucket', () => {
  it('passes a registry pushed with skopeo, in fast and in deep mode', async () => {
    // Act
    const fast = await fsckBucket('registry');
    const deep = await fsckBucket('registry', { deep: true });
    // Assess
    expect(fast.problems).toEqual([]);
    expect(fast.ok).toBe(true);
    expect(fast.mode).toBe('fast');
    expect(fast.counts).toMatchObject({
      repositories: 3,
      tags: 6,
      manifests: manifestDigests.size,
      blobsVerified: 0,
    });
    expect(fast.orphanBlobs).toEqual([]);
    expect(fast.uploads).toEqual([]);
    expect(deep.problems).toEqual([]);
    expect(deep.ok).toBe(true);
    expect(deep.counts.blobsVerified).toBe(deep.counts.blobs);
    expect(fast.problems).toEqual([]);
  });

  it('reads only tag links and manifests in fast mode, never a layer', async () => {
    // Prepare
    const { source, reads } = recording(bucketSource(client, 'registry', ''));
    // Act
    const report = await fsckRegistry(source);
    // Assess
    expect(report.ok).toBe(true);
    const blobReads = reads
      .map((key) => blobDigestOf(key))
      .filter((d): d is string => d !== undefined);
    const otherReads = reads.filter((key) => blobDigestOf(key) === undefined);
    expect(new Set(blobReads)).toEqual(manifestDigests);
    expect(blobReads).toHaveLength(manifestDigests.size);
    expect(otherReads.every((key) => /\/_manifests\/tags\/[^/]+\/current\/link$/.test(key))).toBe(
      true,
    );
    expect(otherReads).toHaveLength(6);
    expect(blobReads.filter((digest) => layerDigests.includes(digest))).toEqual([]);
  });

  it('reports a blob whose bytes do not hash to its digest in deep mode, and only there', async () => {
    // Prepare
    const bucket = await scratchCopy();
    const victim = layerDigests[0] ?? '';
    const original = await readObject(client, bucket, registryKey(blobKeyOf(victim)));
    await put(client, bucket, registryKey(blobKeyOf(victim)), randomBlob(original.length).bytes);
    // Act
    const fast = await fsckBucket(bucket);
    const deep = await fsckBucket(bucket, { deep: true });
    const sampled = await fsckRegistry(bucketSource(client, bucket, ''), {
      deep: true,
      sample: 1,
      pick: () => [victim],
    });
    // Assess
    expect(fast.ok).toBe(true);
    expect(deep.ok).toBe(false);
    expect(deep.corruptBlobs).toEqual([
      expect.objectContaining({
        digest: victim,
        actual: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
        size: original.length,
      }),
    ]);
    expect(deep.problems).toEqual([
      expect.stringContaining(`corrupt in the bucket: blob ${victim}`),
    ]);
    expect(sampled.counts.blobsVerified).toBe(1);
    expect(sampled.corruptBlobs.map((c) => c.digest)).toEqual([victim]);
  });

  it('proves every link in deep mode by the ETag its listing gives, reading none', async () => {
    // Prepare
    const { source, reads } = recording(bucketSource(client, 'registry', ''));
    // Act
    const report = await fsckRegistry(source, { deep: true });
    // Assess: links hold exactly their digest, so each one's ETag is the MD5 of it.
    expect(report.ok).toBe(true);
    expect(report.counts.linksProvenByEtag).toBe(
      report.counts.revisions + report.counts.layerLinks,
    );
    const linkReads = reads.filter((key) =>
      /\/(_layers|revisions)\/sha256\/[0-9a-f]{64}\/link$/.test(key),
    );
    expect(linkReads).toEqual([]);
  });

  it('reads a link whose ETag is not the MD5 of its digest, and names what it holds', async () => {
    // Prepare: a layer link rewritten to name another digest (its ETag changes with it).
    const bucket = await scratchCopy();
    const full = [...(await listAll(client, bucket)).keys()].find((candidate) =>
      /\/_layers\/sha256\/[0-9a-f]{64}\/link$/.test(candidate),
    );
    const key = full?.slice(registryKey('').length) ?? '';
    const other = `sha256:${'0'.repeat(64)}`;
    await put(client, bucket, registryKey(key), Buffer.from(other));
    const { source, reads } = recording(bucketSource(client, bucket, ''));
    // Act
    const report = await fsckRegistry(source, { deep: true });
    // Assess
    expect(report.ok).toBe(false);
    expect(report.badLinks).toEqual([{ key: expect.stringContaining(key), found: other }]);
    expect(reads.filter((read) => read.endsWith('/link') && !read.includes('/tags/'))).toEqual([
      key,
    ]);
    expect(report.counts.linksProvenByEtag).toBe(
      report.counts.revisions + report.counts.layerLinks - 1,
    );
  });

  it('hashes only the sample it is given in deep mode', async () => {
    // Act
    const report = await fsckBucket('registry', { deep: true, sample: 3 });
    // Assess
    expect(report.ok).toBe(true);
    expect(report.counts.blobsVerified).toBe(3);
  });

  const firstTag = () => {
    const repository = images.repositories[1];
    const [tag, digest] = Object.entries(repository?.tags ?? {})[0] ?? ['', ''];
    return { repository: repository?.name ?? '', tag, digest };
  };
  const multiArch = () => {
    const repository = images.repositories[0];
    const [tag, digest] = Object.entries(repository?.tags ?? {})[0] ?? ['', ''];
    return { repository: repository?.name ?? '', tag, digest };
  };

  it.each([
    {
      what: 'layer link',
      damage: async (bucket: string) => {
        const { repository } = firstTag();
        const key =
          [
            ...(
              await listAll(client, bucket, registryKey(`repositories/${repository}/_layers/`))
            ).keys(),
          ][0] ?? '';
        await remove(client, bucket, key);
        return {
          to: key.slice('docker/registry/v2/'.length),
          reason: 'layer link missing in the bucket',
        };
      },
    },
    {
      what: 'tagged revision link',
      damage: async (bucket: string) => {
        const { repository, tag, digest } = firstTag();
        const key = `repositories/${repository}/_manifests/revisions/sha256/${digest.slice(7)}/link`;
        await remove(client, bucket, registryKey(key));
        return { from: `${repository}:${tag}`, to: key, reason: 'tag without its revision link' };
      },
    },
    {
      what: 'manifest blob',
      damage: async (bucket: string) => {
        const { digest } = firstTag();
        await remove(client, bucket, registryKey(blobKeyOf(digest)));
        return { to: blobKeyOf(digest), reason: 'manifest blob missing in the bucket' };
      },
    },
    {
      what: 'child revision link of an index',
      damage: async (bucket: string) => {
        const { repository, digest } = multiArch();
        const index = JSON.parse(
          (await readObject(client, bucket, registryKey(blobKeyOf(digest)))).toString('utf8'),
        ) as {
          manifests: Array<{ digest: string }>;
        };
        const child = index.manifests[0]?.digest ?? '';
        const key = `repositories/${repository}/_manifests/revisions/sha256/${child.slice(7)}/link`;
        await remove(client, bucket, registryKey(key));
        return {
          from: `${repository}@${digest}`,
          to: key,
          reason: "child manifest's revision link missing in the bucket",
        };
      },
    },
  ])('reports a deleted $what as a dangling reference', async ({ damage }) => {
    // Prepare
    const bucket = await scratchCopy();
    const expected = await damage(bucket);
    // Act
    const report = await fsckBucket(bucket);
    // Assess
    expect(report.ok).toBe(false);
    expect(report.dangling).toContainEqual(expect.objectContaining(expected));
    expect(report.problems.length).toBeGreaterThan(0);
    // A missing blob is named by what it is and who needs it; any other broken reference as from -> to (why).
    expect(report.problems[0]).toMatch(
      /^(dangling: .+ -> .+ \(.+\)|[a-z ]+ missing in the bucket: sha256:[0-9a-f]{64} \(s3:\/\/.+\), needed by .+)$/,
    );
  });

  it('reports a manifest blob that is not JSON', async () => {
    // Prepare
    const bucket = await scratchCopy();
    const { digest } = firstTag();
    await put(client, bucket, registryKey(blobKeyOf(digest)), 'this is not a manifest');
    // Act
    const report = await fsckBucket(bucket);
    // Assess
    expect(report.ok).toBe(false);
    expect(report.invalidManifests).toEqual([
      { digest, reason: expect.stringContaining('not JSON') },
    ]);
  });

  it('reports a leftover upload by repository and id without failing', async () => {
    // Prepare
    const bucket = await scratchCopy();
    const { repository } = firstTag();
    const id = randomUUID();
    await put(
      client,
      bucket,
      registryKey(`repositories/${repository}/_uploads/${id}/data`),
      randomBlob(700).bytes,
    );
    await put(
      client,
      bucket,
      registryKey(`repositories/${repository}/_uploads/${id}/startedat`),
      new Date().toISOString(),
    );
    // Act
    const report = await fsckBucket(bucket);
    // Assess
    expect(report.ok).toBe(true);
    expect(report.uploads).toEqual([
      { repository, id, objects: 2, bytes: 700 + new Date().toISOString().length },
    ]);
    expect(report.notices).toEqual([
      expect.stringContaining(`leftover upload ${repository}/_uploads/${id}`),
    ]);
  });

  it('reports a blob no manifest refers to as an orphan without failing', async () => {
    // Prepare
    const bucket = await scratchCopy();
    const orphan = await putOrphanBlob(client, bucket);
    // Act
    const report = await fsckBucket(bucket, { deep: true });
    // Assess
    expect(report.ok).toBe(true);
    expect(report.orphanBlobs).toEqual([orphan]);
    expect(report.notices).toEqual([expect.stringContaining('1 orphan blobs')]);
  });
});

describe('fsck of a snapshot in the vault', () => {
  let deps: WorkflowDeps & { close(): void };
  let snapshotId = '';

  beforeAll(async () => {
    await createBucket(client, 'vault');
    deps = vaultDeps(s3, 'vault', 'regvault/', {});
    const result = await runBackupLocally(
      { source: { endpoint: s3.endpoint, region: s3.region, bucket: 'registry' } },
      { deps },
    );
    expect(result.cause).toBeUndefined();
    snapshotId = (result.output as { snapshotId: string }).snapshotId;
  }, 120_000);

  afterAll(() => deps?.close());

  it('passes a complete snapshot through its inventory, counting what the bucket holds', async () => {
    // Prepare
    const manifest = await resolveSnapshot(deps.vault, snapshotId);
    // Act
    const report = await fsckRegistry(snapshotSource(deps.vault, manifest), { deep: true });
    const bucket = await fsckBucket('registry');
    // Assess
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.counts).toMatchObject({
      ...bucket.counts,
      blobsVerified: bucket.counts.blobs,
      reads: expect.any(Number),
    });
  });

  it('passes the snapshot the same when its links are looked up a part at a time', async () => {
    // Prepare
    const manifest = await resolveSnapshot(deps.vault, snapshotId);
    // Act
    const whole = await fsckRegistry(snapshotSource(deps.vault, manifest), { deep: true });
    const parted = await fsckRegistry(
      snapshotSource(deps.vault, manifest, { lookup: { wholeBytes: 0, partsKept: 1 } }),
      { deep: true },
    );
    // Assess
    expect(parted.problems).toEqual([]);
    expect(parted.counts).toEqual(whole.counts);
  });

  it('finds a pool blob corrupted in the vault', async () => {
    // Prepare
    const manifest = await resolveSnapshot(deps.vault, snapshotId);
    const victim = layerDigests[1] ?? '';
    const poolKey = vaultKeys.blob('regvault/', victim);
    const original = await readObject(client, 'vault', poolKey);
    await put(client, 'vault', poolKey, randomBlob(original.length).bytes);
    try {
      // Act
      const report = await fsckRegistry(snapshotSource(deps.vault, manifest), { deep: true });
      // Assess
      expect(report.ok).toBe(false);
      expect(report.corruptBlobs.map((c) => c.digest)).toEqual([victim]);
    } finally {
      await put(client, 'vault', poolKey, original);
    }
  });
});
