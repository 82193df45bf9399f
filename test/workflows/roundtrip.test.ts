import { createHash } from 'node:crypto';
import { DeleteBucketCommand, DeleteObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { CreateQueueCommand, SQSClient } from '@aws-sdk/client-sqs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
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
import { resolveRestore, switchRegistry } from '../../functions/commons/workflows/restore.ts';
import { rollbackRestore } from '../../functions/commons/workflows/rollback.ts';
import {
  OciLayout,
  type PopulatedRegistry,
  populateRegistry,
  pullImage,
  pushImage,
  pushOneLayerImage,
} from '../../sandbox/images/index.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import { startRegistry } from '../../sandbox/registry/index.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import {
  clientFor,
  createBucket,
  deleteKeys,
  listAll,
  putObjects,
  vaultDeps,
} from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let cluster: FakeCluster;
let deps: WorkflowDeps & { close(): void };
/** What beforeAll pushed: the registry serves it in every test (tests that push more push other tags). */
let images: PopulatedRegistry;
let sqs: SQSClient;
let queueUrl: string;

const registryHost = () => new URL(cluster.registryUrl).host;
const profile = () => acpProfile(loadKubeConfig({ path: cluster.kubeconfigPath }));
/** The bucket the registry serves from now: a restore switches it. */
const currentBucket = async () => (await profile().discover()).storage.bucket;

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
  deps = vaultDeps(s3, 'vault', 'regvault/', {
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
  await deleteKeys(client, bucket, [...(await listAll(client, bucket)).keys()]);
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

/** Pushes an image of one layer to `reference` on the registry; returns its digest. */
const pushOneLayer = (reference: string, name: string, size: number): Promise<string> =>
  pushOneLayerImage(`${registryHost()}/${reference}`, `${name}-layer`, size);

/** Backs up the registry the cluster runs and returns the snapshot id; the backup must complete. */
async function backUp(): Promise<string> {
  const result = await runBackupLocally({}, { deps });
  expect(result.cause).toBeUndefined();
  const output = result.output as { snapshotId: string; status: string };
  expect(output.status).toBe('complete');
  return output.snapshotId;
}

/** `repositories` with one more tag. */
const withTag = (
  repositories: PopulatedRegistry['repositories'],
  name: string,
  tag: string,
  digest: string,
) => repositories.map((r) => (r.name === name ? { ...r, tags: { ...r.tags, [tag]: digest } } : r));

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
  it('backs up every object through SQS copy workers into a complete snapshot', async () => {
    // Prepare
    const bucket = await currentBucket();
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
    const sourceKeys = await listAll(client, bucket);
    expect(output.objects).toBe(sourceKeys.size);
    const manifest = await resolveSnapshot(deps.vault, output.snapshotId);
    expect(manifest.checks['references']?.ok).toBe(true);
    expect(manifest.clusterFiles).toEqual(['moduleinfo-image-registry.yaml']);
    const inventory = await readInventory(deps.vault, manifest);
    expect(new Set(inventory.map((r) => r.key))).toEqual(new Set(sourceKeys.keys()));
    expect(result.messages).toBeGreaterThan(manifest.inventory.parts.length);
  });

  it('copies only the new objects on the next backup after one more push', async () => {
    // Prepare: a backup of the registry as it is, then one more image
    await backUp();
    await pushOneLayer('team-0/app-0:v9.9', 'extra', 5000);
    const before = await listAll(client, await currentBucket());
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
  });

  it('restores the latest snapshot into a new bucket, switches the registry and serves every image digest for digest', async () => {
    // Prepare: one more image, a backup holding it, then the disaster
    const latest = await pushOneLayer('team-0/app-0:v9.8', 'latest', 5000);
    const expected = withTag(images.repositories, 'team-0/app-0', 'v9.8', latest);
    await backUp();
    await emptyAndDeleteBucket(await currentBucket());
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
    expect(catalog.sort()).toEqual(expected.map((r) => r.name).sort());
    expect(await pullAll(registryHost(), expected)).toEqual(expectedDigests(expected));
  });

  it('restores the first snapshot too, as it was', async () => {
    // Prepare: a snapshot, one more image, and a later snapshot holding it
    const firstSnapshot = await backUp();
    await pushOneLayer('team-0/app-0:v9.7', 'later', 5000);
    await backUp();
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
        catalog?.repositories.find((r) => r.name === 'team-0/app-0')?.tags['v9.7'],
      ).toBeUndefined();
    } finally {
      await registry.stop();
    }
  });
});

describe('a backup while images are being pushed', () => {
  // The other tests expect the repositories beforeAll pushed and no others.
  afterEach(async () => {
    const bucket = await currentBucket();
    const pushed = await listAll(client, bucket, 'docker/registry/v2/repositories/live/');
    await deleteKeys(client, bucket, [...pushed.keys()]);
  });

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
  // The restores that fail need a complete snapshot to start from.
  beforeAll(async () => {
    await backUp();
  });

  it('fails a backup whose objects cannot be read, marking the snapshot failed and naming the keys', async () => {
    // Prepare: a new image in team-1, whose objects cannot be copied
    await pushOneLayer('team-1/app-1:v8.8', 'unreadable', 3000);
    await s3.injectFaults({
      operation: 'CopyObject',
      status: 403,
      code: 'AccessDenied',
      count: 1000,
      keyPrefix: 'docker/registry/v2/repositories/team-1/',
    });
    // Act
    const result = await runBackupLocally({}, { deps }).finally(() => s3.clearFaults());
    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.error).toBe('ObjectsFailed');
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
    const bucket = await currentBucket();
    await putObjects(client, bucket, [{ key, body: 'other bytes entirely' }]);
    await cluster.waitForReadyPod(30_000);
    // Act
    const result = await runBackupLocally({}, { deps }).finally(() =>
      client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key })),
    );
    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain(`${key} (CopyObject DigestMismatch`);
    const failed = (await listSnapshots(deps.vault)).filter((m) => m.status === 'failed').at(-1);
    expect(failed?.checks['digests']).toMatchObject({ ok: false });
    expect(failed?.checks['digests']?.detail).toMatch(/1 did not match their digest/);
    expect(
      await listAll(client, 'vault', `regvault/blobs/sha256/${claimed.slice(0, 2)}/${claimed}`),
    ).toEqual(new Map());
  });

  /** The restore failed, said it rolled back, and the registry serves `bucket`, the one it used before, again. */
  async function expectRolledBackTo(bucket: string, result: { status: string; cause?: string }) {
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain(
      `rolled back: the registry is back on s3://${bucket} and serves again`,
    );
    expect(await currentBucket()).toBe(bucket);
    const report = await verifyRegistry(new RegistryClient(cluster.registryUrl), images, {
      sample: 2,
    });
    expect(report.problems).toEqual([]);
  }

  it('rolls back a restore whose registry never becomes ready, and the registry serves the old bucket again', async () => {
    // Prepare: keys under names regvault reads but the registry operator does not
    const before = await currentBucket();
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
    await expectRolledBackTo(before, result);
  });

  it('rolls back a switch whose patch applied but whose answer was lost', async () => {
    // Prepare: the API server applies the next ModuleInfo patch, then drops the connection.
    const before = await currentBucket();
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
    await expectRolledBackTo(before, result);
  });

  it('keeps what the registry used before the first patch when the switch step runs again', async () => {
    // Prepare: a resolved restore, switched once, as a Step Functions retry would see it.
    const before = await currentBucket();
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
    expect(first).toMatchObject({ changed: true, previous: { bucket: before } });
    expect(again.changed).toBe(true);
    expect(again.previous).toEqual(first.previous);
    expect(again.podsBefore).toEqual(first.podsBefore);
    expect(rollback.ok).toBe(true);
    expect(await currentBucket()).toBe(before);
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
    const result = await runBackupLocally({}, { deps: broken }).finally(() => {
      broken.close();
      cluster.server.store.delete(cluster.server.moduleInfo, undefined, 'registry-without-secret');
    });
    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain('no-such-secret');
    expect(await listAll(client, 'vault')).toEqual(before);
  });
});
