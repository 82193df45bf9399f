import { copyFile, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import {
  acquireRunLease,
  LOCAL_LEASE_TTL_MS,
  localLeaseHolder,
} from '../../functions/commons/vault/run-lease.ts';
import { populateRegistry } from '../../sandbox/images/index.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { type CliRun, jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import {
  clientFor,
  copyAllObjects,
  createBucket,
  listAll,
  locationOn,
  putObjects,
  readObject,
} from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let cluster: FakeCluster;
let env: NodeJS.ProcessEnv;

const regvault = (args: readonly string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<CliRun> =>
  runRegvault(args, { ...env, ...extraEnv });

/** The id of the snapshot a `backup --json` run made. */
function snapshotIdOf(run: CliRun): string {
  const summary = jsonLines(run.stdout).at(-1)?.['snapshot'] as { snapshotId?: string } | undefined;
  return String(summary?.snapshotId);
}

/** The bucket the registry serves between tests; its images are pushed in `beforeAll` and never changed. */
const REGISTRY_BUCKET = 'cli-registry';

/** Points the registry's ModuleInfo at `bucket` and waits for the rollout. */
async function serveBucket(bucket: string): Promise<void> {
  await cluster.seedAcpRegistry({
    bucket,
    endpoint: s3.endpoint,
    region: s3.region,
    accessKey: s3.credentials.accessKeyId,
    secretKey: s3.credentials.secretAccessKey,
  });
  await cluster.waitForReadyPod(30_000);
}

/**
 * What several tests read and none writes: a snapshot of the registry's bucket in its own
 * vault, and a bucket restored from it without a switch. Each is made once, when a block
 * that needs it first runs, so a test run alone or in any order finds the same state.
 */
const SHARED = { vault: 'cli-vault-shared', restored: 'cli-restored-shared' } as const;
let sharedSnapshotMade: Promise<string> | undefined;
let sharedRestoreMade: Promise<void> | undefined;

/** The id of the shared snapshot, backing it up on first use. */
function sharedSnapshot(): Promise<string> {
  sharedSnapshotMade ??= (async () => {
    await createBucket(client, SHARED.vault);
    // No --source-endpoint: a bucket beside the vault is reached at the vault's endpoint.
    const backup = await regvault(['backup', '--source-bucket', REGISTRY_BUCKET, '--json'], {
      REGVAULT_VAULT_BUCKET: SHARED.vault,
    });
    if (backup.code !== 0) throw new Error(`the shared backup failed: ${backup.stderr}`);
    return snapshotIdOf(backup);
  })();
  return sharedSnapshotMade;
}

/** The shared snapshot restored into `SHARED.restored`, restoring it on first use. */
function sharedRestore(): Promise<void> {
  sharedRestoreMade ??= (async () => {
    const snapshotId = await sharedSnapshot();
    await createBucket(client, SHARED.restored);
    const restore = await regvault(
      [
        'restore',
        '--no-switch',
        '--snapshot',
        snapshotId,
        '--target-bucket',
        SHARED.restored,
        '--json',
      ],
      { REGVAULT_VAULT_BUCKET: SHARED.vault },
    );
    if (restore.code !== 0) throw new Error(`the shared restore failed: ${restore.stderr}`);
  })();
  return sharedRestoreMade;
}

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-cli', objectLockBuckets: ['cli-vault-locked'] });
  client = clientFor(s3);
  for (const bucket of [REGISTRY_BUCKET, 'cli-vault', 'cli-restored', 'cli-vault-locked'])
    await createBucket(client, bucket);
  cluster = await startFakeCluster({ tls: true });
  await serveBucket(REGISTRY_BUCKET);
  await populateRegistry(new URL(cluster.registryUrl).host, {
    repositories: 2,
    tagsPerRepository: 2,
  });
  env = sandboxEnv(s3, 'cli-vault', { KUBECONFIG: cluster.kubeconfigPath });
}, 120_000);

afterAll(async () => {
  client?.destroy();
  await cluster?.stop();
  await s3?.stop();
});

describe('the regvault CLI on the sandbox', () => {
  describe('on the live registry, switching it', () => {
    // The restore points the registry at cli-restored; the other tests expect the registry's own bucket.
    afterEach(() => serveBucket(REGISTRY_BUCKET), 60_000);

    it('backs up, lists the snapshot, restores with a switch and verifies, printing JSON lines', async () => {
      // Act
      const backup = await regvault(['backup', '--ttl-days', '30', '--json']);
      const list = await regvault(['snapshots', 'list', '--json']);
      const missingUrl = await regvault([
        'restore',
        '--target-bucket',
        'cli-restored',
        '--target-secret',
        'registry-s3-secret',
      ]);
      const restore = await regvault([
        'restore',
        '--target-bucket',
        'cli-restored',
        '--target-secret',
        'registry-s3-secret',
        '--registry-url',
        cluster.registryUrl,
        '--json',
      ]);
      const verify = await regvault([
        'verify',
        '--registry-url',
        cluster.registryUrl,
        '--pull-sample',
        '4',
        '--json',
      ]);
      // Assess
      expect(backup.stderr).toBe('');
      expect(backup.code).toBe(0);
      const backupLines = jsonLines(backup.stdout);
      expect(backupLines.at(-1)).toMatchObject({ event: 'result', status: 'SUCCEEDED' });
      expect(
        backupLines.filter((line) => line['event'] === 'state').map((line) => line['state']),
      ).toContain('FinalizeSnapshot');
      // The copy's progress knows its total once the plan has run.
      const firstProgress = backupLines.find((line) => line['event'] === 'progress');
      expect(firstProgress?.['phase']).toBe('backup copy');
      expect(firstProgress?.['totalObjects']).toBeGreaterThan(0);
      expect(list.code).toBe(0);
      const listed = jsonLines(list.stdout).filter((line) => line['event'] === 'snapshot');
      expect(listed).toHaveLength(1);
      const shown = await regvault(['snapshots', 'show', String(listed[0]?.['id']), '--json']);
      const manifest = jsonLines(shown.stdout).at(-1)?.['manifest'] as
        | { startedAt: string; expiresAt?: string }
        | undefined;
      expect(Date.parse(manifest?.expiresAt ?? '') - Date.parse(manifest?.startedAt ?? '')).toBe(
        30 * 86_400_000,
      );
      expect(missingUrl.code).toBe(2);
      expect(missingUrl.stderr).toContain(
        '--registry-url (or REGVAULT_REGISTRY_URL / registryUrl in the config file): switching the registry needs its URL',
      );
      expect(missingUrl.stderr).not.toMatch(/\bregistryUrl:/);
      expect(restore.code).toBe(0);
      const restoreLines = jsonLines(restore.stdout);
      expect(restoreLines.at(-1)).toMatchObject({
        event: 'result',
        status: 'SUCCEEDED',
        exitCode: 0,
      });
      const snapshot = jsonLines(list.stdout).find((line) => line['event'] === 'snapshot');
      expect(restoreLines.find((line) => line['event'] === 'progress')).toMatchObject({
        phase: 'restore copy',
        totalObjects: snapshot?.['objects'],
        totalBytes: snapshot?.['bytes'],
      });
      // The proof and the verification report in the registry's units, ending at their totals.
      const proof = restoreLines.filter((line) => line['phase'] === 'restore prove').at(-1);
      expect(proof?.['blobs']).toEqual({
        done: (proof?.['blobs'] as { total: number } | undefined)?.total,
        total: expect.any(Number),
      });
      const verified = restoreLines.filter((line) => line['phase'] === 'restore verify').at(-1);
      expect(verified).toMatchObject({
        repositories: { done: 2, total: 2 },
        tags: { done: 4, total: 4 },
      });
      expect(verify.code).toBe(0);
      expect(jsonLines(verify.stdout).at(-1)).toMatchObject({
        event: 'result',
        ok: true,
        repositories: 2,
        tags: 4,
      });
    });
  });

  describe('on the shared snapshot and the bucket restored from it', () => {
    const vault = { REGVAULT_VAULT_BUCKET: SHARED.vault };

    beforeAll(() => sharedRestore(), 120_000);

    it('checks the snapshot and the restored bucket with fsck, and prunes with a dry run', async () => {
      // Act
      const snapshot = await regvault(['fsck', '--deep', '--json'], vault);
      const bucket = await regvault(['fsck', '--bucket', SHARED.restored, '--json']);
      const prune = await regvault(
        ['snapshots', 'prune', '--keep-last', '1', '--dry-run', '--json'],
        vault,
      );
      // Assess
      expect(snapshot.code).toBe(0);
      expect(jsonLines(snapshot.stdout).at(-1)).toMatchObject({ ok: true, mode: 'deep' });
      expect(bucket.code).toBe(0);
      expect(jsonLines(bucket.stdout).at(-1)).toMatchObject({
        ok: true,
        target: `s3://${SHARED.restored}`,
      });
      expect(prune.code).toBe(0);
      expect(jsonLines(prune.stdout).at(-1)).toMatchObject({
        event: 'result',
        deletedSnapshots: [],
      });
    });

    it('plans a bucket without copying anything', async () => {
      // Act
      const run = await regvault(['plan', '--source-bucket', SHARED.restored, '--json']);
      // Assess
      expect(run.code).toBe(0);
      expect(jsonLines(run.stdout).at(-1)).toMatchObject({ event: 'result', layout: 'registry' });
    });

    it('copies a bucket and skips everything on the second run', async () => {
      // Prepare
      await createBucket(client, 'cli-copy');
      // Act
      const copy = ['copy', '--from', `s3://${SHARED.restored}`, '--to', 's3://cli-copy', '--json'];
      const first = await regvault(copy);
      const second = await regvault(copy);
      // Assess
      expect(first.code).toBe(0);
      expect(jsonLines(first.stdout).find((line) => line['event'] === 'progress')).toMatchObject({
        phase: 'copy',
        totalObjects: expect.any(Number),
      });
      const firstResult = jsonLines(first.stdout).at(-1);
      expect(firstResult?.['copied']).toBeGreaterThan(0);
      expect(jsonLines(second.stdout).at(-1)).toMatchObject({
        ok: true,
        copied: 0,
        skipped: firstResult?.['copied'],
      });
    });
  });

  it.each([
    {
      case: 'a bad flag value',
      args: ['backup', '--concurrency', 'many'],
      names: ['--concurrency'],
    },
    { case: 'an unknown flag', args: ['backup', '--no-such-flag'], names: ['--no-such-flag'] },
    {
      case: 'a bad copy location',
      args: ['copy', '--from', 'bucket-without-scheme', '--to', 's3://x-y-z'],
      names: ['--from: expected s3://bucket/prefix'],
    },
    {
      case: 'a negative grace period for prune',
      args: ['snapshots', 'prune', '--keep-last', '2', '--grace-minutes', '-5', '--dry-run'],
      names: ['--grace-minutes: -5 is not accepted'],
    },
    {
      case: 'a sample that is not a number',
      args: ['fsck', '--deep', '--sample', 'abc'],
      names: ['--sample: abc is not accepted'],
    },
    {
      case: 'a shard size below the minimum for plan',
      args: ['plan', '--source-bucket', 'some-bucket', '--shard-objects', '5'],
      names: ['--shard-objects: 5 is not accepted'],
    },
    {
      case: 'two bad numbers at once for prune',
      args: ['snapshots', 'prune', '--keep-last', '0', '--ttl-days', 'soon'],
      names: ['--keep-last: 0 is not accepted', '--ttl-days: soon is not accepted'],
    },
  ])('exits 2 and names the field for $case', async ({ args, names }) => {
    // Act
    const run = await regvault(args);
    // Assess
    expect(run.code).toBe(2);
    for (const name of names) expect(run.stderr).toContain(name);
  });

  it('exits 2 for a bad config file, naming every bad setting, before touching anything', async () => {
    // Prepare
    const dir = await mkdtemp(join(tmpdir(), 'regvault-cli-'));
    const config = join(dir, 'regvault.yaml');
    await writeFile(config, 'vaultBucket: Not_A_Bucket\nvaultRegion: us-east-1\nconcurency: 4\n');
    // Act
    const run = await regvault(['snapshots', 'list', '--config', config], {
      REGVAULT_VAULT_BUCKET: '',
    });
    // Assess
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(
      `--vault-bucket (from vaultBucket in ${config}, line 1): a bucket name`,
    );
    expect(run.stderr).toContain('concurency in the config file (line 3) (unknown setting)');
  });
  it.each([
    {
      case: 'a bad flag value',
      args: ['backup', '--concurrency', 'many', '--json'],
      code: 2,
      names: ['--concurrency'],
    },
    {
      case: 'a missing required flag',
      args: ['restore', '--json'],
      code: 2,
      names: ['--target-bucket'],
    },
    {
      case: 'a snapshot that is not in the vault',
      args: ['snapshots', 'show', '20200101T000000.000Z-000000', '--json'],
      code: 2,
      names: ['snapshot 20200101T000000.000Z-000000 is not in the vault'],
    },
  ])(
    'ends --json output with a failed result object for $case, the message on stderr',
    async ({ args, code, names }) => {
      // Act
      const run = await regvault(args);
      // Assess
      expect(run.code).toBe(code);
      const lines = jsonLines(run.stdout);
      expect(lines.filter((line) => line['event'] === 'result')).toHaveLength(1);
      expect(lines.at(-1)).toMatchObject({ event: 'result', ok: false, exitCode: code });
      for (const name of names) {
        expect(run.stderr).toContain(name);
        expect(JSON.stringify(lines.at(-1))).toContain(name);
      }
    },
  );

  it('backs up into a vault with Object Lock retention only with --vault-content-md5', async () => {
    // Prepare
    const locked = { REGVAULT_VAULT_BUCKET: 'cli-vault-locked' };
    const plain = ['backup', '--source-bucket', 'cli-registry', '--source-endpoint', s3.endpoint];
    // Act
    const refused = await regvault([...plain, '--json'], locked);
    const accepted = await regvault([...plain, '--vault-content-md5', '--json'], locked);
    // Assess
    expect(refused.code).toBe(1);
    expect(JSON.stringify(jsonLines(refused.stdout).at(-1))).toContain('Content-MD5');
    expect(accepted.code).toBe(0);
    expect(jsonLines(accepted.stdout).at(-1)).toMatchObject({ event: 'result', ok: true });
  });

  it('refuses a restore from a snapshot that lost a blob before writing anything (exit 1)', async () => {
    // Prepare: a snapshot in its own vault, then one of its blobs lost from the vault
    for (const bucket of ['cli-vault-damaged', 'cli-damaged']) await createBucket(client, bucket);
    const vault = { REGVAULT_VAULT_BUCKET: 'cli-vault-damaged' };
    const backup = await regvault(
      ['backup', '--source-bucket', 'cli-registry', '--source-endpoint', s3.endpoint, '--json'],
      vault,
    );
    expect(backup.code).toBe(0);
    const blobs = await client.send(
      new ListObjectsV2Command({ Bucket: 'cli-vault-damaged', Prefix: 'blobs/' }),
    );
    const lost = blobs.Contents?.[0]?.Key;
    expect(lost).toBeDefined();
    await client.send(new DeleteObjectCommand({ Bucket: 'cli-vault-damaged', Key: lost }));
    const runsBefore = await listAll(client, 'cli-vault-damaged', 'runs/');
    // Act
    const restore = await regvault(
      ['restore', '--no-switch', '--target-bucket', 'cli-damaged', '--json'],
      vault,
    );
    // Assess: the snapshot's check comes before the copy, so the target and runs/ are as they were
    expect(restore.code).toBe(1);
    const result = jsonLines(restore.stdout).at(-1);
    expect(result).toMatchObject({ event: 'result', ok: false, status: 'FAILED', exitCode: 1 });
    expect(result?.['error']).toContain('missing in the vault');
    expect(result?.['error']).toContain("fails fsck's plain check");
    expect((await listAll(client, 'cli-damaged')).size).toBe(0);
    expect(await listAll(client, 'cli-vault-damaged', 'runs/')).toEqual(runsBefore);
  });

  it('exits 3 when a restore finishes with objects it could not copy', async () => {
    // Prepare: a sound snapshot in its own vault; the target refuses the first copy into it
    for (const bucket of ['cli-vault-partial', 'cli-partial']) await createBucket(client, bucket);
    const vault = { REGVAULT_VAULT_BUCKET: 'cli-vault-partial' };
    const backup = await regvault(
      ['backup', '--source-bucket', 'cli-registry', '--source-endpoint', s3.endpoint, '--json'],
      vault,
    );
    expect(backup.code).toBe(0);
    await s3.injectFaults({
      operation: 'CopyObject',
      status: 403,
      code: 'AccessDenied',
      count: 1,
      bucket: 'cli-partial',
    });
    // Act
    const restore = await regvault(
      ['restore', '--no-switch', '--target-bucket', 'cli-partial', '--json'],
      vault,
    ).finally(() => s3.clearFaults());
    // Assess
    expect(restore.code).toBe(3);
    const result = jsonLines(restore.stdout).at(-1);
    expect(result).toMatchObject({
      event: 'result',
      ok: false,
      status: 'FAILED',
      exitCode: 3,
      totals: { failed: 1 },
    });
    expect(result?.['error']).toContain('AccessDenied');
    expect(restore.stderr).toContain('restore FAILED');
  });

  describe('finds the cluster like kubectl', () => {
    let dir: string;
    let missing: string;
    let elsewhere: string;
    let homeWithConfig: string;
    let homeWithout: string;

    beforeAll(async () => {
      await createBucket(client, 'cli-vault-kube');
      dir = await mkdtemp(join(tmpdir(), 'regvault-kube-'));
      missing = join(dir, 'missing.yaml');
      // Its own current-context names a cluster nobody listens on: used only if it wrongly wins.
      elsewhere = join(dir, 'elsewhere.yaml');
      await writeFile(
        elsewhere,
        [
          'apiVersion: v1',
          'kind: Config',
          'clusters: [{name: elsewhere, cluster: {server: "https://127.0.0.1:9"}}]',
          'users: [{name: elsewhere, user: {token: nobody}}]',
          'contexts: [{name: elsewhere, context: {cluster: elsewhere, user: elsewhere}}]',
          'current-context: elsewhere',
          '',
        ].join('\n'),
      );
      homeWithConfig = join(dir, 'home-with');
      await mkdir(join(homeWithConfig, '.kube'), { recursive: true });
      await copyFile(cluster.kubeconfigPath, join(homeWithConfig, '.kube', 'config'));
      homeWithout = join(dir, 'home-without');
      await mkdir(homeWithout);
    });

    it.each([
      {
        case: '--kubeconfig over a KUBECONFIG that names a missing file',
        flags: () => ['--kubeconfig', cluster.kubeconfigPath],
        env: () => ({ KUBECONFIG: missing, HOME: homeWithout }),
      },
      {
        case: 'a KUBECONFIG list, the first current-context winning',
        flags: () => [],
        env: () => ({ KUBECONFIG: `${cluster.kubeconfigPath}:${elsewhere}`, HOME: homeWithout }),
      },
      {
        case: '~/.kube/config without KUBECONFIG',
        flags: () => [],
        env: () => ({ KUBECONFIG: undefined, HOME: homeWithConfig }),
      },
    ])('backs up the registry through $case', async ({ flags, env: extra }) => {
      // Act
      const run = await regvault(['backup', '--json', ...flags()], {
        REGVAULT_VAULT_BUCKET: 'cli-vault-kube',
        ...extra(),
      });
      // Assess
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      expect(jsonLines(run.stdout).at(-1)).toMatchObject({ status: 'SUCCEEDED', exitCode: 0 });
    });

    it.each([
      {
        case: 'KUBECONFIG names a missing file',
        env: () => ({ KUBECONFIG: missing, HOME: homeWithConfig }),
        names: () => [`KUBECONFIG: ${missing} does not exist`, '--kubeconfig'],
      },
      {
        case: 'there is neither KUBECONFIG nor ~/.kube/config',
        env: () => ({ KUBECONFIG: undefined, HOME: homeWithout }),
        names: () => ['no kubeconfig was found', '--kubeconfig'],
      },
    ])('exits 2 naming --kubeconfig when $case', async ({ env: extra, names }) => {
      // Act
      const run = await regvault(['backup', '--json'], {
        REGVAULT_VAULT_BUCKET: 'cli-vault-kube',
        ...extra(),
      });
      // Assess
      expect(run.code).toBe(2);
      expect(jsonLines(run.stdout).at(-1)).toMatchObject({
        event: 'result',
        ok: false,
        exitCode: 2,
      });
      for (const name of names()) expect(run.stderr).toContain(name);
    });
  });
});

describe('the CLI speaks in the terms the user typed', () => {
  const vault = { REGVAULT_VAULT_BUCKET: 'cli-vault-terms' };
  let snapshotId: string;

  beforeAll(async () => {
    await createBucket(client, 'cli-vault-terms');
    const backup = await regvault(
      ['backup', '--source-bucket', 'cli-registry', '--source-endpoint', s3.endpoint, '--json'],
      vault,
    );
    expect(backup.code).toBe(0);
    snapshotId = snapshotIdOf(backup);
  }, 120_000);

  it.each([
    {
      case: 'a target bucket name S3 refuses',
      args: ['restore', '--no-switch', '--target-bucket', 'Bad_Bucket'],
      env: {},
      names: ['--target-bucket: a bucket name'],
      fields: ['target.bucket'],
    },
    {
      case: 'a switching restore without the target Secret',
      args: ['restore', '--target-bucket', 'cli-x', '--registry-url', 'https://r.example.com'],
      env: {},
      names: ['--target-secret: required unless --no-switch'],
      fields: ['target.secretName', 'switchRegistry'],
    },
    {
      case: 'a rollout timeout below the workflow minimum',
      args: ['restore', '--no-switch', '--target-bucket', 'cli-x', '--rollout-timeout', '5'],
      env: {},
      names: ['--rollout-timeout: '],
      fields: ['rolloutTimeoutSeconds'],
    },
    {
      case: 'a snapshot id in a form ids never have',
      args: ['restore', '--no-switch', '--target-bucket', 'cli-x', '--snapshot', '20261123T0200Z'],
      env: {},
      names: ['--snapshot: a snapshot id such as'],
      fields: [],
    },
    {
      case: 'a backup ttl past the workflow maximum',
      args: ['backup', '--source-bucket', 'cli-registry', '--ttl-days', '100000'],
      env: {},
      names: ['--ttl-days: '],
      fields: ['ttlDays'],
    },
    {
      case: 'a registry URL from the environment that is no URL',
      args: ['verify'],
      env: { REGVAULT_REGISTRY_URL: 'registry.example.com' },
      names: ['--registry-url (from REGVAULT_REGISTRY_URL): '],
      fields: [],
    },
    {
      case: 'a vault bucket from the environment S3 refuses',
      args: ['snapshots', 'list'],
      env: { REGVAULT_VAULT_BUCKET: 'Bad_Bucket' },
      names: ['--vault-bucket (from REGVAULT_VAULT_BUCKET): a bucket name'],
      fields: [],
    },
    {
      case: 'verify without a registry URL anywhere',
      args: ['verify'],
      env: {},
      names: ['--registry-url (or REGVAULT_REGISTRY_URL / registryUrl in the config file): '],
      fields: [],
    },
    {
      case: 'a snapshot id to show that is no id',
      args: ['snapshots', 'show', 'yesterday'],
      env: {},
      names: ['<id>: expected an id such as 20261123T020000.000Z-4f9c2a, or latest'],
      fields: [],
    },
  ])(
    'exits 2 before anything runs, naming the flag, for $case',
    async ({ args, env: extra, names, fields }) => {
      // Act
      const run = await regvault([...args, '--json'], { ...vault, ...extra });
      // Assess
      expect(run.code).toBe(2);
      expect(jsonLines(run.stdout).filter((line) => line['event'] === 'state')).toEqual([]);
      for (const name of names) expect(run.stderr).toContain(name);
      for (const field of fields) expect(run.stderr).not.toContain(field);
    },
  );

  it('names --target-bucket and --allow-non-empty when the workflow finds the target not empty', async () => {
    // Act
    const run = await regvault(
      ['restore', '--no-switch', '--target-bucket', 'cli-registry', '--json'],
      vault,
    );
    // Assess
    expect(run.code).toBe(2);
    const result = jsonLines(run.stdout).at(-1);
    for (const text of [run.stderr, String(result?.['error'])]) {
      expect(text).toContain('--target-bucket: it holds objects');
      expect(text).toContain('pass --allow-non-empty');
      expect(text).not.toContain('allowNonEmptyTarget');
      expect(text).not.toContain('target.bucket');
    }
    expect(result).toMatchObject({ event: 'result', ok: false, exitCode: 2, rolledBack: false });
  });

  it('shows the latest snapshot, and a snapshot by its id', async () => {
    // Act
    const latest = await regvault(['snapshots', 'show', 'latest', '--json'], vault);
    const byId = await regvault(['snapshots', 'show', snapshotId, '--json'], vault);
    // Assess
    expect(latest.code).toBe(0);
    expect(byId.code).toBe(0);
    expect(jsonLines(latest.stdout).at(-1)?.['manifest']).toMatchObject({
      id: snapshotId,
      status: 'complete',
    });
    expect(jsonLines(byId.stdout).at(-1)?.['manifest']).toEqual(
      jsonLines(latest.stdout).at(-1)?.['manifest'],
    );
  });
});

describe('snapshots prune says why it keeps each snapshot', () => {
  const vault = 'cli-vault-prune';
  /** The snapshots in `vault`, oldest first. */
  const ids: string[] = [];
  const backup = async (...extra: string[]) => {
    const run = await regvault(
      [
        'backup',
        '--source-bucket',
        'cli-registry',
        '--source-endpoint',
        s3.endpoint,
        ...extra,
        '--json',
      ],
      { REGVAULT_VAULT_BUCKET: vault },
    );
    expect(run.code).toBe(0);
    ids.push(snapshotIdOf(run));
  };
  /** A dry-run prune of `on.bucket`, each snapshot named by its index in `on.ids`. */
  const prune = async (
    args: readonly string[],
    on: { bucket: string; ids: readonly string[] } = { bucket: vault, ids },
  ) => {
    const run = await regvault(['snapshots', 'prune', '--dry-run', ...args, '--json'], {
      REGVAULT_VAULT_BUCKET: on.bucket,
    });
    expect(run.code).toBe(0);
    const result = jsonLines(run.stdout).at(-1) ?? {};
    const rules = (key: 'kept' | 'expired') =>
      Object.fromEntries(
        (key === 'kept'
          ? (result['kept'] as Array<{ id: string; rule: string }>)
          : (result['plan'] as { expire: Array<{ id: string; rule: string }> }).expire
        ).map((v) => [on.ids.indexOf(v.id), v.rule]),
      );
    return { result, kept: rules('kept'), expired: rules('expired') };
  };

  beforeAll(async () => {
    await createBucket(client, vault);
    // 0 and 1 plain, 2 with a ttl of its own (it takes no keep-last place), 3 the newest.
    await backup();
    await backup();
    await backup('--ttl-days', '30');
    await backup();
  }, 180_000);

  it('keeps everything within the grace period and says so plainly, in JSON and text', async () => {
    // Act
    const { result, kept, expired } = await prune(['--keep-last', '2']);
    const text = await regvault(['snapshots', 'prune', '--dry-run', '--keep-last', '2'], {
      REGVAULT_VAULT_BUCKET: vault,
    });
    // Assess
    expect(expired).toEqual({});
    expect(kept).toEqual({
      0: 'grace-period',
      1: 'keep-last',
      2: 'own-ttl',
      3: 'newest-complete',
    });
    expect(result['deletedSnapshots']).toEqual([]);
    expect(result['grace']).toContain(
      'the 1 hour grace period kept everything this prune would delete: 1 snapshot the policy expires',
    );
    expect(result['grace']).toContain('--grace-minutes');
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('kept 4 snapshots:');
    expect(text.stdout).toMatch(new RegExp(`${ids[0]}\\s+grace-period\\s+would expire`));
    expect(text.stdout).toMatch(new RegExp(`${ids[1]}\\s+keep-last\\s+one of the last 2`));
    expect(text.stdout).toContain('kept everything this prune would delete');
  });

  it('expires what the policy expires once the grace period is 0, keeping the rest by rule', async () => {
    // Act
    const { result, kept, expired } = await prune(['--keep-last', '2', '--grace-minutes', '0']);
    const byTtl = await prune(['--ttl-days', '1', '--grace-minutes', '0']);
    // Assess
    expect(expired).toEqual({ 0: 'policy' });
    expect(kept).toEqual({ 1: 'keep-last', 2: 'own-ttl', 3: 'newest-complete' });
    expect(result['deletedSnapshots']).toEqual([ids[0]]);
    expect(result['grace']).toBeUndefined();
    expect(byTtl.kept).toEqual({
      0: 'within-ttl',
      1: 'within-ttl',
      2: 'own-ttl',
      3: 'newest-complete',
    });
  });

  it('keeps a running backup and the snapshot it builds on', async () => {
    // Prepare: a copy of the vault (the other tests see no running backup), where a backup has
    // just written its running manifest
    const copy = 'cli-vault-prune-running';
    await createBucket(client, copy);
    await copyAllObjects(client, vault, copy);
    const newest = JSON.parse(
      (await readObject(client, copy, `snapshots/${ids[3]}/manifest.json`)).toString(),
    ) as { id: string; source: { bucket: string; endpoint?: string; prefix: string } };
    const now = new Date();
    const id = `${now.toISOString().replace(/[-:]/g, '')}-0c0c0c`;
    const running = {
      ...newest,
      id,
      runId: `backup-${id}`,
      status: 'running',
      startedAt: now.toISOString(),
      finishedAt: undefined,
      inventory: { records: 0, parts: [] },
    };
    // A running backup holds its run lease (taken before its manifest), here by this live process.
    await acquireRunLease(
      { location: locationOn(s3, copy, '', 'vault'), client },
      {
        runId: running.runId,
        snapshotId: id,
        source: {
          bucket: newest.source.bucket,
          prefix: newest.source.prefix,
          ...(newest.source.endpoint === undefined ? {} : { endpoint: newest.source.endpoint }),
        },
      },
      { ttlMs: LOCAL_LEASE_TTL_MS, holder: localLeaseHolder() },
      now,
    );
    await putObjects(client, copy, [
      { key: `snapshots/${id}/manifest.json`, body: JSON.stringify(running) },
    ]);
    // Act
    const { kept } = await prune(['--keep-last', '2', '--grace-minutes', '0'], {
      bucket: copy,
      ids: [...ids, id],
    });
    // Assess
    expect(kept).toMatchObject({ 3: 'base-of-running-backup', 4: 'running' });
  });
});

describe('verify --push-test', () => {
  const vault = { REGVAULT_VAULT_BUCKET: SHARED.vault };

  beforeAll(() => sharedSnapshot(), 120_000);
  // The test points the registry at a bucket of its own; the other tests expect the registry's own bucket.
  afterEach(() => serveBucket(REGISTRY_BUCKET), 60_000);

  it('pushes a test image into the registry and says so', async () => {
    // Prepare: the registry serves a copy of the bucket the shared snapshot holds, so the pushes
    // land in a bucket no other test reads
    await createBucket(client, 'cli-push');
    await copyAllObjects(client, REGISTRY_BUCKET, 'cli-push');
    await serveBucket('cli-push');
    // Act
    const json = await regvault(
      ['verify', '--registry-url', cluster.registryUrl, '--push-test', '--json'],
      vault,
    );
    const text = await regvault(
      ['verify', '--registry-url', cluster.registryUrl, '--push-test'],
      vault,
    );
    // Assess
    expect(json.code).toBe(0);
    expect(jsonLines(json.stdout).at(-1)).toMatchObject({
      event: 'result',
      ok: true,
      pushTest: true,
    });
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('and it accepted a test push');
    const tags = await fetch(`${cluster.registryUrl}/v2/regvault-verify/push-test/tags/list`);
    expect(tags.status).toBe(200);
    expect(((await tags.json()) as { tags: string[] }).tags).toContain('regvault-push-test');
  });
});
