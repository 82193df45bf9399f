/**
 * The `distribution` profile for the docker-registry chart with
 * `persistence.enabled`: the filesystem driver on a PersistentVolumeClaim
 * the Deployment mounts. Against the sandbox (a real docker-registry per pod
 * on the claim's directory): the profile finds the claim, a backup runs in a
 * Job that mounts it read-only, and a restore into a new claim through a Job
 * switches the Deployment's volume to it, serves every image, and rolls back
 * from a claim it cannot serve.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { loadKubeConfig } from '../../functions/commons/cluster/kube.ts';
import { RegistryClient } from '../../functions/commons/registry/client.ts';
import { distributionProfile } from '../../functions/commons/registry/distribution.ts';
import { distributionSettingsSchema } from '../../functions/commons/registry/distribution-settings.ts';
import type { StorageRef } from '../../functions/commons/registry/profile.ts';
import { switchVerifyRollback } from '../../functions/commons/registry/rollout.ts';
import { verifyRegistry } from '../../functions/commons/registry/verify.ts';
import { type PopulatedRegistry, populateRegistry } from '../../sandbox/images/index.ts';
import {
  type DistributionRegistry,
  type FakeCluster,
  startFakeCluster,
} from '../../sandbox/kube/index.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { onClaim as claimOn, createVaultKeysSecret } from '../support/claims.ts';
import { type CliRun, jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { serverWithBuckets, storageOn } from '../support/s3.ts';

const VAULT = 'chart-claim-vault';
const NAMESPACE = 'registry';

let s3: S3ServerHandle;
let cluster: FakeCluster;
let registry: DistributionRegistry;
let images: PopulatedRegistry;

const profile = () =>
  distributionProfile(
    loadKubeConfig({ path: cluster.kubeconfigPath }),
    distributionSettingsSchema.parse({}),
  );
const onClaim = (claimName: string): StorageRef => claimOn(claimName, NAMESPACE);
const regvault = (...args: string[]): Promise<CliRun> =>
  runRegvault(
    [...args, '--profile', 'distribution', '--json'],
    sandboxEnv(s3, VAULT, {
      KUBECONFIG: cluster.kubeconfigPath,
      REGVAULT_REGISTRY_URL: registry.registryUrl,
    }),
  );
const verifyAll = () =>
  verifyRegistry(new RegistryClient(registry.registryUrl), images, {
    sample: Number.POSITIVE_INFINITY,
  });
const rollout = { timeoutMs: 60_000, intervalMs: 250 };

beforeAll(async () => {
  ({ server: s3 } = await serverWithBuckets('s3-chart-claim', [VAULT, 'chart-unused']));
  cluster = await startFakeCluster({ tls: true });
  registry = await cluster.seedDistributionRegistry({
    ...storageOn(s3, 'chart-unused'),
    claim: 'docker-registry',
  });
  await registry.waitForReadyPod(60_000);
  images = await populateRegistry(new URL(registry.registryUrl).host, {
    repositories: 2,
    tagsPerRepository: 2,
  });
  // The vault's keys for the Jobs, as the operator would create them.
  createVaultKeysSecret(cluster, s3, NAMESPACE);
}, 180_000);

afterAll(async () => {
  await cluster?.stop();
  await s3?.stop();
});

describe('the distribution profile on a PersistentVolumeClaim (the chart with persistence)', () => {
  it('finds the claim the Deployment mounts at the filesystem rootdirectory, and names it among the required objects', async () => {
    // Act
    const found = await profile().discover();
    const required = await profile().requiredObjects();
    // Assess
    expect(found.storage.claim).toEqual({
      claimName: 'docker-registry',
      namespace: NAMESPACE,
      subPath: '',
    });
    expect(required).toContainEqual({
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      namespace: NAMESPACE,
      name: 'docker-registry',
    });
  });

  it('backs the claim up through a Job, restores it into a new claim through a Job, switches, verifies, and rolls back from an empty claim', async () => {
    // Prepare
    const backup = await regvault('backup', '--job-vault-secret', 'regvault-vault-keys');
    const snapshot = jsonLines(backup.stdout).at(-1)?.['snapshot'] as Record<string, unknown>;
    try {
      // Act
      const restore = await regvault(
        'restore',
        '--snapshot',
        String(snapshot['snapshotId']),
        '--target-claim',
        'docker-registry-restored',
        '--job-vault-secret',
        'regvault-vault-keys',
        '--rollout-timeout',
        '60',
      );
      const onRestored = (await profile().discover()).storage.claim?.claimName;
      const served = await verifyAll();
      cluster.server.store.create(BuiltIn.persistentvolumeclaims, {
        apiVersion: 'v1',
        kind: 'PersistentVolumeClaim',
        metadata: { name: 'docker-registry-empty', namespace: NAMESPACE },
        spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
        status: { phase: 'Bound' },
      });
      const failed = await switchVerifyRollback(profile(), onClaim('docker-registry-empty'), {
        rollbackOnFailure: true,
        verify: verifyAll,
        verifyAfterRollback: verifyAll,
        ...rollout,
      });
      // Assess
      expect(backup.code).toBe(0);
      expect(snapshot).toMatchObject({ status: 'complete', repositories: 2, tags: 4, failed: 0 });
      expect(restore.stderr).toBe('');
      expect(restore.code).toBe(0);
      expect(jsonLines(restore.stdout).at(-1)).toMatchObject({
        status: 'SUCCEEDED',
        created: true,
        verified: true,
      });
      expect(onRestored).toBe('docker-registry-restored');
      expect(served.ok).toBe(true);
      expect(served.pulls.length).toBe(4);
      expect(failed.ok).toBe(false);
      expect(failed.rollback?.ok).toBe(true);
      expect(failed.rollback?.restored.claim?.claimName).toBe('docker-registry-restored');
      expect((await verifyAll()).ok).toBe(true);
    } finally {
      // Every test starts with the registry on its first claim.
      await switchVerifyRollback(profile(), onClaim('docker-registry'), {
        rollbackOnFailure: false,
        verify: verifyAll,
        ...rollout,
      });
    }
  });
});
