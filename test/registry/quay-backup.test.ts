/**
 * The quay profile's backup (issue 20), through the local runner on the
 * sandbox Quay Operator: capture, quiesce (3.7+: overrides with the HPA
 * unmanaged; before 3.7: the operator then the components scaled to 0),
 * pg_dump streamed through pods/exec into the snapshot, blobs copied, and
 * the registry resumed exactly as it was, also when the dump fails; bad
 * input refused before anything changes. On Quay's layout (blobs by digest
 * under storage_path, tags in the database) the catalog is the database's
 * live tags, and a blob the database names that the bucket lacks fails the
 * backup, naming it.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { parse } from 'yaml';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import {
  catalogSchema,
  type SnapshotManifest,
  vaultKeys,
} from '../../functions/commons/vault/format.ts';
import { quiesceKey } from '../../functions/commons/vault/runs.ts';
import {
  getBytes,
  getJson,
  listSnapshots,
  readManifest,
} from '../../functions/commons/vault/store.ts';
import { discoverBackup, endDeadExecution } from '../../functions/commons/workflows/backup.ts';
import { exportLayout } from '../../functions/commons/workflows/export.ts';
import { OciLayout, pushImage } from '../../sandbox/images/index.ts';
import { QUAY_REGISTRY } from '../../sandbox/kube/quay-operator.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import { startQuayApp } from '../../sandbox/quay-app.ts';
import { ONE_IMAGE, quayRows, seedQuayDatabase } from '../../sandbox/quay-schema.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { QUAY_DATABASE, QUAY_NAME, type QuayBed, quayDeps, startQuayBed } from '../support/quay.ts';
import { clientFor, createBucket, listAll } from '../support/s3.ts';

let s3: S3ServerHandle;
let current: QuayBed;
let older: QuayBed;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-quay-backup', computeChecksums: true });
  const client = clientFor(s3);
  for (const bucket of ['vault-current', 'vault-older', 'vault-bad'])
    await createBucket(client, bucket);
  client.destroy();
  current = await startQuayBed(s3, {
    version: '3.9.1',
    namespace: 'quay-enterprise',
    bucket: 'quay-current',
  });
  older = await startQuayBed(s3, { version: '3.6.4', namespace: 'quay-old', bucket: 'quay-older' });
}, 240_000);

afterAll(async () => {
  await current?.stop();
  await older?.stop();
  await s3?.stop();
});

const componentsOf = (bed: QuayBed) =>
  JSON.stringify(
    (bed.api.store.read(QUAY_REGISTRY, bed.namespace, QUAY_NAME)['spec'] as { components: unknown })
      .components,
  );
const replicas = (bed: QuayBed, namespace: string, name: string) =>
  (
    bed.api.store.get(BuiltIn.deployments, namespace, name)?.['spec'] as
      | { replicas?: number }
      | undefined
  )?.replicas;
const availableNow = (bed: QuayBed) =>
  JSON.stringify(bed.api.store.get(QUAY_REGISTRY, bed.namespace, QUAY_NAME)?.['status']).includes(
    '"type":"Available","status":"True"',
  );
/** Every Secret value of the namespace, decoded: none may appear in logs or results. */
const secretValues = (bed: QuayBed) =>
  bed.api.store
    .list(BuiltIn.secrets, bed.namespace)
    .flatMap((s) => Object.values((s['data'] ?? {}) as Record<string, string>))
    .map((v) => Buffer.from(v, 'base64').toString('utf8'))
    .flatMap((text) => [
      text,
      ...[...text.matchAll(/(?:key|_pw|PSK|KEY): (\S{8,})/gi)].map((m) => m[1] ?? ''),
    ])
    .filter((v) => v.length >= 8);

async function backUp(bed: QuayBed, vault: string) {
  const lines: string[] = [];
  const deps = quayDeps(s3, vault, bed, lines);
  try {
    const result = await runBackupLocally({}, { deps });
    return { result, lines, deps };
  } finally {
    deps.close();
  }
}

describe('quay backup, 3.7 and later', () => {
  it('captures, quiesces with the overrides, dumps the database into the snapshot, copies the blobs and resumes', async () => {
    // Prepare
    const before = componentsOf(current);
    current.api.clearRequests();

    // Act
    const { result, lines, deps } = await backUp(current, 'vault-current');

    // Assess
    expect(result.cause).toBeUndefined();
    const output = result.output as { snapshotId: string; status: string };
    expect(output.status).toBe('complete');
    const manifest = await readManifest(deps.vault, output.snapshotId);
    expect(manifest?.clusterFiles).toEqual(
      expect.arrayContaining([
        'quayregistry-registry.yaml',
        'secret-registry-quay-registry-managed-secret-keys.yaml',
        'secret-registry-config-bundle.yaml',
        'quay-config.yaml',
      ]),
    );
    const dump = await getBytes(
      deps.vault,
      vaultKeys.database('', output.snapshotId, QUAY_DATABASE),
    );
    expect(manifest?.database).toEqual({
      name: QUAY_DATABASE,
      bytes: dump?.byteLength,
      sha256: createHash('sha256')
        .update(dump ?? '')
        .digest('hex'),
    });
    expect(dump?.toString('utf8')).toContain(current.images[0]?.manifestDigest);
    const captured = (
      await getBytes(
        deps.vault,
        vaultKeys.cluster('', output.snapshotId, 'quayregistry-registry.yaml'),
      )
    )?.toString('utf8');
    expect(captured).not.toMatch(/status:|resourceVersion|uid:|managedFields|creationTimestamp/);
    // Every blob the rows name is in the vault's pool.
    const pool = await listAll(deps.vault.client, 'vault-current', 'blobs/');
    for (const blob of current.images.flatMap((i) => i.blobs))
      expect(pool.has(vaultKeys.blob('', blob.digest))).toBe(true);
    // Quiesced (two patches of the QuayRegistry: to 0, and back) and resumed exactly.
    const patches = current.api
      .requests()
      .filter((r) => r.method === 'PATCH' && r.path.endsWith(`/quayregistries/${QUAY_NAME}`));
    expect(patches).toHaveLength(2);
    expect(componentsOf(current)).toBe(before);
    expect(availableNow(current)).toBe(true);
    expect(manifest?.checks['registryResumed']?.ok).toBe(true);
    const said = `${lines.join('\n')}\n${JSON.stringify(result.output)}`;
    for (const value of secretValues(current)) expect(said).not.toContain(value);
  });

  it('resumes the registry when pg_dump fails mid-backup, and marks the snapshot failed', async () => {
    // Prepare
    const before = componentsOf(current);
    const pod =
      current.api.store
        .list(BuiltIn.pods, current.namespace)
        .find((p) => p.metadata.labels?.['quay-component'] === 'postgres')?.metadata.name ?? '';
    current.operator.overrideExec(
      current.namespace,
      pod,
      (own) => async (command, io, container) => {
        if (command.includes('--version')) return own(command, io, container);
        io.stdout('--\n-- PostgreSQL database dump\n--\n');
        io.stderr('pg_dump: error: query failed: server closed the connection unexpectedly\n');
        return 1;
      },
    );

    // Act
    const { result, deps } = await backUp(current, 'vault-current').finally(() =>
      current.operator.overrideExec(current.namespace, pod, undefined),
    );

    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain('server closed the connection unexpectedly');
    const failed = (await listSnapshots(deps.vault)).at(-1);
    expect(failed?.status).toBe('failed');
    expect(failed?.checks['registryResumed']?.ok).toBe(true);
    expect(
      await getBytes(deps.vault, vaultKeys.database('', failed?.id ?? '', QUAY_DATABASE)),
    ).toBeUndefined();
    expect(componentsOf(current)).toBe(before);
    expect(availableNow(current)).toBe(true);
  });
});

describe('quay backup whose execution dies', () => {
  it('resumes the registry when the run of an aborted execution is ended', async () => {
    // Prepare: discover ran (Quay quiesced, the dump taken), then the execution was aborted.
    const before = componentsOf(current);
    const execution = 'arn:aws:states:us-east-1:123456789012:execution:regvault-backup:dies';
    const deps = quayDeps(s3, 'vault-current', current);
    try {
      await discoverBackup({}, deps, execution);
      const quiesced = componentsOf(current);

      // Act
      const ended = await endDeadExecution(
        {
          source: 'aws.states',
          'detail-type': 'Step Functions Execution Status Change',
          detail: { executionArn: execution, name: 'dies', status: 'ABORTED' },
        },
        deps,
      );

      // Assess
      expect(quiesced).not.toBe(before);
      expect(ended.ended).toBe(true);
      expect(componentsOf(current)).toBe(before);
      expect(availableNow(current)).toBe(true);
    } finally {
      deps.close();
    }
  });
});

describe('quay backup before 3.7', () => {
  it('scales the operator then the components to 0, skips the managed keys with a note, and scales back', async () => {
    // Prepare
    const operator = `quay-operator.v${older.operator.version}`;

    // Act
    const { result, deps } = await backUp(older, 'vault-older');

    // Assess
    expect(result.cause).toBeUndefined();
    const output = result.output as { snapshotId: string; status: string };
    expect(output.status).toBe('complete');
    const manifest = await readManifest(deps.vault, output.snapshotId);
    expect(manifest?.clusterFiles).not.toContain(
      'secret-registry-quay-registry-managed-secret-keys.yaml',
    );
    const notes = (
      await getBytes(deps.vault, vaultKeys.cluster('', output.snapshotId, 'quay-notes.yaml'))
    )?.toString('utf8');
    expect(parse(notes ?? '')).toEqual({
      version: '3.6.4',
      notes: [expect.stringContaining('Quay before 3.7 makes none, so it was skipped')],
    });
    expect(manifest?.database?.bytes).toBeGreaterThan(0);
    const record =
      (await getBytes(deps.vault, quiesceKey(deps.vault, `backup-${output.snapshotId}`)))?.toString(
        'utf8',
      ) ?? '';
    expect(JSON.parse(record)).toMatchObject({ resumed: true, undo: { mode: 'scale' } });
    expect(record).toContain('registry-quay-app');
    expect(replicas(older, older.operator.operatorNamespace, operator)).toBe(1);
    expect(replicas(older, older.namespace, 'registry-quay-app')).toBe(2);
    expect(availableNow(older)).toBe(true);
  });
});

describe('quay backup refuses bad input before changing anything', () => {
  it.each([
    ['no QuayRegistry', { namespace: 'nowhere' }, 'there is no QuayRegistry in namespace nowhere'],
  ])('%s', async (_what, settings, message) => {
    // Prepare
    const deps = quayDeps(s3, 'vault-bad', current, [], {
      profileSettings: { ...settings, waitSeconds: 30 },
    });
    const before = componentsOf(current);

    // Act
    const result = await runBackupLocally({}, { deps }).finally(() => deps.close());

    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain(message);
    expect(await listAll(clientFor(s3), 'vault-bad')).toEqual(new Map());
    expect(componentsOf(current)).toBe(before);
  });

  it('says so when pods/exec is refused', async () => {
    // Prepare
    const deps = quayDeps(s3, 'vault-bad', current);
    const before = componentsOf(current);
    current.api.setForbidden([
      { verb: 'create', resource: 'pods/exec', namespace: current.namespace },
    ]);

    // Act
    const refused = await runBackupLocally({}, { deps }).finally(() => {
      current.api.setForbidden([]);
      deps.close();
    });

    // Assess
    expect(refused.status).toBe('FAILED');
    expect(refused.cause).toContain('refused to exec into pod');
    expect(refused.cause).toContain('resources: ["pods/exec"]');
    expect(await listAll(clientFor(s3), 'vault-bad')).toEqual(new Map());
    expect(componentsOf(current)).toBe(before);
  });

  it('says so when there is no postgres pod', async () => {
    // Prepare: the database's Deployment at 0 (its operator stopped first, or it would scale it back).
    const operator = `quay-operator.v${older.operator.version}`;
    const scale = (namespace: string, name: string, replicas: number) => {
      const object = older.api.store.read(BuiltIn.deployments, namespace, name);
      older.api.store.replace(BuiltIn.deployments, {
        ...object,
        spec: { ...(object['spec'] as object), replicas },
      });
    };
    scale(older.operator.operatorNamespace, operator, 0);
    scale(older.namespace, 'registry-quay-database', 0);
    await older.operator.sync();
    const deps = quayDeps(s3, 'vault-bad', older);

    // Act
    const result = await runBackupLocally({}, { deps }).finally(async () => {
      deps.close();
      scale(older.namespace, 'registry-quay-database', 1);
      scale(older.operator.operatorNamespace, operator, 1);
      await older.operator.sync();
    });

    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain(
      'no running pod labelled quay-component=postgres in namespace quay-old',
    );
    expect(await listAll(clientFor(s3), 'vault-bad')).toEqual(new Map());
    expect(replicas(older, older.namespace, 'registry-quay-app')).toBe(2);
  });
});

describe('quay backup while a quay-app pod takes its time to stop', () => {
  let slow: QuayBed;
  /** When each quay-app process had stopped (ms since the epoch). */
  const stoppedAt: number[] = [];
  beforeAll(async () => {
    const client = clientFor(s3);
    await createBucket(client, 'vault-slow');
    client.destroy();
    slow = await startQuayBed(s3, {
      version: '3.9.1',
      namespace: 'quay-slow',
      bucket: 'quay-slow',
      count: 1,
      // Its pods stay Terminating for 3 s: Quay finishing its requests and workers.
      startQuayApp: async (options) => {
        const instance = await startQuayApp(options);
        return {
          ...instance,
          running: () => instance.running(),
          logs: () => instance.logs(),
          stop: async () => {
            await new Promise((resolve) => setTimeout(resolve, 3_000));
            await instance.stop();
            stoppedAt.push(Date.now());
          },
        };
      },
    });
  }, 120_000);
  afterAll(async () => {
    await slow?.stop();
  });

  it('starts pg_dump only once every quay-app process has stopped, not when its pods turn Terminating', async () => {
    // Prepare: when pg_dump of the database starts.
    let dumpedAt = 0;
    slow.operator.overrideExec(slow.namespace, '*postgres', (own) => (command, io, container) => {
      if (command[0] === 'pg_dump' && !command.includes('--version')) dumpedAt = Date.now();
      return own(command, io, container);
    });

    // Act
    const { result } = await backUp(slow, 'vault-slow').finally(() =>
      slow.operator.overrideExec(slow.namespace, '*postgres', undefined),
    );

    // Assess
    expect(result.cause).toBeUndefined();
    expect(stoppedAt.length).toBeGreaterThan(0);
    expect(dumpedAt).toBeGreaterThanOrEqual(Math.max(...stoppedAt));
    expect(availableNow(slow)).toBe(true);
  });
});

describe('quay backup on ODF managed object storage (NooBaa)', () => {
  let noobaa: QuayBed;
  beforeAll(async () => {
    const client = clientFor(s3);
    await createBucket(client, 'vault-noobaa');
    client.destroy();
    noobaa = await startQuayBed(s3, {
      version: '3.9.1',
      namespace: 'quay-odf',
      bucket: 'noobaa-claim',
      count: 1,
      noobaa: true,
    });
  }, 120_000);
  afterAll(async () => {
    await noobaa?.stop();
  });

  it('takes the bucket from the app=noobaa ConfigMap and the keys from the app=noobaa Secret', async () => {
    // Act
    const { result, deps } = await backUp(noobaa, 'vault-noobaa');

    // Assess
    expect(result.cause).toBeUndefined();
    const output = result.output as { snapshotId: string; status: string };
    expect(output.status).toBe('complete');
    const manifest = await readManifest(deps.vault, output.snapshotId);
    expect(manifest?.source.bucket).toBe('noobaa-claim');
    expect(manifest?.database?.bytes).toBeGreaterThan(0);
    const pool = await listAll(deps.vault.client, 'vault-noobaa', 'blobs/');
    for (const blob of noobaa.images.flatMap((i) => i.blobs))
      expect(pool.has(vaultKeys.blob('', blob.digest))).toBe(true);
    expect(availableNow(noobaa)).toBe(true);
  });
});

describe("quay backup on Quay's layout", () => {
  let bed: QuayBed;
  beforeAll(async () => {
    const client = clientFor(s3);
    for (const bucket of ['vault-layout', 'vault-dangling']) await createBucket(client, bucket);
    client.destroy();
    bed = await startQuayBed(s3, {
      version: '3.9.1',
      namespace: 'quay-layout',
      bucket: 'quay-layout',
      count: 2,
    });
  }, 120_000);
  afterAll(async () => {
    await bed?.stop();
  });

  /** The database's live tags as a catalog (repository -> tag -> manifest digest). */
  async function liveTags(): Promise<Record<string, Record<string, string>>> {
    const catalog: Record<string, Record<string, string>> = {};
    for (const line of await quayRows(await bed.database(), QUAY_DATABASE)) {
      const [name = '', digest = ''] = line.split(' ');
      const at = name.lastIndexOf(':');
      catalog[name.slice(0, at)] = { ...catalog[name.slice(0, at)], [name.slice(at + 1)]: digest };
    }
    return catalog;
  }

  it("writes the snapshot's catalog from the database's live tags, every blob they need in the vault", async () => {
    // Prepare: a push abandoned mid-way leaves its upload at <storage_path>/uploads/<uuid>.
    const started = await fetch(`${bed.registryUrl}/v2/team/app0/blobs/uploads/`, {
      method: 'POST',
    });
    const upload = started.headers.get('docker-upload-uuid') ?? '';
    await fetch(`${bed.registryUrl}${started.headers.get('location') ?? ''}`, {
      method: 'PATCH',
      body: 'half a layer',
    });
    const bucket = await listAll(clientFor(s3), 'quay-layout');
    expect(bucket.has(`datastorage/registry/uploads/${upload}`)).toBe(true);
    // An index of two platforms: its tag needs its manifests' blobs (Quay's manifestchild).
    const layout = await OciLayout.create();
    let index: Awaited<ReturnType<OciLayout['addImage']>>;
    try {
      index = await layout.addImage(
        'multi',
        [{ seed: 'quay-multi', size: 2_500 }],
        [
          { architecture: 'amd64', os: 'linux' },
          { architecture: 'arm64', os: 'linux' },
        ],
      );
      await pushImage(layout, 'multi', `${new URL(bed.registryUrl).host}/team/multi:v1`);
    } finally {
      await layout.remove();
    }

    // Act
    const { result, deps } = await backUp(bed, 'vault-layout');

    // Assess
    expect(result.cause).toBeUndefined();
    const { snapshotId } = result.output as { snapshotId: string };
    const catalog = await getJson(deps.vault, vaultKeys.catalog('', snapshotId), catalogSchema);
    const written = Object.fromEntries(
      (catalog?.repositories ?? []).map((r) => [r.name, r.tags] as const),
    );
    const { 'team/multi': multi, ...singles } = written;
    expect(multi).toEqual({ v1: index.digest });
    expect(singles).toEqual(await liveTags());
    expect(Object.keys(singles)).toHaveLength(2);
    const manifest = await readManifest(deps.vault, snapshotId);
    expect(manifest?.layout).toBe('quay');
    expect(manifest?.source.rootDirectory).toBe('datastorage/registry/');
    expect(manifest?.counts).toMatchObject({ repositories: 3, tags: 3 });
    // Two images of a config and a layer, and the index's two manifests' configs and layers.
    expect(manifest?.checks['references']).toMatchObject({
      ok: true,
      detail: expect.stringContaining('all 8 blobs'),
    });
    // The upload is left out and named; no key of Distribution's layout anywhere.
    expect(manifest?.uploadsSkipped).toEqual([upload]);
    expect([...bucket.keys()].some((key) => key.includes('docker/registry/v2'))).toBe(false);
    const pool = await listAll(deps.vault.client, 'vault-layout', 'blobs/');
    for (const blob of bed.images.flatMap((i) => i.blobs))
      expect(pool.has(vaultKeys.blob('', blob.digest))).toBe(true);
    // The index's layers and configs are in the pool; its manifests are rows, not blobs.
    const inPool = index.blobs.filter((digest) => pool.has(vaultKeys.blob('', digest)));
    expect(inPool).toHaveLength(4);
    // Its manifests are in the dump, so it is not exported as an OCI layout, and says why.
    const exported: string[] = [];
    const sink = {
      blob: async (digest: string) => void exported.push(digest),
      file: async (name: string) => void exported.push(name),
    };
    await expect(
      exportLayout(
        { snapshot: manifest as SnapshotManifest, repositories: ['team/*'] },
        deps,
        sink,
      ),
    ).rejects.toThrow(/Quay's layout/);
    expect(exported).toEqual([]);
  });

  it('fails a backup whose database names a blob the bucket lacks, naming the digest', async () => {
    // Prepare: rows for an image whose blob never reached the bucket.
    const lost = { ...ONE_IMAGE, repository: 'lost' };
    const postgres = await bed.database();
    await seedQuayDatabase(postgres, QUAY_DATABASE, [lost]);
    try {
      // Act
      const { result, deps } = await backUp(bed, 'vault-dangling');

      // Assess
      expect(result.status).toBe('FAILED');
      const missing = lost.blobs[0]?.digest ?? '';
      expect(result.cause).toContain(missing);
      expect(result.cause).toContain('team/lost:v1');
      const manifest = (await listSnapshots(deps.vault)).at(-1);
      expect(manifest?.status).toBe('failed');
      expect(manifest?.checks['references']).toMatchObject({ ok: false });
      expect(manifest?.checks['references']?.detail).toContain(missing);
      expect(availableNow(bed)).toBe(true);
    } finally {
      await postgres.sql(
        QUAY_DATABASE,
        `UPDATE tag SET lifetime_end_ms = 1 WHERE repository_id = (SELECT id FROM repository WHERE name = 'lost');`,
      );
    }
  });
});
