import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { parse } from 'yaml';
import { KubeApiError, loadKubeConfig } from '../../functions/commons/cluster/kube.ts';
import { createCopyContext, prefixMapper } from '../../functions/commons/copy/context.ts';
import { runPlan } from '../../functions/commons/copy/engine.ts';
import { planShards } from '../../functions/commons/copy/plan.ts';
import { emptyTarget } from '../../functions/commons/copy/target-state.ts';
import { acpProfile, acpSettingsSchema } from '../../functions/commons/registry/acp.ts';
import { RegistryClient } from '../../functions/commons/registry/client.ts';
import { registryCopyPolicy } from '../../functions/commons/registry/copy-policy.ts';
import type { StorageRef } from '../../functions/commons/registry/profile.ts';
import { switchVerifyRollback } from '../../functions/commons/registry/rollout.ts';
import { verifyRegistry } from '../../functions/commons/registry/verify.ts';
import { type PopulatedRegistry, populateRegistry } from '../../sandbox/images/index.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { NOTHING_ANSWERS } from '../../sandbox/process.ts';
import { startRegistry } from '../../sandbox/registry/index.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { fakeRegistries } from '../kube/fake-registry.ts';
import { clientFor, createBucket, listAll, locationOn } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-acp' });
  client = clientFor(s3);
});

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
});

const seedFor = (bucket: string) => ({
  bucket,
  endpoint: s3.endpoint,
  region: s3.region,
  accessKey: s3.credentials.accessKeyId,
  secretKey: s3.credentials.secretAccessKey,
});

const storageOf = (bucket: string): StorageRef => ({
  bucket,
  regionEndpoint: s3.endpoint,
  region: s3.region,
  secretName: 'registry-s3-secret',
  rootDirectory: '',
});

async function copyBucket(from: string, to: string): Promise<void> {
  await createBucket(client, to);
  const source = locationOn(s3, from);
  const target = locationOn(s3, to);
  const ctx = createCopyContext({
    source: { location: source, client },
    target: { location: target, client },
    mapKey: prefixMapper(source, target),
    targetState: emptyTarget,
    policy: registryCopyPolicy,
  });
  const outcome = await runPlan(ctx, await planShards(client, from, '', registryCopyPolicy));
  expect(outcome.ok).toBe(true);
}

describe('discovering the registry from its ModuleInfo', () => {
  let cluster: FakeCluster;
  const profile = () => acpProfile(loadKubeConfig({ path: cluster.kubeconfigPath }));
  const moduleInfos = () => cluster.server.moduleInfo;

  beforeAll(async () => {
    cluster = await startFakeCluster({ tls: true, startRegistry: fakeRegistries().start });
  });
  afterAll(async () => cluster?.stop());

  async function resetCluster(): Promise<void> {
    const store = cluster.server.store;
    for (const item of store.list(moduleInfos(), undefined))
      store.delete(moduleInfos(), undefined, item.metadata.name);
    await cluster.seedAcpRegistry(seedFor('registry-bucket'));
  }

  it('reads bucket, endpoint, region and Secret from the labelled ModuleInfo and decodes the keys', async () => {
    // Prepare
    await resetCluster();
    // Act
    const found = await profile().discover();
    const keys = await profile().readStorageKeys(found.storage.secretName);
    // Assess
    expect(found.resourceName).toBe('image-registry');
    expect(found.storage).toEqual(storageOf('registry-bucket'));
    expect(keys).toEqual({
      accessKeyId: s3.credentials.accessKeyId,
      secretAccessKey: s3.credentials.secretAccessKey,
    });
  });

  it('captures the ModuleInfo without server-set fields, and the Secret only when asked', async () => {
    // Prepare
    await resetCluster();
    // Act
    const plain = await profile().captureConfig({ includeSecret: false });
    const withSecret = await profile().captureConfig({ includeSecret: true });
    // Assess
    expect(plain.map((file) => file.name)).toEqual(['moduleinfo-image-registry.yaml']);
    const document = parse(plain[0]?.yaml ?? '') as {
      metadata: Record<string, unknown>;
      status?: unknown;
      spec: unknown;
    };
    expect(document.status).toBeUndefined();
    for (const field of [
      'uid',
      'resourceVersion',
      'creationTimestamp',
      'generation',
      'managedFields',
    ]) {
      expect(document.metadata[field]).toBeUndefined();
    }
    expect(document.spec).toMatchObject({ config: { s3storage: { bucket: 'registry-bucket' } } });
    expect(withSecret.map((file) => file.name)).toEqual([
      'moduleinfo-image-registry.yaml',
      'secret-registry-s3-secret.yaml',
    ]);
  });

  it.each([
    {
      case: 'no ModuleInfo carries the label',
      change: async () => {
        const store = cluster.server.store;
        const item = store.get(moduleInfos(), undefined, 'image-registry');
        if (item === undefined) throw new Error('seeded ModuleInfo missing');
        store.replace(moduleInfos(), { ...item, metadata: { ...item.metadata, labels: {} } });
      },
      message:
        /no ModuleInfo is labelled cpaas\.io\/module-name=image-registry; ModuleInfos found: image-registry/,
    },
    {
      case: 'two ModuleInfos carry the label',
      change: async () => {
        await cluster.seedAcpRegistry({ ...seedFor('other-bucket'), name: 'image-registry-copy' });
      },
      message: /2 ModuleInfos are labelled .*image-registry.*image-registry-copy.*--module-info/,
    },
    {
      case: 'the storage block lacks the bucket',
      change: async () => {
        const store = cluster.server.store;
        const item = store.get(moduleInfos(), undefined, 'image-registry') as
          | { spec: { config: { s3storage: Record<string, unknown> } } }
          | undefined;
        if (item === undefined) throw new Error('seeded ModuleInfo missing');
        delete item.spec.config.s3storage['bucket'];
        store.replace(moduleInfos(), item as never);
      },
      message: /bucket/,
    },
  ])('refuses when $case, naming what it found', async ({ change, message }) => {
    // Prepare
    await resetCluster();
    await change();
    // Act
    const attempt = profile().discover();
    // Assess
    await expect(attempt).rejects.toThrow(message);
  });

  it('names the missing Secret and the namespace it looked in', async () => {
    // Prepare
    await resetCluster();
    // Act
    const attempt = profile().readStorageKeys('no-such-secret');
    // Assess
    await expect(attempt).rejects.toThrow(
      /secrets.*no-such-secret.*not found|no-such-secret.*cpaas-system/s,
    );
  });

  it('names the keys a Secret holds when none of them is a usable S3 key', async () => {
    // Prepare
    await resetCluster();
    await cluster.seedAcpRegistry({
      ...seedFor('registry-bucket'),
      secretName: 'odd-keys',
      secretKeyNames: { accessKey: 'user', secretKey: 'pass' },
    });
    // Act
    const attempt = profile().readStorageKeys('odd-keys');
    // Assess
    await expect(attempt).rejects.toThrow(
      /odd-keys has no usable S3 keys: it holds user, pass; expected access-key-id and secret-access-key/,
    );
  });

  it.each([
    { names: 'the usual alternative names', accessKey: 'accessKey', secretKey: 'secretKey' },
    {
      names: "Alibaba Cloud's backup center names",
      accessKey: 'access-key-id',
      secretKey: 'access-key-secret',
    },
    {
      names: "the Harbor chart's names",
      accessKey: 'REGISTRY_STORAGE_S3_ACCESSKEY',
      secretKey: 'REGISTRY_STORAGE_S3_SECRETKEY',
    },
  ])('reads keys stored under $names', async ({ accessKey, secretKey }) => {
    // Prepare
    await resetCluster();
    await cluster.seedAcpRegistry({
      ...seedFor('registry-bucket'),
      secretName: 'alt-keys',
      secretKeyNames: { accessKey, secretKey },
    });
    // Act
    const keys = await profile().readStorageKeys('alt-keys');
    // Assess
    expect(keys).toEqual({
      accessKeyId: s3.credentials.accessKeyId,
      secretAccessKey: s3.credentials.secretAccessKey,
    });
  });

  it('reads keys under the names the secretKeyNames setting gives, and only those', async () => {
    // Prepare
    await resetCluster();
    await cluster.seedAcpRegistry({
      ...seedFor('registry-bucket'),
      secretName: 'own-names',
      secretKeyNames: { accessKey: 'user', secretKey: 'pass' },
    });
    const named = acpProfile(
      loadKubeConfig({ path: cluster.kubeconfigPath }),
      acpSettingsSchema.parse({ secretKeyNames: { accessKey: ['user'], secretKey: ['pass'] } }),
    );
    const narrowed = acpProfile(
      loadKubeConfig({ path: cluster.kubeconfigPath }),
      acpSettingsSchema.parse({ secretKeyNames: { accessKey: ['id-only'] } }),
    );
    // Act
    const keys = await named.readStorageKeys('own-names');
    const refused = narrowed.readStorageKeys('registry-s3-secret');
    // Assess
    expect(keys.secretAccessKey).toBe(s3.credentials.secretAccessKey);
    await expect(refused).rejects.toThrow(/expected id-only and secret-access-key.*secretKeyNames/);
  });

  it('refuses a secretKeyNames setting with an empty list, naming the field', () => {
    // Act
    const parsed = acpSettingsSchema.safeParse({ secretKeyNames: { secretKey: [] } });
    // Assess
    expect(parsed.success).toBe(false);
    expect(parsed.error?.issues[0]?.path).toEqual(['secretKeyNames', 'secretKey']);
  });

  it('explains a refused patch with the RBAC rule that would allow it', async () => {
    // Prepare
    await resetCluster();
    cluster.server.setForbidden([{ verb: 'patch', resource: 'moduleinfos' }]);
    // Act
    const attempt = profile().switchStorage(storageOf('elsewhere'));
    // Assess
    try {
      await expect(attempt).rejects.toThrow(KubeApiError);
      await expect(attempt).rejects.toThrow(
        /refused to patch moduleinfos[\s\S]*apiGroups: \["cluster\.alauda\.io"\][\s\S]*verbs: \["patch"\]/,
      );
    } finally {
      cluster.server.setForbidden([]);
    }
  });

  it('retries a switch once with a fresh read when the ModuleInfo changed under it, keeping that change', async () => {
    // Prepare: someone annotates the ModuleInfo between regvault's read and its
    // patch (when it lists the pods), so the patch's resourceVersion is stale.
    await resetCluster();
    const store = cluster.server.store;
    const list = store.list.bind(store);
    let edits = 0;
    store.list = ((kind, namespace, ...rest) => {
      const found = list(kind, namespace, ...rest);
      if (kind.resource === 'pods' && edits === 0) {
        edits++;
        const current = store.get(moduleInfos(), undefined, 'image-registry');
        if (current !== undefined)
          store.replace(moduleInfos(), {
            ...current,
            metadata: {
              ...current.metadata,
              annotations: { ...current.metadata.annotations, 'example.com/edited': 'yes' },
            },
          });
      }
      return found;
    }) as typeof store.list;
    // Act
    let result: Awaited<ReturnType<ReturnType<typeof profile>['switchStorage']>>;
    try {
      result = await profile().switchStorage(storageOf('after-conflict'));
    } finally {
      store.list = list;
    }
    // Assess
    expect(edits).toBe(1);
    expect(result.changed).toBe(true);
    const after = store.get(moduleInfos(), undefined, 'image-registry') as unknown as {
      metadata: { annotations?: Record<string, string> };
      spec: { config: { s3storage: { bucket: string } } };
    };
    expect(after.spec.config.s3storage.bucket).toBe('after-conflict');
    expect(after.metadata.annotations?.['example.com/edited']).toBe('yes');
  });

  it('reads the cluster from kubeconfig text, as the Lambdas get it from Secrets Manager', async () => {
    // Prepare
    await resetCluster();
    const { readFile } = await import('node:fs/promises');
    const yaml = await readFile(cluster.kubeconfigPath, 'utf8');
    // Act
    const found = await acpProfile(loadKubeConfig({ yaml })).discover();
    // Assess
    expect(found.storage.bucket).toBe('registry-bucket');
  });

  it('names the API server URL it could not reach', async () => {
    // Prepare
    const { writeFile, mkdtemp } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const path = join(await mkdtemp(join(tmpdir(), 'regvault-kc-')), 'config');
    await writeFile(
      path,
      `apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "${NOTHING_ANSWERS}"}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n`,
    );
    // Act
    const attempt = acpProfile(loadKubeConfig({ path }), acpSettingsSchema.parse({})).discover();
    // Assess
    await expect(attempt).rejects.toThrow(NOTHING_ANSWERS);
  });
});

describe("finding the ModuleInfo's group and version through discovery", () => {
  let cluster: FakeCluster;
  const profileWith = (settings: Record<string, unknown> = {}) =>
    acpProfile(loadKubeConfig({ path: cluster.kubeconfigPath }), acpSettingsSchema.parse(settings));

  beforeAll(async () => {
    // ModuleInfo served under another group and version than ACP's usual ones.
    cluster = await startFakeCluster({
      tls: true,
      startRegistry: fakeRegistries().start,
      moduleInfo: { group: 'modules.example.io', version: 'v1beta2' },
    });
    await cluster.seedAcpRegistry(seedFor('registry-bucket'));
  });
  afterAll(async () => cluster?.stop());

  it('finds the group and version the cluster serves when the settings name none', async () => {
    // Act
    const found = await profileWith().discover();
    const required = await profileWith().requiredObjects();
    // Assess
    expect(found.storage.bucket).toBe('registry-bucket');
    expect(required[0]).toMatchObject({ apiVersion: 'modules.example.io/v1beta2' });
  });

  it('switches through the discovered group and version', async () => {
    // Act
    const result = await profileWith().switchStorage(storageOf('switched-bucket'));
    // Assess
    expect(result.changed).toBe(true);
    expect((await profileWith().discover()).storage.bucket).toBe('switched-bucket');
    await profileWith().switchStorage(storageOf('registry-bucket'));
  });

  it.each([
    {
      case: 'a group the cluster does not serve it in',
      settings: { group: 'cluster.alauda.io' },
      says: 'serves no moduleinfos resource in group cluster.alauda.io',
    },
    {
      case: 'a version the cluster does not serve',
      settings: { group: 'modules.example.io', version: 'v1alpha1' },
      says: 'in group modules.example.io at version v1alpha1',
    },
    {
      case: 'a resource no group serves',
      settings: { plural: 'registrymodules' },
      says: 'serves no registrymodules resource in any API group',
    },
  ])('refuses $case, saying what it looked for and how to set it', async ({ settings, says }) => {
    // Act
    const attempt = profileWith(settings).discover();
    // Assess
    await expect(attempt).rejects.toThrow(says);
    await expect(attempt).rejects.toThrow("set group and version in the acp profile's settings");
  });
});

describe('switching the registry to another bucket', () => {
  let cluster: FakeCluster;
  let images: PopulatedRegistry;
  const profile = () => acpProfile(loadKubeConfig({ path: cluster.kubeconfigPath }));
  const verifyAgainst = (expected: PopulatedRegistry) => () =>
    verifyRegistry(new RegistryClient(cluster.registryUrl), expected, {
      sample: Number.POSITIVE_INFINITY,
    });

  beforeAll(async () => {
    await createBucket(client, 'switch-origin');
    cluster = await startFakeCluster({ tls: true });
    await cluster.seedAcpRegistry(seedFor('switch-origin'));
    await cluster.waitForReadyPod(30_000);
    images = await populateRegistry(new URL(cluster.registryUrl).host, {
      repositories: 2,
      tagsPerRepository: 2,
      multiArch: true,
    });
    await copyBucket('switch-origin', 'switch-copy');
  });
  // Every test starts on switch-origin; seeding what the cluster already runs rolls nothing.
  beforeEach(async () => {
    await cluster.seedAcpRegistry(seedFor('switch-origin'));
    await cluster.waitForReadyPod(30_000);
  });
  afterAll(async () => cluster?.stop());

  it('serves every image from a copied bucket after the switch and the rollout', async () => {
    // Prepare
    const podBefore = await cluster.waitForReadyPod();
    // Act
    const outcome = await switchVerifyRollback(profile(), storageOf('switch-copy'), {
      rollbackOnFailure: true,
      verify: verifyAgainst(images),
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    // Assess
    expect(outcome.error).toBeUndefined();
    expect(outcome.ok).toBe(true);
    expect(outcome.switched?.previous.bucket).toBe('switch-origin');
    expect(outcome.verify?.pulls.every((pull) => pull.ok)).toBe(true);
    expect(await cluster.waitForReadyPod()).not.toBe(podBefore);
    expect((await profile().discover()).storage.bucket).toBe('switch-copy');
  });

  it('is a no-op when the registry already uses that storage', async () => {
    // Act
    const result = await profile().switchStorage(storageOf('switch-origin'));
    // Assess
    expect(result.changed).toBe(false);
  });

  it('fails the rollout on a bucket that does not exist and rolls back to a registry serving every image', async () => {
    // Act
    const outcome = await switchVerifyRollback(profile(), storageOf('no-such-bucket'), {
      rollbackOnFailure: true,
      verify: verifyAgainst(images),
      verifyAfterRollback: verifyAgainst(images),
      timeoutMs: 60_000,
      intervalMs: 250,
    });
    // Assess
    expect(outcome.ok).toBe(false);
    expect(outcome.error).toMatch(/NoSuchBucket/);
    expect(outcome.rollback?.ok).toBe(true);
    expect(outcome.rollback?.restored.bucket).toBe('switch-origin');
    expect(outcome.rollback?.verify?.ok).toBe(true);
    expect((await profile().discover()).storage.bucket).toBe('switch-origin');
  });
});

describe('verifying a registry against what it should serve', () => {
  it('reports a missing tag, a missing blob and a corrupted blob', async () => {
    // Prepare
    await createBucket(client, 'verify-source');
    const origin = await startRegistry({ storage: { kind: 's3', ...s3Storage('verify-source') } });
    const images = await populateRegistry(origin.host, {
      repositories: 3,
      tagsPerRepository: 2,
      sharedBaseSize: 0,
    });
    await origin.stop();
    await copyBucket('verify-source', 'verify-damaged');
    const v2 = 'docker/registry/v2';
    const [first, second, third] = images.repositories;
    if (first === undefined || second === undefined || third === undefined)
      throw new Error('expected three repositories');
    // a missing tag: its links are gone
    for (const key of (
      await listAll(
        client,
        'verify-damaged',
        `${v2}/repositories/${first.name}/_manifests/tags/v1.1/`,
      )
    ).keys()) {
      await client.send(new DeleteObjectCommand({ Bucket: 'verify-damaged', Key: key }));
    }
    // a missing blob and a corrupted blob: the config blobs of two other images
    const manifestOf = async (repository: string, tag: string) => {
      const registry = await startRegistry({
        storage: { kind: 's3', ...s3Storage('verify-source') },
      });
      try {
        return await new RegistryClient(registry.url).pull(repository, tag);
      } finally {
        await registry.stop();
      }
    };
    const secondImage = await manifestOf(second.name, 'v1.0');
    const thirdImage = await manifestOf(third.name, 'v1.0');
    const blobKey = (digest: string) =>
      `${v2}/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data`;
    const missing = secondImage.blobs.at(-1)?.digest ?? '';
    const corrupted = thirdImage.blobs.at(-1)?.digest ?? '';
    await client.send(new DeleteObjectCommand({ Bucket: 'verify-damaged', Key: blobKey(missing) }));
    await client.send(
      new PutObjectCommand({
        Bucket: 'verify-damaged',
        Key: blobKey(corrupted),
        Body: 'not the original bytes',
      }),
    );
    const damaged = await startRegistry({
      storage: { kind: 's3', ...s3Storage('verify-damaged') },
    });
    try {
      // Act
      const report = await verifyRegistry(new RegistryClient(damaged.url), images, {
        sample: Number.POSITIVE_INFINITY,
      });
      // Assess
      expect(report.ok).toBe(false);
      expect(report.tags.missing).toEqual([{ repository: first.name, tag: 'v1.1' }]);
      const failedPulls = report.pulls.filter((pull) => !pull.ok);
      expect(failedPulls.map((pull) => `${pull.repository}:${pull.tag}`).sort()).toEqual([
        `${second.name}:v1.0`,
        `${third.name}:v1.0`,
      ]);
      expect(failedPulls.find((pull) => pull.repository === third.name)?.error).toMatch(
        /sha256|digest/,
      );
      expect(report.problems.join('\n')).toContain(`${first.name}:v1.1`);
      const tagsOf = (name: string) =>
        Object.keys(images.repositories.find((r) => r.name === name)?.tags ?? {}).length;
      expect(report.repositories.find((r) => r.name === first.name)).toEqual({
        name: first.name,
        tags: tagsOf(first.name),
        matched: tagsOf(first.name) - 1,
        missing: 1,
        mismatched: 0,
      });
      expect(report.repositories.map((r) => r.name)).toEqual(
        images.repositories.map((r) => r.name),
      );
    } finally {
      await damaged.stop();
    }
  });
});

function s3Storage(bucket: string) {
  return {
    bucket,
    endpoint: s3.endpoint,
    region: s3.region,
    accessKey: s3.credentials.accessKeyId,
    secretKey: s3.credentials.secretAccessKey,
  };
}
