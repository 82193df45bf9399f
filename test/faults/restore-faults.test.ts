/**
 * A restore under S3 faults (issue 18, item 6) either completes proven or
 * leaves the registry on its old bucket. The restore workflow runs with
 * regvault's S3 requests through a fault proxy (5% 503 SlowDown, 1% of each
 * reset): once with the vault behind the proxy and the target direct (the
 * copy, the proof and the switch meet faults; the registry, once switched,
 * reads its bucket without them), once with the target behind the proxy too,
 * so the restored registry meets them as well.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { loadKubeConfig } from '../../functions/commons/cluster/kube.ts';
import { runRestoreLocally } from '../../functions/commons/local/runner.ts';
import { acpProfile } from '../../functions/commons/registry/acp.ts';
import { RegistryClient } from '../../functions/commons/registry/client.ts';
import { populateRegistry } from '../../sandbox/images/index.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { type FaultProxy, startFaultProxy } from '../../sandbox/s3/fault-proxy.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { backupThroughCluster } from '../support/backup.ts';
import { clientFor, createBucket, listAll, storageOn, vaultDeps } from '../support/s3.ts';

const FAULTS = { slowDown: 0.05, resetBefore: 0.01, resetAfter: 0.01, resetMidBody: 0.01 };

let s3: S3ServerHandle;
let proxy: FaultProxy;
let client: S3Client;
let cluster: FakeCluster;
let snapshotId = '';

const profile = () => acpProfile(loadKubeConfig({ path: cluster.kubeconfigPath }));
const currentBucket = async () => (await profile().discover()).storage.bucket;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-restore-faults', computeChecksums: true });
  proxy = await startFaultProxy({ upstream: s3.endpoint, seed: 18 });
  client = clientFor(s3);
  for (const bucket of ['registry', 'vault', 'restored-direct', 'restored-faulted'])
    await createBucket(client, bucket);
  cluster = await startFakeCluster({ tls: true });
  await cluster.seedAcpRegistry(storageOn(s3, 'registry'));
  await cluster.waitForReadyPod(30_000);
  await populateRegistry(new URL(cluster.registryUrl).host, {
    repositories: 6,
    tagsPerRepository: 3,
    layerSizes: [3000, 40_000],
  });
  // The snapshot is taken without faults: only the restores meet them.
  snapshotId = await backupThroughCluster(s3, 'vault', cluster.kubeconfigPath);
}, 240_000);

afterAll(async () => {
  client?.destroy();
  await cluster?.stop();
  await proxy?.stop();
  await s3?.stop();
});

/** Restores the snapshot into `bucket` with the vault (and, if asked, the target) behind the proxy. */
async function restoreUnderFaults(bucket: string, targetBehindProxy: boolean) {
  const deps = vaultDeps({ ...s3, endpoint: proxy.endpoint }, 'vault', '', {
    kube: { path: cluster.kubeconfigPath },
    registryUrl: cluster.registryUrl,
  });
  const before = proxy.counts();
  proxy.setRates(FAULTS);
  try {
    const result = await runRestoreLocally(
      {
        snapshot: snapshotId,
        target: {
          bucket,
          endpoint: targetBehindProxy ? proxy.endpoint : s3.endpoint,
          region: s3.region,
          secretName: 'registry-s3-secret',
        },
        pullSample: 'all',
        rolloutTimeoutSeconds: 60,
      },
      { deps, waitMs: 200 },
    );
    const after = proxy.counts();
    const faults =
      Object.values(after.injected).reduce((a, b) => a + b, 0) -
      Object.values(before.injected).reduce((a, b) => a + b, 0);
    return { result, faults, requests: after.requests - before.requests };
  } finally {
    proxy.setRates({});
    deps.close();
  }
}

describe('a restore under 5% 503 SlowDown and 1% of each reset', () => {
  it('completes proven, every blob hashed, and the registry serves the restored bucket (vault behind the proxy)', async () => {
    // Act
    const { result, faults, requests } = await restoreUnderFaults('restored-direct', false);

    // Assess
    expect(faults).toBeGreaterThan(0);
    expect(result.cause).toBeUndefined();
    expect(result.status).toBe('SUCCEEDED');
    const output = result.output as {
      proof: { proven: boolean; blobsHashed?: number };
      verify: { ok: boolean; problems: string[] };
    };
    expect(output.proof.proven).toBe(true);
    expect(output.verify).toMatchObject({ ok: true, problems: [] });
    expect(await currentBucket()).toBe('restored-direct');
    expect((await listAll(client, 'restored-direct')).size).toBe(
      (await listAll(client, 'registry')).size,
    );
    process.stdout.write(
      `restore, vault behind the proxy: ${requests} requests, ${faults} faults\n`,
    );
  }, 300_000);

  it('either completes proven on the new bucket or leaves the registry on its old one (everything behind the proxy)', async () => {
    // Prepare
    const old = await currentBucket();

    // Act
    const { result, faults, requests } = await restoreUnderFaults('restored-faulted', true);

    // Assess
    expect(faults).toBeGreaterThan(0);
    const now = await currentBucket();
    if (result.status === 'SUCCEEDED') {
      expect((result.output as { proof: { proven: boolean } }).proof.proven).toBe(true);
      expect(now).toBe('restored-faulted');
    } else {
      expect(now).toBe(old);
      expect(result.error).toMatch(/^(RestoreRolledBack|RestoreFailed|InputError)$/);
    }
    // Whichever it was, the registry answers from the bucket the cluster names.
    expect((await new RegistryClient(cluster.registryUrl).catalog()).length).toBe(6);
    process.stdout.write(
      `restore, everything behind the proxy: ${result.status} (${result.error ?? 'proven'}: ${result.cause?.slice(0, 400) ?? ''}), ${requests} requests, ${faults} faults\n`,
    );
  }, 300_000);
});
