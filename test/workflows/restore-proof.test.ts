/**
 * A restore never switches the registry onto data it has not proven: damage
 * in the vault (a flipped byte, a truncated or deleted blob, a corrupt
 * manifest) stops it before the ModuleInfo is patched, with a message that
 * names the digest and where it lives, and fsck finds the same damage. On a
 * server that returns SHA-256 checksums for copies and on one that does not.
 * A verification that fails after the switch rolls the registry back.
 */
import { DeleteObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { loadKubeConfig } from '../../functions/commons/cluster/kube.ts';
import { createLocalDeps } from '../../functions/commons/local/deps.ts';
import { runBackupLocally, runRestoreLocally } from '../../functions/commons/local/runner.ts';
import { acpProfile } from '../../functions/commons/registry/acp.ts';
import { RegistryClient } from '../../functions/commons/registry/client.ts';
import { fsckRegistry } from '../../functions/commons/registry/fsck.ts';
import { bucketSource } from '../../functions/commons/registry/fsck-sources.ts';
import { blobKeyOf, REGISTRY_V2 } from '../../functions/commons/registry/layout.ts';
import { catalogSchema, vaultKeys } from '../../functions/commons/vault/format.ts';
import { snapshotSource } from '../../functions/commons/vault/snapshot-source.ts';
import { getJson, resolveSnapshot } from '../../functions/commons/vault/store.ts';
import type { StepProgress, WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import { populateRegistry } from '../../sandbox/images/index.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { put } from '../integrity/support.ts';
import { clientFor, createBucket, readObject, vaultDeps } from '../support/s3.ts';

const ROOT = 'regvault/';

/** One damage to a vault object, and how to undo it. */
interface Damage {
  readonly name: string;
  /** Which blob of the chosen image it hits. */
  readonly target: 'layer' | 'manifest';
  /** Whether listing-based (plain) fsck sees it, or only deep fsck. */
  readonly plainFsckFinds: boolean;
  readonly message: RegExp;
  apply(original: Buffer): Buffer | undefined;
}

const damages: Damage[] = [
  {
    name: 'a layer blob with one byte flipped',
    target: 'layer',
    plainFsckFinds: false,
    message: /corrupt in the vault/,
    apply: (original) => {
      const bytes = Buffer.from(original);
      const at = Math.floor(bytes.length / 2);
      bytes[at] = (bytes[at] ?? 0) ^ 0x01;
      return bytes;
    },
  },
  {
    name: 'a truncated layer blob',
    target: 'layer',
    plainFsckFinds: true,
    message: /corrupt in the vault/,
    apply: (original) => original.subarray(0, original.length - 100),
  },
  {
    name: 'a layer blob deleted from the pool',
    target: 'layer',
    plainFsckFinds: true,
    message: /missing in the vault/,
    apply: () => undefined,
  },
  {
    name: 'a manifest blob with one byte flipped',
    target: 'manifest',
    plainFsckFinds: true,
    message: /corrupt in the vault/,
    apply: (original) => {
      const bytes = Buffer.from(original);
      const at = original.indexOf('"layers"') + 2;
      bytes[at] = (bytes[at] ?? 0) ^ 0x01;
      return bytes;
    },
  },
];

describe.each([
  { checksums: true, label: 'returns SHA-256 checksums' },
  { checksums: false, label: 'returns no checksums' },
])('restoring from a damaged vault on a server that $label', ({ checksums }) => {
  let s3: S3ServerHandle;
  let client: S3Client;
  let cluster: FakeCluster;
  let deps: WorkflowDeps & { close(): void };
  let snapshotId = '';
  /** The image every damage hits: its repository, tag, manifest and its own (unshared) layer. */
  const victim = { repository: '', tag: '', manifest: '', layer: '' };
  let targets = 0;

  beforeAll(async () => {
    s3 = await startS3Server({ name: `s3-proof-${checksums}`, computeChecksums: checksums });
    client = clientFor(s3);
    await createBucket(client, 'registry');
    await createBucket(client, 'vault');
    cluster = await startFakeCluster({ tls: true });
    await seedLiveRegistry();
    await populateRegistry(new URL(cluster.registryUrl).host, {
      repositories: 3,
      tagsPerRepository: 2,
      layerSizes: [3000, 20_000],
    });
    deps = vaultDeps(s3, 'vault', ROOT, {
      kube: { path: cluster.kubeconfigPath },
      registryUrl: cluster.registryUrl,
    });
    const backup = await runBackupLocally({}, { deps });
    expect(backup.cause).toBeUndefined();
    snapshotId = (backup.output as { snapshotId: string }).snapshotId;
    const catalog = await getJson(deps.vault, vaultKeys.catalog(ROOT, snapshotId), catalogSchema);
    const repository = catalog?.repositories[1];
    const [tag, manifest] = Object.entries(repository?.tags ?? {})[1] ?? [];
    if (repository === undefined || tag === undefined || manifest === undefined)
      throw new Error('the snapshot catalog has no second tag of a second repository');
    const document = JSON.parse(
      (await readObject(client, 'vault', vaultKeys.blob(ROOT, manifest))).toString('utf8'),
    ) as { layers: Array<{ digest: string }> };
    Object.assign(victim, {
      repository: repository.name,
      tag,
      manifest,
      layer: document.layers.at(-1)?.digest ?? '',
    });
  }, 240_000);

  afterAll(async () => {
    deps?.close();
    client?.destroy();
    await cluster?.stop();
    await s3?.stop();
  });

  const profile = () => acpProfile(loadKubeConfig({ path: cluster.kubeconfigPath }));

  /** The registry on its live bucket "registry", one Ready pod. */
  async function seedLiveRegistry(): Promise<void> {
    await cluster.seedAcpRegistry({
      bucket: 'registry',
      endpoint: s3.endpoint,
      region: s3.region,
      accessKey: s3.credentials.accessKeyId,
      secretKey: s3.credentials.secretAccessKey,
    });
    await cluster.waitForReadyPod(30_000);
  }

  /** Restores the snapshot into a new bucket on the test's server, switching with the registry's own Secret. */
  async function restoreIntoNewBucket(
    input: Record<string, unknown>,
    options: Partial<Parameters<typeof runRestoreLocally>[1]> = {},
  ) {
    const bucket = `restored-${++targets}`;
    await createBucket(client, bucket);
    const result = await runRestoreLocally(
      {
        snapshot: snapshotId,
        target: {
          bucket,
          endpoint: s3.endpoint,
          region: s3.region,
          secretName: 'registry-s3-secret',
        },
        ...input,
      },
      { deps, waitMs: 200, ...options },
    );
    return { bucket, result };
  }

  /** Damages one vault blob for the length of `body`, then puts it back as it was. */
  async function withDamage(damage: Damage, body: (digest: string) => Promise<void>) {
    const digest = damage.target === 'layer' ? victim.layer : victim.manifest;
    const key = vaultKeys.blob(ROOT, digest);
    const original = await readObject(client, 'vault', key);
    const damaged = damage.apply(original);
    if (damaged === undefined)
      await client.send(new DeleteObjectCommand({ Bucket: 'vault', Key: key }));
    else await put(client, 'vault', key, damaged);
    try {
      await body(digest);
    } finally {
      await put(client, 'vault', key, original);
    }
  }

  it.each(damages)('stops before the switch on $name, naming the digest', async (damage) => {
    await withDamage(damage, async (digest) => {
      // Prepare
      const podBefore = await cluster.waitForReadyPod();
      // Act
      const { result } = await restoreIntoNewBucket({});
      // Assess: refused with the digest, where it lives, who uses it and what to run next
      expect(result.status).toBe('FAILED');
      expect(result.cause).toContain(digest);
      expect(result.cause).toMatch(damage.message);
      expect(result.cause).toContain(vaultKeys.blob(ROOT, digest));
      expect(result.cause).toContain(`${victim.repository}:${victim.tag}`);
      expect(result.cause).toContain(`regvault fsck --deep --snapshot ${snapshotId}`);
      expect(result.cause).toMatch(/the cluster is unchanged/);
      // the registry was never switched and still serves the live bucket
      expect((await profile().discover()).storage.bucket).toBe('registry');
      expect(await cluster.waitForReadyPod()).toBe(podBefore);
      const served = await new RegistryClient(cluster.registryUrl).catalog();
      expect(served).toContain(victim.repository);
    });
  });

  it.each(damages)('fsck of the snapshot reports $name', async (damage) => {
    await withDamage(damage, async (digest) => {
      // Prepare
      const manifest = await resolveSnapshot(deps.vault, snapshotId);
      // Act
      const plain = await fsckRegistry(snapshotSource(deps.vault, manifest));
      const deep = await fsckRegistry(snapshotSource(deps.vault, manifest), { deep: true });
      // Assess
      expect(deep.ok).toBe(false);
      expect(deep.problems.join('\n')).toContain(digest);
      expect(deep.problems.join('\n')).toMatch(damage.message);
      expect(deep.problems.join('\n')).toContain(`${victim.repository}:${victim.tag}`);
      expect(plain.ok).toBe(!damage.plainFsckFinds);
      if (damage.plainFsckFinds) expect(plain.problems.join('\n')).toContain(digest);
    });
  });

  it('rolls the registry back when verification after the switch fails, and says why', async () => {
    // Prepare: the target loses a layer once the registry has been switched to it
    let lost: Promise<unknown> | undefined;
    // Act
    const { result } = await restoreIntoNewBucket(
      { pullSample: 'all' },
      {
        onState: (state) => {
          if (state === 'CheckRollout' && lost === undefined)
            lost = client.send(
              new DeleteObjectCommand({
                Bucket: `restored-${targets}`,
                Key: `${REGISTRY_V2}${blobKeyOf(victim.layer)}`,
              }),
            );
        },
      },
    );
    await lost;
    // Assess: a distinct end, the reason, and the registry back on its bucket, serving
    expect(result.status).toBe('FAILED');
    expect(result.error).toBe('RestoreRolledBack');
    expect(result.cause).toMatch(/verification: .*team-\d+\/app-\d+:v1\.\d/);
    expect(result.cause).toContain(victim.layer);
    expect(result.cause).toMatch(
      /rolled back: the registry is back on s3:\/\/registry and serves again/,
    );
    expect((await profile().discover()).storage.bucket).toBe('registry');
    const registry = new RegistryClient(cluster.registryUrl);
    const pulled = await registry.pull(victim.repository, victim.tag);
    expect(pulled.digest).toBe(victim.manifest);
  });

  it('says a restore with --skip-blob-hashing is not proven, and hashes nothing', async () => {
    // Act
    const { result } = await restoreIntoNewBucket({ switchRegistry: false, skipBlobHashing: true });
    // Assess
    expect(result.status).toBe('SUCCEEDED');
    const proof = (
      result.output as { proof: { proven: boolean; message: string; blobs: { hashed: number } } }
    ).proof;
    expect(proof.proven).toBe(false);
    expect(proof.blobs.hashed).toBe(0);
    expect(proof.message).toMatch(/NOT proven/);
  });

  it('reports the proof in blobs and bytes and the verification in repositories and tags', async () => {
    // Prepare: the same dependencies, with a progress listener
    const events: StepProgress[] = [];
    const watched = createLocalDeps({
      vault: { location: deps.vault.location, credentials: s3.credentials },
      kube: { path: cluster.kubeconfigPath },
      registryUrl: cluster.registryUrl,
      onProgress: (event) => events.push(event),
    });
    try {
      // Act
      const { result } = await restoreIntoNewBucket({ pullSample: 1 }, { deps: watched });
      // Assess: each step's last event says everything was done, in counted totals
      expect(result.cause).toBeUndefined();
      const proof = events.filter((e) => e.step === 'prove').at(-1);
      const verify = events.filter((e) => e.step === 'verify').at(-1);
      // with server checksums the copy checked every blob, so none is left to hash
      if (checksums) expect(proof?.blobs?.total).toBe(0);
      else expect(proof?.blobs?.total).toBeGreaterThan(0);
      expect(proof?.blobs?.done).toBe(proof?.blobs?.total);
      expect(proof?.bytes?.done).toBe(proof?.bytes?.total);
      // the run record counts the bytes it hashed, not the whole target
      const recorded = (result.output as { proof: { blobs: { hashedBytes: number } } }).proof;
      expect(recorded.blobs.hashedBytes).toBe(proof?.bytes?.done);
      expect(verify?.repositories).toEqual({ done: 3, total: 3 });
      expect(verify?.tags).toEqual({ done: 6, total: 6 });
      const verified = (result.output as { verify: { blobsServed: number; blobsChecked: number } })
        .verify;
      expect(verified.blobsServed).toBeGreaterThan(6);
      expect(verified.blobsServed).toBe(verified.blobsChecked);
    } finally {
      watched.close();
      // the registry goes back to the live bucket for the other tests
      await seedLiveRegistry();
    }
  });

  it('fsck of the restore target blames the target, not the vault, for a blob missing there', async () => {
    // Prepare: a proven restore, then a blob lost in the target
    const { bucket: target, result } = await restoreIntoNewBucket({ switchRegistry: false });
    expect(result.cause).toBeUndefined();
    expect((result.output as { proof: { proven: boolean } }).proof.proven).toBe(true);
    await client.send(
      new DeleteObjectCommand({ Bucket: target, Key: `${REGISTRY_V2}${blobKeyOf(victim.layer)}` }),
    );
    // Act
    const report = await fsckRegistry(bucketSource(client, target, ''));
    // Assess
    expect(report.ok).toBe(false);
    expect(report.problems.join('\n')).toMatch(
      new RegExp(`missing in the bucket.*${victim.layer.slice(7)}`),
    );
  });
});
