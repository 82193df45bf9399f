/**
 * Who reaches a bucket the cluster names with a Secret: the vault's own
 * identity when it may (AWS: the role's registryBucketNames and
 * roleBucketNames), so objects copy server-side, else the Secret's keys.
 * On AWS the Secret holds an IAM user's keys and the functions run as their
 * role: two identities, so every object was streamed. Here the sandbox S3
 * server stands for S3 and the Secret holds other keys than the vault's, as
 * there; its request counters show which path a backup took.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
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
  const vaultOnAws = (
    reaches: { read?: string[]; write?: string[] },
    registryRole?: { roleArn: string },
  ) =>
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
      ...(registryRole === undefined ? {} : { registryRole }),
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

  it.each([
    ['a registry bucket read through the role', 'registry', 'read', 'registry-role'],
    [
      'the same as a restore target: the role only reads',
      'registry',
      'write',
      'registry-secret:s3-keys',
    ],
    [
      'a role bucket as a source: the vault identity writes it, so it reads it',
      'restored',
      'read',
      'vault',
    ],
    ['a bucket neither names', 'other', 'read', 'registry-secret:s3-keys'],
  ] as const)('with a registry read role, is right for %s', (_case, bucket, use, access) => {
    // Prepare
    const deps = vaultOnAws(
      { read: ['registry'], write: ['restored'] },
      { roleArn: 'arn:aws:iam::111122223333:role/registry-read' },
    );

    // Act
    const reached = deps.storageAccess({ bucket, endpoint: undefined, secretName: 's3-keys' }, use);
    deps.close();

    // Assess
    expect(reached.access).toBe(access);
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

/**
 * A registry bucket in another account, read through a role the vault's
 * identity assumes (`registryReadRoleArn`). No STS runs here: a listener
 * answers AssumeRole in STS's own protocol, so the SDK's real credential
 * provider asks it, and the sandbox S3 server (which takes any keys) serves
 * the registry and the vault. What AWS alone can show, that S3 refuses the
 * function role and admits the assumed one, is not tested here.
 */
describe('a backup of a registry read through an assumed role', () => {
  const ROLE = 'arn:aws:iam::111122223333:role/regvault-registry-read';
  const ASSUMED = { accessKeyId: 'ASIAASSUMEDREGISTRY1', secretAccessKey: 'assumed-secret' };
  let s3: S3ServerHandle;
  let client: S3Client;
  let cluster: FakeCluster;
  let sts: Server;
  let stsEndpoint = '';
  const assumeCalls: Array<{ params: URLSearchParams; authorization: string }> = [];

  beforeAll(async () => {
    sts = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const params = new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
        assumeCalls.push({ params, authorization: String(req.headers.authorization) });
        res.setHeader('content-type', 'text/xml');
        res.end(
          `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><Credentials><AccessKeyId>${ASSUMED.accessKeyId}</AccessKeyId><SecretAccessKey>${ASSUMED.secretAccessKey}</SecretAccessKey><SessionToken>assumed-session-token</SessionToken><Expiration>${new Date(Date.now() + 3_600_000).toISOString()}</Expiration></Credentials><AssumedRoleUser><AssumedRoleId>AROAREGISTRYREAD:regvault</AssumedRoleId><Arn>arn:aws:sts::111122223333:assumed-role/regvault-registry-read/regvault</Arn></AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></AssumeRoleResponse>`,
        );
      });
    });
    await new Promise<void>((resolve) => sts.listen(0, '127.0.0.1', resolve));
    stsEndpoint = `http://127.0.0.1:${(sts.address() as AddressInfo).port}`;
    s3 = await startS3Server({ name: 's3-registry-role' });
    client = clientFor(s3);
    await createBucket(client, 'vault-role');
    await s3.fillRegistry('registry', REGISTRY_OBJECTS / 4);
    cluster = await startFakeCluster({ tls: true, startRegistry: fakeRegistries().start });
    await seedRegistry(cluster, {
      bucket: 'registry',
      endpoint: s3.endpoint,
      region: s3.region,
      accessKey: 'AKIAREGISTRYUSER0001',
      secretKey: 'the-registry-users-own-secret-key',
    });
  }, 120_000);

  afterAll(async () => {
    client?.destroy();
    await cluster?.stop();
    await s3?.stop();
    // The STS client inside the credential provider keeps its socket alive.
    sts?.closeAllConnections();
    await new Promise((resolve) => sts?.close(resolve));
  });

  it('reads the registry with the assumed credentials, asked for with the vault identity and the external id, and streams', async () => {
    // Prepare
    const deps = vaultDeps(s3, 'vault-role', 'regvault/', {
      kube: { path: cluster.kubeconfigPath },
      vaultReaches: { read: ['registry'] },
      registryRole: { roleArn: ROLE, externalId: 'regvault-ext-1', stsEndpoint },
    });

    try {
      // Act
      await s3.resetCounters();
      const run = await runBackupLocally({}, { deps });
      const counters = await s3.counters();
      const assumedByBackup = assumeCalls.length;
      const source = {
        bucket: 'registry',
        region: s3.region,
        endpoint: s3.endpoint,
        prefix: '',
        forcePathStyle: true,
        access: Access.RegistryRole,
      };
      const credentials = await (await deps.s3(source)).config.credentials();
      const vaultLocation = { ...source, bucket: 'vault-role', access: Access.Vault };

      // Assess
      expect(run.cause).toBeUndefined();
      expect(run.output).toMatchObject({ status: 'complete', objects: REGISTRY_OBJECTS / 4 });
      expect(credentials).toMatchObject({ ...ASSUMED, sessionToken: 'assumed-session-token' });
      expect(await deps.sameAccess(source, vaultLocation)).toBe(false);
      // Two identities: every registry object is read (GET) and written again (PUT), none copied.
      expect(counters.CopyObject ?? 0).toBe(0);
      expect(counters.GetObject ?? 0).toBeGreaterThanOrEqual(REGISTRY_OBJECTS / 4);
      // Assumed once per process (the provider renews before expiry), signed with the vault's keys.
      expect(assumedByBackup).toBeGreaterThanOrEqual(1);
      const first = assumeCalls[0];
      expect(first?.params.get('Action')).toBe('AssumeRole');
      expect(first?.params.get('RoleArn')).toBe(ROLE);
      expect(first?.params.get('ExternalId')).toBe('regvault-ext-1');
      expect(first?.params.get('RoleSessionName')).toBe('regvault');
      expect(first?.authorization).toContain(`Credential=${s3.credentials.accessKeyId}/`);
    } finally {
      deps.close();
    }
  }, 120_000);
});
