/**
 * Who reaches a bucket the cluster names with a Secret: the vault's own
 * identity when it may (AWS: the role's registryBucketNames and
 * roleBucketNames), so objects copy server-side, else the Secret's keys.
 * On AWS the Secret holds an IAM user's keys and the functions run as their
 * role: two identities, so every object was streamed. Here the sandbox S3
 * server stands for S3 and the Secret holds other keys than the vault's, as
 * there; its request counters show which path a backup took.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { loadKubeConfig } from '../../functions/commons/cluster/kube.ts';
import { createLocalDeps } from '../../functions/commons/local/deps.ts';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { acpProfile } from '../../functions/commons/registry/acp.ts';
import { Access } from '../../functions/commons/workflows/deps.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { fakeRegistries } from '../kube/fake-registry.ts';
import { seedRegistry } from '../kube/support.ts';
import { clientFor, createBucket, vaultDeps } from '../support/s3.ts';

const REGISTRY_OBJECTS = 400;

describe('the access to a bucket the cluster names', () => {
  const vaultOnAws = (reaches: { read?: string[]; write?: string[] }) =>
    createLocalDeps({
      vault: {
        location: {
          region: 'eu-west-1',
          bucket: 'vault',
          prefix: '',
          forcePathStyle: false,
          access: Access.Vault,
        },
      },
      vaultReaches: reaches,
    });

  it.each([
    ['a registry bucket the role may read, on AWS S3', 'registry', undefined, 'read', 'vault'],
    [
      'the same named by its regional endpoint',
      'registry',
      'https://s3.eu-west-1.amazonaws.com/',
      'read',
      'vault',
    ],
    [
      'the same named by the global endpoint',
      'registry',
      'https://s3.amazonaws.com',
      'read',
      'vault',
    ],
    ['a bucket the role may not read', 'other', undefined, 'read', 'registry-secret:s3-keys'],
    [
      'the same name on another S3 endpoint',
      'registry',
      'https://minio.example.com',
      'read',
      'registry-secret:s3-keys',
    ],
    [
      'a read-only registry bucket as a restore target',
      'registry',
      undefined,
      'write',
      'registry-secret:s3-keys',
    ],
    ['a role bucket as a restore target', 'restored', '', 'write', 'vault'],
    ['a role bucket as a source', 'restored', undefined, 'read', 'vault'],
  ] as const)('is right for %s', (_case, bucket, endpoint, use, access) => {
    // Prepare
    const deps = vaultOnAws({ read: ['registry'], write: ['restored'] });

    // Act
    const reached = deps.storageAccess({ bucket, endpoint, secretName: 's3-keys' }, use);
    deps.close();

    // Assess
    expect(reached.access).toBe(access);
    // The vault's identity reaches it where the vault is: the same (no) endpoint, so copies are server-side.
    if (access === 'vault') expect(reached).toEqual({ forcePathStyle: false, access: 'vault' });
    else if (endpoint !== undefined) expect(reached.endpoint).toBe(endpoint);
  });
});

describe('the addressing of a bucket the cluster names', () => {
  const vaultAt = (endpoint: string, forcePathStyle: boolean, storagePathStyle?: boolean) =>
    createLocalDeps({
      vault: {
        location: {
          endpoint,
          region: 'us-east-1',
          bucket: 'vault',
          prefix: '',
          forcePathStyle,
          access: Access.Vault,
        },
      },
      ...(storagePathStyle === undefined ? {} : { storagePathStyle }),
    });

  it.each([
    ['on the vault endpoint, as the vault is', 'https://s3.example.com', undefined, true],
    ['on another named endpoint, virtual-hosted', 'https://minio.example.com', undefined, false],
    ['on another named endpoint, path style asked', 'https://minio.example.com', true, true],
    ['on an IP address, path style whatever is asked', 'http://10.0.0.7:9000', false, true],
  ] as const)('is right %s', (_case, endpoint, storagePathStyle, pathStyle) => {
    // Prepare
    const deps = vaultAt('https://s3.example.com', true, storagePathStyle);
    // Act
    const reached = deps.storageAccess({ bucket: 'registry', endpoint, secretName: 'k' }, 'read');
    deps.close();
    // Assess
    expect(reached.forcePathStyle).toBe(pathStyle);
  });
});

describe('a backup of a registry whose Secret holds other keys than the vault', () => {
  let s3: S3ServerHandle;
  let client: S3Client;
  let cluster: FakeCluster;

  beforeAll(async () => {
    s3 = await startS3Server({ name: 's3-storage-access' });
    client = clientFor(s3);
    for (const bucket of ['vault-streamed', 'vault-copied']) await createBucket(client, bucket);
    await s3.fillRegistry('registry', REGISTRY_OBJECTS);
    cluster = await startFakeCluster({ tls: true, startRegistry: fakeRegistries().start });
    // An IAM user's keys in the Secret, as on AWS; the sandbox accepts any keys.
    await seedRegistry(cluster, {
      bucket: 'registry',
      endpoint: s3.endpoint,
      region: s3.region,
      accessKey: 'AKIAREGISTRYUSER0001',
      secretKey: 'the-registry-users-own-secret-key',
    });
    // Two identities, as on AWS: the Secret's keys are not the vault's.
    const profile = acpProfile(loadKubeConfig({ path: cluster.kubeconfigPath }));
    const { storage } = await profile.discover();
    const keys = await profile.readStorageKeys(storage.secretName);
    expect(keys.accessKeyId).not.toBe(s3.credentials.accessKeyId);
  }, 120_000);

  afterAll(async () => {
    client?.destroy();
    await cluster?.stop();
    await s3?.stop();
  });

  /** Backs up the cluster's registry into `vault`, counting the S3 requests. */
  async function backUp(vault: string, reaches: { read?: string[] }) {
    const deps = vaultDeps(s3, vault, 'regvault/', {
      kube: { path: cluster.kubeconfigPath },
      vaultReaches: reaches,
    });
    try {
      await s3.resetCounters();
      const run = await runBackupLocally({}, { deps });
      return { run, counters: await s3.counters() };
    } finally {
      deps.close();
    }
  }

  it('streams every object (GET and PUT) when the vault identity may not read the registry bucket', async () => {
    // Act
    const { run, counters } = await backUp('vault-streamed', {});

    // Assess
    expect(run.cause).toBeUndefined();
    expect(run.output).toMatchObject({ status: 'complete', objects: REGISTRY_OBJECTS });
    expect(counters.CopyObject ?? 0).toBe(0);
    expect(counters.GetObject ?? 0).toBeGreaterThanOrEqual(REGISTRY_OBJECTS);
  }, 120_000);

  it('copies every object server-side with the vault identity when it may read the registry bucket', async () => {
    // Act
    const { run, counters } = await backUp('vault-copied', { read: ['registry'] });

    // Assess
    expect(run.cause).toBeUndefined();
    expect(run.output).toMatchObject({ status: 'complete', objects: REGISTRY_OBJECTS });
    expect((counters.CopyObject ?? 0) + (counters.UploadPartCopy ?? 0)).toBeGreaterThanOrEqual(
      REGISTRY_OBJECTS,
    );
    // The vault's own files are read back (job, records, leases); no source object is.
    expect(counters.GetObject ?? 0).toBeLessThan(REGISTRY_OBJECTS / 4);
  }, 120_000);
});
