/**
 * `regvault restore --repository ... --into-live` against a real S3 server
 * process and a real `docker-registry` serving from the bucket the restore
 * writes into: a deleted repository comes back alone while another receives
 * pushes, a moved tag is kept unless asked, a dry run writes nothing, a
 * referrer comes back with its image and is listed, bad input writes nothing.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { RegistryClient } from '../../functions/commons/registry/client.ts';
import {
  type PopulatedRegistry,
  populateRegistry,
  pullImage,
  pushOneLayerImage,
} from '../../sandbox/images/index.ts';
import { type RegistryHandle, startRegistry } from '../../sandbox/registry/index.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { type CliRun, jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { pushReferrer } from '../support/referrers.ts';
import { deleteKeys, listAll, serverWithBuckets, storageOn, vaultDeps } from '../support/s3.ts';

const LIVE = 'live-registry';
const VAULT = 'vault';
const REPOSITORIES = [
  'team-0/app-0',
  'team-1/app-1',
  'team-2/app-2',
  'team-3/app-3',
  'team-4/app-4',
];
const V2 = 'docker/registry/v2/';

let s3: S3ServerHandle;
let client: S3Client;
let registry: RegistryHandle;
let images: PopulatedRegistry;
let snapshotId: string;
/** repository -> the referrer pushed for its v1.1 (team-0) or v1.0 (team-3), and its subject. */
const referrers = new Map<string, { subject: string; referrer: string }>();
/** A referrer of team-3's v1.0 known only by its `subject`: no fallback tag lists it. */
let subjectOnly: string;

const env = () => sandboxEnv(s3, VAULT, { REGVAULT_REGISTRY_URL: registry.url });
const restore = (...args: string[]): Promise<CliRun> =>
  runRegvault(
    ['restore', '--json', '--snapshot', snapshotId, '--target-bucket', LIVE, ...args],
    env(),
  );
const resultOf = (run: CliRun) => jsonLines(run.stdout).at(-1) as Record<string, unknown>;
const tagsOf = (name: string) => images.repositories.find((r) => r.name === name)?.tags ?? {};
const folderKeys = async (name: string) => [
  ...(await listAll(client, LIVE, `${V2}repositories/${name}/`)).keys(),
];

/** The blobs only `name` links to: what a garbage collection removes once the repository is gone. */
async function blobsOnlyIn(name: string): Promise<string[]> {
  const linked = new Map<string, Set<string>>();
  for (const key of (await listAll(client, LIVE, `${V2}repositories/`)).keys()) {
    const match =
      /^docker\/registry\/v2\/repositories\/(.+?)\/_(?:layers|manifests\/revisions)\/sha256\/([0-9a-f]{64})\/link$/.exec(
        key,
      );
    if (match?.[1] === undefined || match[2] === undefined) continue;
    linked.set(match[2], (linked.get(match[2]) ?? new Set()).add(match[1]));
  }
  return [...linked]
    .filter(([, names]) => names.size === 1 && names.has(name))
    .map(([hex]) => `${V2}blobs/sha256/${hex.slice(0, 2)}/${hex}/data`);
}

/** Deletes a repository as an operator would (its folder), and the blobs only it used. */
async function deleteRepository(name: string): Promise<void> {
  await deleteKeys(client, LIVE, [...(await blobsOnlyIn(name)), ...(await folderKeys(name))]);
}

/** Pushes a one-layer image to `repository:tag`; returns its digest. */
const pushNew = (repository: string, tag: string, seed: string): Promise<string> =>
  pushOneLayerImage(`${registry.host}/${repository}:${tag}`, seed, 4000);

/** Pushes a referrer of `repository:tag` and remembers it. */
async function signTag(repository: string, tag: string): Promise<void> {
  const digest = tagsOf(repository)[tag] ?? '';
  const served = await new RegistryClient(registry.url).manifest(repository, digest);
  const referrer = await pushReferrer(
    registry.url,
    repository,
    { digest, size: served.size, mediaType: served.mediaType },
    repository,
  );
  referrers.set(repository, { subject: digest, referrer });
}

beforeAll(async () => {
  ({ server: s3, client } = await serverWithBuckets('s3-restore-repository', [LIVE, VAULT]));
  registry = await startRegistry({
    storage: { kind: 's3', ...storageOn(s3, LIVE) },
    name: 'registry-restore-repository',
  });
  images = await populateRegistry(registry.host, {
    repositories: REPOSITORIES.length,
    names: REPOSITORIES,
    tagsPerRepository: 2,
    multiArch: true,
    layerSizes: [3000],
    sharedBaseSize: 2048,
  });
  await signTag('team-0/app-0', 'v1.1');
  await signTag('team-3/app-3', 'v1.0');
  const signed = referrers.get('team-3/app-3');
  const served = await new RegistryClient(registry.url).manifest(
    'team-3/app-3',
    signed?.subject ?? '',
  );
  subjectOnly = await pushReferrer(
    registry.url,
    'team-3/app-3',
    { digest: served.digest, size: served.size, mediaType: served.mediaType },
    'sbom',
    false,
  );
  const deps = vaultDeps(s3, VAULT, '', { registryUrl: registry.url });
  try {
    const result = await runBackupLocally(
      { source: { bucket: LIVE, endpoint: s3.endpoint, region: s3.region } },
      { deps },
    );
    expect(result.cause).toBeUndefined();
    snapshotId = (result.output as { snapshotId: string }).snapshotId;
  } finally {
    deps.close();
  }
}, 240_000);

afterAll(async () => {
  client?.destroy();
  await registry?.stop();
  await s3?.stop();
});

describe('restoring one repository into the live registry', () => {
  it('brings a deleted repository back alone while another repository receives pushes', async () => {
    // Prepare: team-0 deleted with the blobs only it used; team-2 as it is now
    await deleteRepository('team-0/app-0');
    const untouched = await listAll(client, LIVE, `${V2}repositories/team-2/app-2/`);
    // Act: the restore, and pushes into team-1 at the same time
    const [run, pushed] = await Promise.all([
      restore('--repository', 'team-0/app-0', '--into-live'),
      Promise.all([0, 1, 2].map((i) => pushNew('team-1/app-1', `during-${i}`, `during-${i}`))),
    ]);
    // Assess: the restore verified, every tag of both pulls as pushed
    expect(run.stderr).not.toContain(s3.credentials.secretAccessKey);
    expect(run.code).toBe(0);
    const restored = resultOf(run)['restore'] as {
      repositories: Array<{ name: string; added: string[]; referrers: Record<string, string[]> }>;
      blobs: { copied: number };
      verify: { ok: boolean; pulled: number; referrersListed: number; referrersBy: string };
    };
    const sign = referrers.get('team-0/app-0');
    expect(restored.repositories).toEqual([
      expect.objectContaining({
        name: 'team-0/app-0',
        added: [`sha256-${sign?.subject.slice(7)}`, 'v1.0', 'v1.1'].sort(),
        referrers: { [sign?.subject ?? '']: [sign?.referrer] },
      }),
    ]);
    expect(restored.blobs.copied).toBeGreaterThan(0);
    expect(restored.verify).toMatchObject({
      ok: true,
      referrersListed: 1,
      referrersBy: 'fallback-tag',
    });
    for (const [tag, digest] of Object.entries(tagsOf('team-0/app-0')))
      expect((await pullImage(`${registry.host}/team-0/app-0:${tag}`)).digest).toBe(digest);
    for (const [i, digest] of pushed.entries())
      expect((await pullImage(`${registry.host}/team-1/app-1:during-${i}`)).digest).toBe(digest);
    expect(await listAll(client, LIVE, `${V2}repositories/team-2/app-2/`)).toEqual(untouched);
  }, 180_000);

  it('restores one tag with its referrer, and not the tags left out', async () => {
    // Prepare
    await deleteRepository('team-3/app-3');
    const sign = referrers.get('team-3/app-3');
    // Act
    const run = await restore('--repository', 'team-3/app-3', '--tag', 'v1.0', '--into-live');
    // Assess
    expect(run.code).toBe(0);
    const live = new RegistryClient(registry.url);
    expect((await live.tags('team-3/app-3')).sort()).toEqual(
      [`sha256-${sign?.subject.slice(7)}`, 'v1.0'].sort(),
    );
    const index = await live.manifestDigest('team-3/app-3', `sha256-${sign?.subject.slice(7)}`);
    const listed = (await live.manifest('team-3/app-3', index ?? '')).manifests.map(
      (m) => m.digest,
    );
    expect(listed).toEqual([sign?.referrer]);
    expect(await live.manifestDigest('team-3/app-3', sign?.referrer ?? '')).toBe(sign?.referrer);
    expect(await live.manifestDigest('team-3/app-3', subjectOnly)).toBe(subjectOnly);
    const restored = resultOf(run)['restore'] as {
      repositories: Array<{ referrers: Record<string, string[]> }>;
      verify: { ok: boolean; referrersBy: string };
    };
    expect(restored.repositories[0]?.referrers[sign?.subject ?? '']?.sort()).toEqual(
      [sign?.referrer, subjectOnly].sort(),
    );
    expect(restored.verify).toMatchObject({ ok: true, referrersBy: 'fallback-tag' });
    expect(await live.manifestDigest('team-3/app-3', 'v1.1')).toBeUndefined();
  }, 120_000);

  it('keeps a tag that was pushed again since the snapshot unless --overwrite-tags', async () => {
    // Prepare: v1.0 of team-1 now points at a new image
    const moved = await pushNew('team-1/app-1', 'v1.0', 'retagged');
    const live = new RegistryClient(registry.url);
    // Act
    const kept = await restore('--repository', 'team-1/app-1', '--tag', 'v1.0', '--into-live');
    const keptDigest = await live.manifestDigest('team-1/app-1', 'v1.0');
    const overwritten = await restore(
      '--repository',
      'team-1/app-1',
      '--tag',
      'v1.0',
      '--into-live',
      '--overwrite-tags',
    );
    // Assess
    expect(kept.code).toBe(0);
    expect(keptDigest).toBe(moved);
    const snapshotDigest = tagsOf('team-1/app-1')['v1.0'];
    expect((resultOf(kept)['restore'] as { repositories: unknown[] }).repositories).toEqual([
      expect.objectContaining({ kept: [{ tag: 'v1.0', live: moved, snapshot: snapshotDigest }] }),
    ]);
    expect(kept.stderr + kept.stdout).toContain('--overwrite-tags');
    expect(overwritten.code).toBe(0);
    expect(await live.manifestDigest('team-1/app-1', 'v1.0')).toBe(snapshotDigest);
  }, 120_000);

  it('stops at the step that lost objects, writing no tag, and a second run mends it', async () => {
    // Prepare: team-4 and its blobs gone; the live bucket refuses blob copies
    await deleteRepository('team-4/app-4');
    await s3.injectFaults({
      operation: 'CopyObject',
      status: 403,
      code: 'AccessDenied',
      count: 1_000,
      bucket: LIVE,
      keyPrefix: `${V2}blobs/`,
    });
    // Act
    let failed: CliRun;
    try {
      failed = await restore('--repository', 'team-4/app-4', '--into-live');
    } finally {
      await s3.clearFaults();
    }
    const afterFailure = await folderKeys('team-4/app-4');
    const mended = await restore('--repository', 'team-4/app-4', '--into-live');
    // Assess: exit 3, nothing of the repository written; the second run restores it all
    expect(failed.code).toBe(3);
    expect(failed.stderr).toContain('restoring the blobs failed');
    expect(failed.stderr).toContain('were not written');
    expect(afterFailure).toEqual([]);
    expect(mended.code).toBe(0);
    for (const [tag, digest] of Object.entries(tagsOf('team-4/app-4')))
      expect((await pullImage(`${registry.host}/team-4/app-4:${tag}`)).digest).toBe(digest);
  }, 120_000);

  it('lists what a dry run would add and writes nothing', async () => {
    // Prepare: a tag of team-2 deleted
    await deleteKeys(
      client,
      LIVE,
      (await folderKeys('team-2/app-2')).filter((key) => key.includes('/_manifests/tags/v1.1/')),
    );
    const before = await listAll(client, LIVE);
    const vaultBefore = await listAll(client, VAULT);
    await s3.resetCounters();
    // Act
    const run = await restore('--repository', 'team-2/*', '--into-live', '--dry-run');
    // Assess
    const counters = await s3.counters();
    expect(run.code).toBe(0);
    expect((resultOf(run)['restore'] as { repositories: unknown[] }).repositories).toEqual([
      expect.objectContaining({ name: 'team-2/app-2', added: ['v1.1'], unchanged: 1 }),
    ]);
    expect(run.stdout).toContain('nothing was written');
    for (const write of ['PutObject', 'CopyObject', 'UploadPart', 'DeleteObject', 'DeleteObjects'])
      expect(counters[write] ?? 0).toBe(0);
    expect(await listAll(client, LIVE)).toEqual(before);
    expect(await listAll(client, VAULT)).toEqual(vaultBefore);
  }, 60_000);

  it.each([
    {
      case: 'a repository the snapshot does not hold',
      args: ['--repository', 'team-9/app-9', '--into-live'],
      says: ['--repository: team-9/app-9 is not in snapshot', 'snapshots show'],
    },
    {
      case: 'a glob that matches nothing',
      args: ['--repository', 'nobody/*', '--into-live'],
      says: ['--repository: nobody/* matches no repository', 'team-0/app-0'],
    },
    {
      case: 'a tag glob that matches nothing',
      args: ['--repository', 'team-0/app-0', '--tag', 'v9.*', '--into-live'],
      says: ['--tag: v9.* matches no tag', 'v1.0'],
    },
    {
      case: '--repository without --into-live',
      args: ['--repository', 'team-0/app-0'],
      says: ['--into-live: ', 'pass --into-live'],
    },
    {
      case: '--into-live without --repository',
      args: ['--into-live'],
      says: ['--repository: name the repositories'],
    },
    {
      case: 'a flag of the full restore',
      args: ['--repository', 'team-0/app-0', '--into-live', '--target-secret', 'x'],
      says: ['--target-secret: not taken with --into-live'],
    },
  ])(
    'refuses $case with exit 2 before writing',
    async ({ args, says }) => {
      // Prepare
      await s3.resetCounters();
      // Act
      const run = await restore(...args);
      // Assess
      const counters = await s3.counters();
      expect(run.code).toBe(2);
      const result = resultOf(run);
      expect(result['exitCode']).toBe(2);
      for (const text of says) {
        expect(run.stderr).toContain(text);
        expect(JSON.stringify(result['issues'])).toContain(text.replaceAll('"', '\\"'));
      }
      for (const write of ['PutObject', 'CopyObject', 'UploadPart', 'DeleteObject'])
        expect(counters[write] ?? 0).toBe(0);
    },
    60_000,
  );

  it('refuses a restore into the live registry without its URL', async () => {
    // Act
    const run = await runRegvault(
      [
        'restore',
        '--snapshot',
        snapshotId,
        '--target-bucket',
        LIVE,
        '--repository',
        'team-0/app-0',
        '--into-live',
      ],
      sandboxEnv(s3, VAULT),
    );
    // Assess
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--registry-url (or REGVAULT_REGISTRY_URL');
  }, 60_000);
});
