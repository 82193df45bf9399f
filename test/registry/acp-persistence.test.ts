/**
 * The ACP profile on a registry whose blobs are on a PersistentVolumeClaim
 * (the ModuleInfo's `persistence`): the fake cluster's operator runs the real
 * `docker-registry` on the claim's directory. The profile reads the claim,
 * captures the config without a Secret, refuses a cluster backup naming
 * --source-dir, and round-trips: the claim's directory backed up with
 * `backup --source-dir`, restored with `restore --target-dir` into a new
 * claim, the registry switched to it, verified (every image pulled and
 * digest-checked), and rolled back from a claim it cannot serve.
 */

import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parse } from 'yaml';
import { loadKubeConfig } from '../../functions/commons/cluster/kube.ts';
import { acpProfile } from '../../functions/commons/registry/acp.ts';
import { RegistryClient } from '../../functions/commons/registry/client.ts';
import type { StorageRef } from '../../functions/commons/registry/profile.ts';
import { switchVerifyRollback } from '../../functions/commons/registry/rollout.ts';
import { verifyRegistry } from '../../functions/commons/registry/verify.ts';
import { type PopulatedRegistry, populateRegistry } from '../../sandbox/images/index.ts';
import { REGISTRY_NAMESPACE } from '../../sandbox/kube/controller.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { onClaim as claimOn, createVaultKeysSecret } from '../support/claims.ts';
import { type CliRun, jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { serverWithBuckets, storageOn } from '../support/s3.ts';

const VAULT = 'pvc-vault';

let s3: S3ServerHandle;
let cluster: FakeCluster;
let images: PopulatedRegistry;
const claims: Record<string, string> = {};

const profile = () => acpProfile(loadKubeConfig({ path: cluster.kubeconfigPath }));
const onClaim = (claimName: string): StorageRef => claimOn(claimName, REGISTRY_NAMESPACE);
const regvault = (...args: string[]): Promise<CliRun> =>
  runRegvault(
    [...args, '--json'],
    sandboxEnv(s3, VAULT, {
      KUBECONFIG: cluster.kubeconfigPath,
      REGVAULT_REGISTRY_URL: cluster.registryUrl,
    }),
  );
const verifyAll = () =>
  verifyRegistry(new RegistryClient(cluster.registryUrl), images, {
    sample: Number.POSITIVE_INFINITY,
  });
const rollout = { timeoutMs: 60_000, intervalMs: 250 };

beforeAll(async () => {
  ({ server: s3 } = await serverWithBuckets('s3-pvc', [VAULT, 'pvc-unused']));
  cluster = await startFakeCluster({ tls: true });
  // ACP installs the plugin on a bucket; the registry is then moved onto its volume.
  await cluster.seedAcpRegistry(storageOn(s3, 'pvc-unused'));
  for (const name of ['registry-data', 'registry-restored', 'registry-empty'])
    claims[name] = await cluster.createClaim(name);
  const moved = await switchVerifyRollback(profile(), onClaim('registry-data'), {
    rollbackOnFailure: false,
    verify: () => verifyRegistry(new RegistryClient(cluster.registryUrl), { repositories: [] }),
    ...rollout,
  });
  if (!moved.ok) throw new Error(`the registry did not move onto its claim: ${moved.error}`);
  images = await populateRegistry(new URL(cluster.registryUrl).host, {
    repositories: 2,
    tagsPerRepository: 2,
  });
  // The vault's keys for the Jobs, as the operator would create them.
  createVaultKeysSecret(cluster, s3, REGISTRY_NAMESPACE);
}, 180_000);

/** Puts the registry back on `registry-data`, where every test starts. */
async function backOnData(): Promise<void> {
  const back = await switchVerifyRollback(profile(), onClaim('registry-data'), {
    rollbackOnFailure: false,
    verify: verifyAll,
    ...rollout,
  });
  if (!back.ok) throw new Error(`the registry did not go back onto registry-data: ${back.error}`);
}

afterAll(async () => {
  await cluster?.stop();
  await s3?.stop();
});

describe('the acp profile on a PersistentVolumeClaim', () => {
  it('reads the claim from the ModuleInfo, captures no Secret, and names the claim among the required objects', async () => {
    // Act
    const found = await profile().discover();
    const captured = await profile().captureConfig({ includeSecret: true });
    const required = await profile().requiredObjects();
    // Assess
    expect(found.storage.claim).toEqual({
      claimName: 'registry-data',
      namespace: REGISTRY_NAMESPACE,
      subPath: '',
    });
    expect(captured.map((file) => file.name)).toEqual(['moduleinfo-image-registry.yaml']);
    const spec = (parse(captured[0]?.yaml ?? '') as { spec: unknown }).spec;
    expect(spec).toMatchObject({
      config: {
        storageType: 'persistence',
        persistence: { enabled: true, existingClaim: 'registry-data' },
      },
    });
    expect(required).toContainEqual({
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      namespace: REGISTRY_NAMESPACE,
      name: 'registry-data',
    });
  });

  it('refuses a backup through the cluster without the Secret its Job would read, naming --job-vault-secret and --source-dir', async () => {
    // Act
    const bare = await regvault('backup');
    const missing = await regvault('backup', '--job-vault-secret', 'no-such-secret');
    // Assess
    expect(bare.code).toBe(2);
    expect(bare.stderr).toContain('PersistentVolumeClaim cpaas-system/registry-data');
    expect(bare.stderr).toContain('--job-vault-secret');
    expect(bare.stderr).toContain('--source-dir');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('Secret cpaas-system/no-such-secret does not exist');
  });

  it('backs the claim up through a Job that mounts it, with the vault keys only in a Secret, and deletes the Job', async () => {
    // Prepare
    const jobs: unknown[] = [];
    const unwatch = cluster.server.store.watch((event) => {
      if (event.ref.resource === 'jobs') jobs.push(event.object);
    });
    // Act
    const run = await regvault('backup', '--job-vault-secret', 'regvault-vault-keys');
    unwatch();
    const left = cluster.server.store.list(BuiltIn.jobs, REGISTRY_NAMESPACE);
    // Assess
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const summary = jsonLines(run.stdout).at(-1)?.['snapshot'] as Record<string, unknown>;
    expect(summary).toMatchObject({ status: 'complete', repositories: 2, tags: 4, failed: 0 });
    const spec = JSON.stringify(jobs[0]);
    expect(spec).toContain('"readOnly":true');
    expect(spec).toContain('--source-dir');
    expect(spec).not.toContain(s3.credentials.secretAccessKey);
    expect(jobs.some((job) => JSON.stringify(job).includes('"succeeded":1'))).toBe(true);
    expect(left).toEqual([]);
  });

  it('round-trips: backed up from the claim, restored into a new claim, switched, verified, and rolled back from an empty claim', async () => {
    // Prepare
    const backup = await regvault('backup', '--source-dir', String(claims['registry-data']));
    const snapshot = jsonLines(backup.stdout).at(-1)?.['snapshot'] as { snapshotId: string };
    const restore = await regvault(
      'restore',
      '--no-switch',
      '--snapshot',
      snapshot.snapshotId,
      '--target-dir',
      String(claims['registry-restored']),
    );
    // Act
    const switched = await switchVerifyRollback(profile(), onClaim('registry-restored'), {
      rollbackOnFailure: true,
      verify: verifyAll,
      ...rollout,
    });
    const failed = await switchVerifyRollback(profile(), onClaim('registry-empty'), {
      rollbackOnFailure: true,
      verify: verifyAll,
      verifyAfterRollback: verifyAll,
      ...rollout,
    });
    // Assess
    expect(backup.code).toBe(0);
    expect(restore.code).toBe(0);
    expect(switched.error).toBeUndefined();
    expect(switched.ok).toBe(true);
    expect(switched.switched?.previous.claim?.claimName).toBe('registry-data');
    expect(switched.verify?.pulls.length).toBe(4);
    expect(switched.verify?.pulls.every((pull) => pull.ok)).toBe(true);
    expect(failed.ok).toBe(false);
    expect(failed.rollback?.ok).toBe(true);
    expect(failed.rollback?.restored.claim?.claimName).toBe('registry-restored');
    expect((await profile().discover()).storage.claim?.claimName).toBe('registry-restored');
    expect((await verifyAll()).ok).toBe(true);
    await backOnData();
  });

  it('restores into a new claim through a Job, switches the registry to it and verifies every image', async () => {
    // Prepare
    const backup = await regvault('backup', '--source-dir', String(claims['registry-data']));
    const snapshot = jsonLines(backup.stdout).at(-1)?.['snapshot'] as { snapshotId: string };
    const jobs: unknown[] = [];
    const unwatch = cluster.server.store.watch((event) => {
      if (event.ref.resource === 'jobs') jobs.push(event.object);
    });
    try {
      // Act
      const restore = await regvault(
        'restore',
        '--snapshot',
        snapshot.snapshotId,
        '--target-claim',
        'registry-via-job',
        '--job-vault-secret',
        'regvault-vault-keys',
        '--rollout-timeout',
        '60',
      );
      unwatch();
      // Assess
      expect(restore.stderr).toBe('');
      expect(restore.code).toBe(0);
      const result = jsonLines(restore.stdout).at(-1) as Record<string, unknown>;
      expect(result).toMatchObject({ status: 'SUCCEEDED', created: true, verified: true });
      expect(
        cluster.server.store.get(
          BuiltIn.persistentvolumeclaims,
          REGISTRY_NAMESPACE,
          'registry-via-job',
        ),
      ).toBeDefined();
      expect((await profile().discover()).storage.claim?.claimName).toBe('registry-via-job');
      const spec = JSON.stringify(jobs[0]);
      expect(spec).toContain('--target-dir');
      expect(spec).not.toContain('"readOnly":true');
      expect(spec).not.toContain(s3.credentials.secretAccessKey);
      expect(cluster.server.store.list(BuiltIn.jobs, REGISTRY_NAMESPACE)).toEqual([]);
      expect((await verifyAll()).ok).toBe(true);
    } finally {
      unwatch();
      await backOnData();
    }
  });

  it('refuses a restore into a claim without the Secret its Job would read, making no claim and no Job', async () => {
    // Prepare: a snapshot to restore
    const backup = await regvault('backup', '--source-dir', String(claims['registry-data']));
    expect(backup.code).toBe(0);
    // Act
    const missing = await regvault(
      'restore',
      '--target-claim',
      'registry-never',
      '--job-vault-secret',
      'no-such-secret',
    );
    // Assess
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('Secret cpaas-system/no-such-secret does not exist');
    expect(
      cluster.server.store.get(
        BuiltIn.persistentvolumeclaims,
        REGISTRY_NAMESPACE,
        'registry-never',
      ),
    ).toBeUndefined();
    expect(cluster.server.store.list(BuiltIn.jobs, REGISTRY_NAMESPACE)).toEqual([]);
    expect((await profile().discover()).storage.claim?.claimName).toBe('registry-data');
  });
});
