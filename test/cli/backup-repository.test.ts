/**
 * `regvault backup --repository <glob> --exclude-repository <glob>`: a
 * partial snapshot of a real `docker-registry`'s bucket on a real S3 server
 * process. It holds the selected repositories' links and only the blobs they
 * link to, records its selection, passes its own checks and fsck (the other
 * repositories are absent by design), says it is partial wherever it is
 * restored, and is judged by retention apart from the whole registry's.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import type { SnapshotManifest } from '../../functions/commons/vault/format.ts';
import { readInventory, readManifest } from '../../functions/commons/vault/store.ts';
import { type PopulatedRegistry, populateRegistry } from '../../sandbox/images/index.ts';
import { type RegistryHandle, startRegistry } from '../../sandbox/registry/index.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { type CliRun, jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import {
  createBucket,
  listAll,
  putObjects,
  serverWithBuckets,
  storageOn,
  vaultDeps,
} from '../support/s3.ts';

const LIVE = 'partial-registry';
const VAULT = 'partial-vault';
const NAMES = ['team-0/app-0', 'team-0/tmp', 'team-1/app-1'];

let s3: S3ServerHandle;
let client: S3Client;
let registry: RegistryHandle;
let images: PopulatedRegistry;
let fullId: string;
let partial: SnapshotManifest;
let deps: ReturnType<typeof vaultDeps>;

const env = () => sandboxEnv(s3, VAULT, { REGVAULT_REGISTRY_URL: registry.url });
const regvault = (...args: string[]): Promise<CliRun> => runRegvault([...args, '--json'], env());
const resultOf = (run: CliRun) => jsonLines(run.stdout).at(-1) as Record<string, unknown>;

beforeAll(async () => {
  ({ server: s3, client } = await serverWithBuckets('s3-backup-repository', [LIVE, VAULT]));
  registry = await startRegistry({ storage: { kind: 's3', ...storageOn(s3, LIVE) } });
  // No shared base layer: each repository's blobs are its own.
  images = await populateRegistry(registry.host, {
    repositories: NAMES.length,
    names: NAMES,
    tagsPerRepository: 2,
    layerSizes: [3000],
    sharedBaseSize: 0,
  });
  deps = vaultDeps(s3, VAULT, '', { registryUrl: registry.url });
  const full = await runBackupLocally(
    { source: { bucket: LIVE, endpoint: s3.endpoint, region: s3.region } },
    { deps },
  );
  expect(full.cause).toBeUndefined();
  fullId = (full.output as { snapshotId: string }).snapshotId;
  const run = await regvault(
    'backup',
    '--source-bucket',
    LIVE,
    '--repository',
    'team-0/*',
    '--exclude-repository',
    'team-0/tmp',
  );
  expect(run.stderr).toBe('');
  const id = (resultOf(run)['snapshot'] as { snapshotId: string }).snapshotId;
  partial = (await readManifest(deps.vault, id)) as SnapshotManifest;
}, 240_000);

afterAll(async () => {
  deps?.close();
  client?.destroy();
  await registry?.stop();
  await s3?.stop();
});

describe('a partial backup', () => {
  it('holds the selected repositories and only the blobs they link to, and records its selection', async () => {
    // Act
    const keys = (await readInventory(deps.vault, partial)).map((r) => r.key);
    // Assess
    expect(partial.status).toBe('complete');
    expect(partial.selection).toEqual({
      repositories: ['team-0/*'],
      excludeRepositories: ['team-0/tmp'],
    });
    expect(partial.counts.repositories).toBe(1);
    expect(Object.values(partial.checks).every((check) => check.ok)).toBe(true);
    const repositories = new Set(
      keys.flatMap((key) => /repositories\/(.+?)\/_/.exec(key)?.[1] ?? []),
    );
    expect([...repositories]).toEqual(['team-0/app-0']);
    const wanted = images.repositories.find((r) => r.name === 'team-0/app-0');
    const blobs = keys.flatMap(
      (key) => /blobs\/sha256\/..\/([0-9a-f]{64})\/data$/.exec(key)?.[1] ?? [],
    );
    // Each image: its manifest, config and one layer, none shared with the other repositories.
    expect(blobs).toHaveLength(Object.keys(wanted?.tags ?? {}).length * 3);
    for (const digest of Object.values(wanted?.tags ?? {}))
      expect(blobs).toContain(digest.slice('sha256:'.length));
  });

  it('passes fsck, which says it is partial instead of reporting the other repositories missing', async () => {
    // Act
    const run = await regvault('fsck', '--snapshot', partial.id, '--deep');
    // Assess
    expect(run.code).toBe(0);
    expect(resultOf(run)).toMatchObject({ ok: true, problems: [] });
    expect(String(resultOf(run)['target'])).toContain('partial: team-0/* except team-0/tmp');
  }, 60_000);

  it('says it is partial when restored whole, and names the selection when a repository is not in it', async () => {
    // Prepare
    await createBucket(client, 'partial-restored');
    // Act
    const whole = await regvault(
      'restore',
      '--snapshot',
      partial.id,
      '--target-bucket',
      'partial-restored',
      '--no-switch',
    );
    const one = await regvault(
      'restore',
      '--snapshot',
      partial.id,
      '--target-bucket',
      LIVE,
      '--repository',
      'team-1/app-1',
      '--into-live',
    );
    // Assess
    expect(whole.code).toBe(0);
    expect(jsonLines(whole.stdout)).toContainEqual(
      expect.objectContaining({ event: 'warning', partial: partial.selection }),
    );
    expect(whole.stdout).toContain('PARTIAL');
    expect(one.code).toBe(2);
    expect(one.stderr).toContain('a partial snapshot of team-0/* except team-0/tmp');
  }, 120_000);

  it('refuses a selection of repositories in a bucket that holds no registry, writing nothing', async () => {
    // Prepare
    await createBucket(client, 'partial-plain');
    await putObjects(client, 'partial-plain', [{ key: 'notes/a.txt', body: 'a' }]);
    const before = await listAll(client, VAULT);
    // Act
    const run = await regvault(
      'backup',
      '--source-bucket',
      'partial-plain',
      '--repository',
      'team-0/*',
    );
    // Assess
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--repository: s3://partial-plain/ holds no registry layout');
    expect(await listAll(client, VAULT)).toEqual(before);
  }, 60_000);

  it('is kept by retention apart from the whole registry snapshots', async () => {
    // Act
    const run = await regvault('snapshots', 'prune', '--keep-last', '1', '--dry-run');
    // Assess
    expect(run.code).toBe(0);
    const kept = resultOf(run)['kept'] as Array<{ id: string; rule: string }>;
    expect(kept).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ id: fullId, rule: 'newest-complete' }),
        expect.objectContaining({ id: partial.id, rule: 'newest-complete' }),
      ]),
    );
  }, 60_000);
});
