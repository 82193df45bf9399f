import { createHash } from 'node:crypto';
import {
  DeleteBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { CreateQueueCommand, SQSClient } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { loadKubeConfig } from '../../functions/commons/cluster/kube.ts';
import { createLocalDeps } from '../../functions/commons/local/deps.ts';
import { runBackupLocally, runRestoreLocally } from '../../functions/commons/local/runner.ts';
import { acpProfile } from '../../functions/commons/registry/acp.ts';
import { RegistryClient } from '../../functions/commons/registry/client.ts';
import { verifyRegistry } from '../../functions/commons/registry/verify.ts';
import { catalogSchema, vaultKeys } from '../../functions/commons/vault/format.ts';
import {
  getJson,
  listSnapshots,
  readInventory,
  resolveSnapshot,
} from '../../functions/commons/vault/store.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import {
  resolveRestore,
  rollbackRestore,
  switchRegistry,
} from '../../functions/commons/workflows/restore.ts';
import {
  OciLayout,
  type PopulatedRegistry,
  populateRegistry,
  pullImage,
  pushImage,
} from '../../sandbox/images/index.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { BuiltIn } from '../../sandbox/kube/server.ts';
import { startRegistry } from '../../sandbox/registry/index.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, listAll, putObjects } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let cluster: FakeCluster;
let deps: WorkflowDeps & { close(): void };
let images: PopulatedRegistry;
let sqs: SQSClient;
let queueUrl: string;

const registryHost = () => new URL(cluster.registryUrl).host;
const profile = () => acpProfile(loadKubeConfig({ path: cluster.kubeconfigPath }));

beforeAll(async () => {
  // Checksums on, as AWS S3 computes them: blob copies are checked against their digests.
  s3 = await startS3Server({ name: 's3-workflows', computeChecksums: true });
  client = clientFor(s3);
  await createBucket(client, 'registry');
  await createBucket(client, 'vault');
  cluster = await startFakeCluster({ tls: true });
  await cluster.seedAcpRegistry({
    bucket: 'registry',
    endpoint: s3.endpoint,
    region: s3.region,
    accessKey: s3.credentials.accessKeyId,
    secretKey: s3.credentials.secretAccessKey,
  });
  await cluster.waitForReadyPod(30_000);
  images = await populateRegistry(registryHost(), {
    repositories: 8,
    tagsPerRepository: 4,
    multiArch: true,
    layerSizes: [3000, 20_000],
  });
  deps = createLocalDeps({
    vault: {
      location: {
        endpoint: s3.endpoint,
        region: s3.region,
        bucket: 'vault',
        prefix: 'regvault/',
        forcePathStyle: true,
        access: 'vault',
      },
      credentials: s3.credentials,
    },
    kube: { path: cluster.kubeconfigPath },
    registryUrl: cluster.registryUrl,
  });
  sqs = new SQSClient({ endpoint: s3.endpoint, region: s3.region, credentials: s3.credentials });
  queueUrl =
    (await sqs.send(new CreateQueueCommand({ QueueName: 'regvault-copy' }))).QueueUrl ?? '';
}, 240_000);

afterAll(async () => {
  deps?.close();
  sqs?.destroy();
  client?.destroy();
  await cluster?.stop();
  await s3?.stop();
});

/** A restore target on the test's S3 server, with the keys of the Secret the registry already uses. */
function restoreTarget(bucket: string) {
  return {
    bucket,
    endpoint: s3.endpoint,
    region: s3.region,
    secretName: 'registry-s3-secret',
  };
}

async function emptyAndDeleteBucket(bucket: string): Promise<void> {
  const keys = [...(await listAll(client, bucket)).keys()];
  for (let i = 0; i < keys.length; i += 1000) {
    await client.send(
      new DeleteObjectsCommand({
        Bucket: bucket,
        Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) },
      }),
    );
  }
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

/** Pulls every tag with skopeo and returns repository:tag -> digest. */
async function pullAll(
  host: string,
  expected: PopulatedRegistry['repositories'],
): Promise<Record<string, string>> {
  const digests: Record<string, string> = {};
  for (const repository of expected) {
    for (const tag of Object.keys(repository.tags)) {
      digests[`${repository.name}:${tag}`] = (
        await pullImage(`${host}/${repository.name}:${tag}`)
      ).digest;
    }
  }
  return digests;
}

const expectedDigests = (expected: PopulatedRegistry['repositories']) =>
  Object.fromEntries(
    expected.flatMap((r) =>
      Object.entries(r.tags).map(([tag, digest]) => [`${r.name}:${tag}`, digest]),
    ),
  );

describe('backing up a live registry and restoring it after the bucket is lost', () => {
  let firstSnapshot = '';

  it('backs up every object through SQS copy workers into a complete snapshot', async () => {
    // Act
    const result = await runBackupLocally(
      { targetObjectsPerShard: 100 },
      {
        deps,
        transport: { kind: 'sqs', client: sqs, queueUrl },
        workers: 4,
        workerBudgetMs: 100,
      },
    );
    // Assess
    expect(result.cause).toBeUndefined();
    expect(result.status).toBe('SUCCEEDED');
    const output = result.output as {
      snapshotId: string;
      status: string;
      objects: number;
      failed: number;
      repositories: number;
    };
    expect(output.status).toBe('complete');
    expect(output.objects).toBeGreaterThanOrEqual(300);
    expect(output.repositories).toBe(8);
    const sourceKeys = await listAll(client, 'registry');
    expect(output.objects).toBe(sourceKeys.size);
    const manifest = await resolveSnapshot(deps.vault, output.snapshotId);
    expect(manifest.checks['references']?.ok).toBe(true);
    expect(manifest.clusterFiles).toEqual(['moduleinfo-image-registry.yaml']);
    const inventory = await readInventory(deps.vault, manifest);
    expect(new Set(inventory.map((r) => r.key))).toEqual(new Set(sourceKeys.keys()));
    expect(result.messages).toBeGreaterThan(manifest.inventory.parts.length);
    firstSnapshot = output.snapshotId;
  });

  it('copies only the new objects on the next backup after one more push', async () => {
    // Prepare
    const layout = await OciLayout.create();
    const extra = await layout.addImage('extra', [{ seed: 'extra-layer', size: 5000 }]);
    await pushImage(layout, 'extra', `${registryHost()}/team-0/app-0:v9.9`);
    await layout.remove();
    const before = await listAll(client, 'registry');
    // Act
    const result = await runBackupLocally({}, { deps });
    // Assess
    const output = result.output as {
      status: string;
      copied: number;
      skipped: number;
      objects: number;
    };
    expect(output.status).toBe('complete');
    expect(output.objects).toBe(before.size);
    // the new image: its layer, config and manifest blobs, and its links (layers, revision, tag)
    expect(output.copied).toBeGreaterThan(0);
    expect(output.copied).toBeLessThanOrEqual(12);
    expect(output.skipped).toBe(before.size - output.copied);
    images.repositories[0] = {
      name: 'team-0/app-0',
      tags: { ...images.repositories[0]?.tags, 'v9.9': extra.digest },
    };
  });

  it('restores the latest snapshot into a new bucket, switches the registry and serves every image digest for digest', async () => {
    // Prepare: the disaster
    await emptyAndDeleteBucket('registry');
    await createBucket(client, 'registry-bucket-restored');
    // Act
    const result = await runRestoreLocally(
      {
        target: restoreTarget('registry-bucket-restored'),
        pullSample: 5,
      },
      { deps, waitMs: 200 },
    );
    // Assess
    expect(result.cause).toBeUndefined();
    expect(result.status).toBe('SUCCEEDED');
    expect((await profile().discover()).storage.bucket).toBe('registry-bucket-restored');
    const catalog = await new RegistryClient(cluster.registryUrl).catalog();
    expect(catalog.sort()).toEqual(images.repositories.map((r) => r.name).sort());
    expect(await pullAll(registryHost(), images.repositories)).toEqual(
      expectedDigests(images.repositories),
    );
  });

  it('restores the first snapshot too, as it was', async () => {
    // Prepare
    await createBucket(client, 'first-snapshot');
    // Act
    const result = await runRestoreLocally(
      {
        snapshot: firstSnapshot,
        target: { bucket: 'first-snapshot', endpoint: s3.endpoint, region: s3.region },
        switchRegistry: false,
      },
      { deps },
    );
    // Assess
    expect(result.status).toBe('SUCCEEDED');
    expect((result.output as { message?: string }).message).toMatch(
      new RegExp(
        `^restored snapshot ${firstSnapshot} into s3://first-snapshot: \\d+ objects, \\d+ bytes$`,
      ),
    );
    const registry = await startRegistry({
      storage: {
        kind: 's3',
        bucket: 'first-snapshot',
        endpoint: s3.endpoint,
        region: s3.region,
        accessKey: 'k',
        secretKey: 's',
      },
    });
    try {
      const catalog = await getJson(
        deps.vault,
        vaultKeys.catalog('regvault/', firstSnapshot),
        catalogSchema,
      );
      const report = await verifyRegistry(
        new RegistryClient(registry.url),
        catalog ?? { repositories: [] },
        { sample: Number.POSITIVE_INFINITY },
      );
      expect(report.problems).toEqual([]);
      expect(
        catalog?.repositories.find((r) => r.name === 'team-0/app-0')?.tags['v9.9'],
      ).toBeUndefined();
    } finally {
      await registry.stop();
    }
  });
});

describe('a backup while images are being pushed', () => {
  it('captures a snapshot whose every tag is served by a registry on its restore, with no dangling reference', async () => {
    // Prepare
    const layout = await OciLayout.create();
    let pushing = true;
    let pushed = 0;
    const pusher = (async () => {
      while (pushing) {
        const ref = `live-${pushed}`;
        await layout.addImage(ref, [
          { seed: `live-${pushed}`, size: 4000 },
          { seed: 'live-base', size: 9000 },
        ]);
        await pushImage(layout, ref, `${registryHost()}/live/app-${pushed % 3}:t${pushed}`);
        pushed++;
      }
    })();
    // Act
    const backup = await runBackupLocally(
      { targetObjectsPerShard: 100 },
      { deps, workerBudgetMs: 50, workers: 2 },
    );
    pushing = false;
    await pusher;
    await layout.remove();
    await createBucket(client, 'live-restore');
    const output = backup.output as { snapshotId: string; status: string };
    const restore = await runRestoreLocally(
      {
        snapshot: output.snapshotId,
        target: { bucket: 'live-restore', endpoint: s3.endpoint, region: s3.region },
        switchRegistry: false,
      },
      { deps },
    );
    // Assess
    expect(pushed).toBeGreaterThan(0);
    expect(backup.status).toBe('SUCCEEDED');
    expect(restore.status).toBe('SUCCEEDED');
    const manifest = await resolveSnapshot(deps.vault, output.snapshotId);
    expect(manifest.checks['references']).toMatchObject({ ok: true });
    const catalog = await getJson(
      deps.vault,
      vaultKeys.catalog('regvault/', output.snapshotId),
      catalogSchema,
    );
    const registry = await startRegistry({
      storage: {
        kind: 's3',
        bucket: 'live-restore',
        endpoint: s3.endpoint,
        region: s3.region,
        accessKey: 'k',
        secretKey: 's',
      },
    });
    try {
      const report = await verifyRegistry(
        new RegistryClient(registry.url),
        catalog ?? { repositories: [] },
        { sample: Number.POSITIVE_INFINITY },
      );
      expect(report.problems).toEqual([]);
    } finally {
      await registry.stop();
    }
  });
});

describe('failures', () => {
  it('fails a backup whose objects cannot be read, marking the snapshot failed and naming the keys', async () => {
    // Prepare: a new image in team-1, whose objects cannot be copied
    const layout = await OciLayout.create();
    await layout.addImage('unreadable', [{ seed: 'unreadable-layer', size: 3000 }]);
    await pushImage(layout, 'unreadable', `${registryHost()}/team-1/app-1:v8.8`);
    await layout.remove();
    await s3.injectFaults({
      operation: 'CopyObject',
      status: 403,
      code: 'AccessDenied',
      count: 1000,
      keyPrefix: 'docker/registry/v2/repositories/team-1/',
    });
    // Act
    const result = await runBackupLocally({}, { deps });
    await s3.clearFaults();
    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.error).toBe('BackupFailed');
    expect(result.cause).toMatch(
      /docker\/registry\/v2\/repositories\/team-1\/.* \(CopyObject AccessDenied/,
    );
    const failed = (await listSnapshots(deps.vault)).filter((m) => m.status === 'failed').at(-1);
    expect(failed?.failures.count).toBeGreaterThan(0);
    expect(failed?.failures.sample[0]?.key).toMatch(
      /^docker\/registry\/v2\/repositories\/team-1\//,
    );
  });

  it('fails a backup on a source blob whose bytes do not match its digest, naming it', async () => {
    // Prepare
    const claimed = createHash('sha256').update('the bytes the key promises').digest('hex');
    const key = `docker/registry/v2/blobs/sha256/${claimed.slice(0, 2)}/${claimed}/data`;
    await putObjects(client, 'registry-bucket-restored', [{ key, body: 'other bytes entirely' }]);
    await cluster.waitForReadyPod(30_000);
    // Act
    const result = await runBackupLocally({}, { deps });
    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain(`${key} (CopyObject DigestMismatch`);
    const failed = (await listSnapshots(deps.vault)).filter((m) => m.status === 'failed').at(-1);
    expect(failed?.checks['digests']).toMatchObject({ ok: false });
    expect(failed?.checks['digests']?.detail).toMatch(/1 did not match their digest/);
    expect(
      await listAll(client, 'vault', `regvault/blobs/sha256/${claimed.slice(0, 2)}/${claimed}`),
    ).toEqual(new Map());
    await client.send(new DeleteObjectCommand({ Bucket: 'registry-bucket-restored', Key: key }));
  });

  /** The restore failed, said it rolled back, and the registry serves the earlier restore again. */
  async function expectRolledBackToRestoredBucket(result: { status: string; cause?: string }) {
    expect(result.status).toBe('FAILED');
    expect(result.cause).toMatch(
      /rolled back: the registry is back on s3:\/\/registry-bucket-restored and serves again/,
    );
    expect((await profile().discover()).storage.bucket).toBe('registry-bucket-restored');
    const report = await verifyRegistry(new RegistryClient(cluster.registryUrl), images, {
      sample: 2,
    });
    expect(report.problems).toEqual([]);
  }

  it('rolls back a restore whose registry never becomes ready, and the registry serves the old bucket again', async () => {
    // Prepare: keys under names regvault reads but the registry operator does not
    cluster.server.store.create(BuiltIn.secrets, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'operator-cannot-read', namespace: 'cpaas-system' },
      type: 'Opaque',
      data: {
        accessKey: Buffer.from(s3.credentials.accessKeyId).toString('base64'),
        secretKey: Buffer.from(s3.credentials.secretAccessKey).toString('base64'),
      },
    });
    await createBucket(client, 'never-ready');
    // Act
    const result = await runRestoreLocally(
      {
        target: {
          bucket: 'never-ready',
          endpoint: s3.endpoint,
          region: s3.region,
          secretName: 'operator-cannot-read',
        },
        rolloutTimeoutSeconds: 15,
      },
      { deps, waitMs: 250 },
    );
    // Assess
    await expectRolledBackToRestoredBucket(result);
  });

  it('rolls back a switch whose patch applied but whose answer was lost', async () => {
    // Prepare: the API server applies the next ModuleInfo patch, then drops the connection.
    await createBucket(client, 'answer-lost');
    cluster.server.loseAnswers({ verb: 'patch', resource: 'moduleinfos', count: 1 });
    // Act
    const result = await runRestoreLocally(
      {
        target: restoreTarget('answer-lost'),
        rolloutTimeoutSeconds: 30,
      },
      { deps, waitMs: 250 },
    );
    // Assess
    await expectRolledBackToRestoredBucket(result);
  });

  it('keeps what the registry used before the first patch when the switch step runs again', async () => {
    // Prepare: a resolved restore, switched once, as a Step Functions retry would see it.
    await createBucket(client, 'switch-twice');
    const state = await resolveRestore(
      {
        target: restoreTarget('switch-twice'),
      },
      deps,
    );
    const first = await switchRegistry(state, deps);
    // Act
    const again = await switchRegistry(state, deps);
    const rollback = await rollbackRestore(again, 60, deps);
    // Assess
    expect(first).toMatchObject({
      changed: true,
      previous: { bucket: 'registry-bucket-restored' },
    });
    expect(again.changed).toBe(true);
    expect(again.previous).toEqual(first.previous);
    expect(again.podsBefore).toEqual(first.podsBefore);
    expect(rollback.ok).toBe(true);
    expect((await profile().discover()).storage.bucket).toBe('registry-bucket-restored');
  });

  it('rejects bad restore input, naming every field, and writes nothing', async () => {
    // Prepare
    const before = await listAll(client, 'vault');
    // Act
    const result = await runRestoreLocally(
      { snapshot: 'yesterday', target: { bucket: 'Not_A_Bucket' }, rollbackOnFailure: 'yes' },
      { deps },
    );
    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain('snapshot: a snapshot id');
    expect(result.cause).toContain('target.bucket: a bucket name');
    expect(result.cause).toContain('target.region');
    expect(result.cause).toContain('rollbackOnFailure');
    expect(await listAll(client, 'vault')).toEqual(before);
  });

  it('rejects bad backup input, naming every field, and writes nothing', async () => {
    // Prepare
    const before = await listAll(client, 'vault');
    // Act
    const result = await runBackupLocally(
      { concurrency: 0, ttlDays: -1, source: { bucket: 'Bad_Bucket' } },
      { deps },
    );
    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain('concurrency');
    expect(result.cause).toContain('ttlDays');
    expect(result.cause).toContain('source.bucket');
    expect(await listAll(client, 'vault')).toEqual(before);
  });

  it('fails a backup whose registry Secret is missing before writing anything to the vault', async () => {
    // Prepare: a second, unlabelled ModuleInfo naming a Secret that does not exist.
    const { group, version } = cluster.server.moduleInfo;
    cluster.server.store.create(cluster.server.moduleInfo, {
      apiVersion: `${group}/${version}`,
      kind: 'ModuleInfo',
      metadata: { name: 'registry-without-secret' },
      spec: {
        config: {
          s3storage: {
            bucket: 'registry',
            regionEndpoint: s3.endpoint,
            region: s3.region,
            secretName: 'no-such-secret',
          },
        },
      },
    });
    const broken = createLocalDeps({
      vault: { location: deps.vault.location, credentials: s3.credentials },
      kube: { path: cluster.kubeconfigPath },
      profileSettings: { moduleInfoName: 'registry-without-secret' },
    });
    const before = await listAll(client, 'vault');
    // Act
    const result = await runBackupLocally({}, { deps: broken });
    broken.close();
    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain('no-such-secret');
    expect(await listAll(client, 'vault')).toEqual(before);
  });
});
