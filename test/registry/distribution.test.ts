/**
 * The `distribution` and `harbor` profiles' round trips against the
 * sandbox: a real docker-registry process per pod of a Deployment laid out
 * as the docker-registry chart lays it out (config.yml in a ConfigMap, S3
 * keys in a Secret read through env) or as the Harbor chart lays out its
 * registry component (config.yml at /etc/registry, the keys in a Secret
 * taken whole through envFrom); for each, a backup through the workflow, a
 * restore after the bucket is lost that rewrites the config and rolls the
 * Deployment, and a switch to a broken bucket that rolls back to the config
 * before it.
 */
import { DeleteBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parse } from 'yaml';
import { loadKubeConfig } from '../../functions/commons/cluster/kube.ts';
import { runBackupLocally, runRestoreLocally } from '../../functions/commons/local/runner.ts';
import { RegistryClient } from '../../functions/commons/registry/client.ts';
import { distributionProfile } from '../../functions/commons/registry/distribution.ts';
import {
  distributionSettingsSchema,
  harborSettingsSchema,
} from '../../functions/commons/registry/distribution-settings.ts';
import { switchVerifyRollback } from '../../functions/commons/registry/rollout.ts';
import { verifyRegistry } from '../../functions/commons/registry/verify.ts';
import { resolveSnapshot } from '../../functions/commons/vault/store.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import { type PopulatedRegistry, populateRegistry, pullImage } from '../../sandbox/images/index.ts';
import {
  type DistributionRegistry,
  type FakeCluster,
  startFakeCluster,
} from '../../sandbox/kube/index.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import {
  createBucket,
  deleteKeys,
  listAll,
  serverWithBuckets,
  storageOn,
  vaultDeps,
} from '../support/s3.ts';

/** The two layouts: what the sandbox seeds and the names the profile finds. */
const LAYOUTS = [
  {
    profileName: 'distribution',
    layout: 'chart',
    schema: distributionSettingsSchema,
    namespace: 'registry',
    deployment: 'docker-registry',
    configMap: 'docker-registry-config',
    secret: 'docker-registry-secret',
    annotation: 'checksum/config',
  },
  {
    profileName: 'harbor',
    layout: 'harbor',
    schema: harborSettingsSchema,
    namespace: 'harbor',
    deployment: 'harbor-registry',
    configMap: 'harbor-registry',
    secret: 'harbor-registry',
    annotation: 'checksum/configmap',
  },
] as const;

let s3: S3ServerHandle;
let client: S3Client;
let cluster: FakeCluster;

beforeAll(async () => {
  ({ server: s3, client } = await serverWithBuckets('s3-distribution', ['vault'], {
    computeChecksums: true,
  }));
  cluster = await startFakeCluster({ tls: true });
}, 60_000);

afterAll(async () => {
  client?.destroy();
  // The registry processes write to the S3 server until the cluster has stopped them.
  await cluster?.stop().finally(() => s3?.stop());
});

describe.each(LAYOUTS)('the $profileName profile', (layout) => {
  let registry: DistributionRegistry;
  let images: PopulatedRegistry;
  let deps: WorkflowDeps & { close(): void };
  const origin = `${layout.profileName}-registry`;

  const profile = () =>
    distributionProfile(
      loadKubeConfig({ path: cluster.kubeconfigPath }),
      layout.schema.parse({}),
      layout.profileName,
    );
  const currentBucket = async () => (await profile().discover()).storage.bucket;
  const configYml = () =>
    parse(
      String(
        (
          cluster.server.store.get(BuiltIn.configmaps, layout.namespace, layout.configMap)?.[
            'data'
          ] as Record<string, string> | undefined
        )?.['config.yml'],
      ),
    ) as { storage: { s3: { bucket: string } } };
  const checksum = () =>
    (
      cluster.server.store.get(
        BuiltIn.deployments,
        layout.namespace,
        layout.deployment,
      ) as unknown as {
        spec: { template: { metadata: { annotations: Record<string, string> } } };
      }
    ).spec.template.metadata.annotations[layout.annotation];
  const verifyAll = () =>
    verifyRegistry(new RegistryClient(registry.registryUrl), images, {
      sample: Number.POSITIVE_INFINITY,
    });

  beforeAll(async () => {
    await createBucket(client, origin);
    registry = await cluster.seedDistributionRegistry({
      ...storageOn(s3, origin),
      layout: layout.layout,
    });
    await registry.waitForReadyPod(30_000);
    images = await populateRegistry(new URL(registry.registryUrl).host, {
      repositories: 3,
      tagsPerRepository: 2,
      multiArch: true,
    });
    deps = vaultDeps(s3, 'vault', `${layout.profileName}/`, {
      kube: { path: cluster.kubeconfigPath },
      registryUrl: registry.registryUrl,
      profileName: layout.profileName,
    });
  }, 240_000);
  afterAll(() => deps?.close());

  it('reads the bucket from config.yml and the keys from the Secret the container env reads', async () => {
    // Act
    const found = await profile().discover();
    const keys = await profile().readStorageKeys(found.storage.secretName);
    // Assess
    expect(found.resourceName).toBe(`${layout.namespace}/${layout.deployment}`);
    expect(found.storage).toMatchObject({
      bucket: await currentBucket(),
      regionEndpoint: s3.endpoint,
      region: s3.region,
      secretName: layout.secret,
    });
    expect(keys).toEqual({
      accessKeyId: s3.credentials.accessKeyId,
      secretAccessKey: s3.credentials.secretAccessKey,
    });
  });

  it('names the Deployment it looked for when there is none', async () => {
    // Act
    const attempt = distributionProfile(
      loadKubeConfig({ path: cluster.kubeconfigPath }),
      layout.schema.parse({ deployment: 'no-such-registry' }),
      layout.profileName,
    ).discover();
    // Assess
    await expect(attempt).rejects.toThrow(
      `there is no Deployment ${layout.namespace}/no-such-registry`,
    );
    await expect(attempt).rejects.toThrow("deployment: name the registry's Deployment");
  });

  it('backs up the registry with its Deployment and config, restores it after the bucket is lost, rewrites the config and rolls the pods', async () => {
    // Prepare: a snapshot, then the disaster
    const before = await currentBucket();
    const backup = await runBackupLocally({}, { deps });
    expect(backup.cause).toBeUndefined();
    const snapshot = await resolveSnapshot(
      deps.vault,
      (backup.output as { snapshotId: string }).snapshotId,
    );
    await deleteKeys(client, before, [...(await listAll(client, before)).keys()]);
    await client.send(new DeleteBucketCommand({ Bucket: before }));
    const target = `${layout.profileName}-restored-${Date.now()}`;
    await createBucket(client, target);
    const checksumBefore = checksum();
    const podBefore = registry.controller.pods().at(-1)?.name;
    // Act
    const restore = await runRestoreLocally(
      {
        snapshot: snapshot.id,
        target: {
          bucket: target,
          endpoint: s3.endpoint,
          region: s3.region,
          secretName: layout.secret,
        },
        pullSample: 'all',
      },
      { deps, waitMs: 200 },
    );
    // Assess
    expect(restore.cause).toBeUndefined();
    expect(restore.status).toBe('SUCCEEDED');
    expect(snapshot.clusterFiles).toEqual(
      expect.arrayContaining([
        `deployment-${layout.deployment}.yaml`,
        `configmap-${layout.configMap}.yaml`,
      ]),
    );
    expect(configYml().storage.s3.bucket).toBe(target);
    expect(checksum()).not.toBe(checksumBefore);
    expect(await registry.waitForReadyPod()).not.toBe(podBefore);
    expect((await verifyAll()).problems).toEqual([]);
    const first = images.repositories[0];
    const [tag, digest] = Object.entries(first?.tags ?? {})[0] ?? [];
    expect(
      (await pullImage(`${new URL(registry.registryUrl).host}/${first?.name}:${tag}`)).digest,
    ).toBe(digest);
  });

  it('rolls back to the config before a switch to a bucket that does not exist', async () => {
    // Prepare
    const found = await profile().discover();
    const checksumBefore = checksum();
    // Act
    const outcome = await switchVerifyRollback(
      profile(),
      { ...found.storage, bucket: 'no-such-bucket' },
      {
        rollbackOnFailure: true,
        verify: verifyAll,
        verifyAfterRollback: verifyAll,
        timeoutMs: 60_000,
        intervalMs: 250,
      },
    );
    // Assess
    expect(outcome.ok).toBe(false);
    expect(outcome.error).toMatch(/NoSuchBucket/);
    expect(outcome.rollback?.ok).toBe(true);
    expect(outcome.rollback?.verify?.ok).toBe(true);
    expect(configYml().storage.s3.bucket).toBe(found.storage.bucket);
    expect(checksum()).toBe(checksumBefore);
    expect((await profile().discover()).storage).toEqual(found.storage);
  });
});
