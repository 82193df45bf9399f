/**
 * The quay profile's restore (issue 20), through the local runner on the
 * sandbox Quay Operator: into a new namespace and a new bucket (Secrets and
 * QuayRegistry applied quiesced, the database loaded with psql through
 * pods/exec, the config bundle pointed at the new bucket, resumed, verified
 * through the registry API), into the same namespace after the bucket and
 * the database were lost, and rolled back when verification fails. After a
 * restore, Quay's rows and the blobs agree with what was backed up.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { QUAY_REGISTRY } from '../../sandbox/kube/quay-operator.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import { NOTHING_ANSWERS } from '../../sandbox/process.ts';
import { quayRows } from '../../sandbox/quay-schema.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { QUAY_DATABASE, QUAY_NAME, type QuayBed, startQuayBed } from '../support/quay.ts';
import {
  backUpQuay,
  blobsIn as blobsOf,
  drNamespace,
  keysSecret as keysOf,
  restoreQuay,
} from '../support/quay-restore.ts';
import { clientFor, createBucket, deleteKeys, listAll } from '../support/s3.ts';

const NS = 'quay-enterprise';
const DR = 'quay-dr';
let s3: S3ServerHandle;
let bed: QuayBed;
let snapshotId: string;
/** Quay's rows as backed up: every restore must bring back exactly these. */
let rows: string[];

const spec = (namespace: string) =>
  bed.api.store.read(QUAY_REGISTRY, namespace, QUAY_NAME)['spec'] as {
    configBundleSecret: string;
    components: unknown;
  };
const available = (namespace: string) =>
  JSON.stringify(bed.api.store.read(QUAY_REGISTRY, namespace, QUAY_NAME)['status']).includes(
    '"type":"Available","status":"True"',
  );

const restore = (namespace: string, bucket: string, secretName: string, registryUrl: string) =>
  restoreQuay(s3, bed, { snapshotId, namespace, bucket, secretName, registryUrl });
const blobsIn = (bucket: string) => blobsOf(s3, bucket);
const keysSecret = (namespace: string, name: string) => keysOf(s3, bed, namespace, name);

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-quay-restore', computeChecksums: true });
  const client = clientFor(s3);
  for (const bucket of ['vault', 'quay-dr-bucket', 'quay-again', 'quay-rollback', 'quay-lost'])
    await createBucket(client, bucket);
  client.destroy();
  bed = await startQuayBed(s3, {
    version: '3.9.1',
    namespace: NS,
    bucket: 'quay-source',
    count: 3,
  });
  rows = await quayRows(await bed.database(), QUAY_DATABASE);
  snapshotId = await backUpQuay(s3, bed, 'vault');
}, 240_000);

afterAll(async () => {
  await bed?.stop();
  await s3?.stop();
});

describe('quay restore', () => {
  it('restores into a new namespace and bucket: Secrets, QuayRegistry, database, storage, verified', async () => {
    // Prepare
    const url = await drNamespace(s3, bed, DR, 'dr-s3');

    // Act
    const result = await restore(DR, 'quay-dr-bucket', 'dr-s3', url);

    // Assess
    expect(result.cause).toBeUndefined();
    expect(result.status).toBe('SUCCEEDED');
    expect(await quayRows(await bed.operator.database(DR, QUAY_NAME), QUAY_DATABASE)).toEqual(rows);
    const blobs = await blobsIn('quay-dr-bucket');
    for (const image of bed.images)
      for (const blob of image.blobs) expect(blobs.has(blob.digest)).toBe(true);
    expect(spec(DR).components).toEqual(spec(NS).components);
    expect(spec(DR).configBundleSecret).not.toBe(spec(NS).configBundleSecret);
    expect(available(DR)).toBe(true);
    const keys = (namespace: string) =>
      bed.api.store.read(
        BuiltIn.secrets,
        namespace,
        `${QUAY_NAME}-quay-registry-managed-secret-keys`,
      )['data'];
    expect(keys(DR)).toEqual(keys(NS));
    const tags = (await (await fetch(`${url}/v2/team/app0/tags/list`)).json()) as {
      tags: string[];
    };
    expect(tags.tags).toEqual(['v1']);
  });

  it('restores in place after the bucket and the database were lost', async () => {
    // Prepare
    const postgres = await bed.database();
    await postgres.sql('postgres', `DROP DATABASE "${QUAY_DATABASE}" WITH (FORCE);`);
    const client = clientFor(s3);
    await deleteKeys(client, 'quay-source', [...(await listAll(client, 'quay-source')).keys()]);
    keysSecret(NS, 'quay-s3');

    // Act
    const result = await restore(NS, 'quay-again', 'quay-s3', bed.registryUrl);

    // Assess
    expect(result.cause).toBeUndefined();
    expect(await quayRows(postgres, QUAY_DATABASE)).toEqual(rows);
    const blobs = await blobsIn('quay-again');
    for (const image of bed.images)
      for (const blob of image.blobs) expect(blobs.has(blob.digest)).toBe(true);
    expect(available(NS)).toBe(true);
  });

  it('does not switch Quay when the target lost a blob the database needs', async () => {
    // Prepare: every write of one blob into the target fails, so the target lacks it.
    const bundle = spec(NS).configBundleSecret;
    const before = await quayRows(await bed.database(), QUAY_DATABASE);
    keysSecret(NS, 'quay-s3');
    const lost = bed.images[1]?.blobs[0]?.digest.replace('sha256:', '') ?? '';
    const keyPrefix = `datastorage/registry/sha256/${lost.slice(0, 2)}/${lost}`;
    for (const operation of ['CopyObject', 'PutObject', 'CreateMultipartUpload'])
      await s3.injectFaults({
        operation,
        status: 500,
        code: 'InternalError',
        count: 1_000,
        bucket: 'quay-lost',
        keyPrefix,
      });

    // Act
    let result: Awaited<ReturnType<typeof restore>>;
    try {
      result = await restore(NS, 'quay-lost', 'quay-s3', bed.registryUrl);
    } finally {
      await s3.clearFaults();
    }

    // Assess: refused before the switch, naming the blob; Quay as it was, serving.
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain(lost);
    expect(result.cause).toContain('so the registry was not switched');
    expect(spec(NS).configBundleSecret).toBe(bundle);
    expect(await quayRows(await bed.database(), QUAY_DATABASE)).toEqual(before);
    expect(await blobsIn('quay-lost')).not.toContain(`sha256:${lost}`);
    await bed.operator.waitForAvailable(NS, QUAY_NAME, 30_000);
  });

  it('rolls the config bundle back when the restored registry does not verify', async () => {
    // Prepare
    const bundle = spec(NS).configBundleSecret;
    keysSecret(NS, 'quay-s3');

    // Act: a registry URL nothing answers on, so the verification fails.
    const result = await restore(NS, 'quay-rollback', 'quay-s3', NOTHING_ANSWERS);

    // Assess
    expect(result.status).toBe('FAILED');
    expect({ error: result.error, cause: result.cause }).toMatchObject({
      error: 'RestoreRolledBack',
    });
    expect(spec(NS).configBundleSecret).toBe(bundle);
    await bed.operator.waitForAvailable(NS, QUAY_NAME, 30_000);
  });
});
