/**
 * `regvault export` and `regvault import` against a real S3 server process
 * and real `docker-registry` processes: a snapshot's repository written as
 * an OCI image layout that the real `skopeo` copies every tag from, the same
 * written as a tar and pushed by `import` into a registry that never saw it
 * (its referrer too), a corrupt vault blob refused with no file left, and
 * bad input refused before anything is written.
 */
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { RegistryClient } from '../../functions/commons/registry/client.ts';
import { vaultKeys } from '../../functions/commons/vault/format.ts';
import {
  type PopulatedRegistry,
  populateRegistry,
  pullImage,
  pushLayout,
} from '../../sandbox/images/index.ts';
import { type RegistryHandle, startRegistry } from '../../sandbox/registry/index.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { type CliRun, jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { pushReferrer } from '../support/referrers.ts';
import { putObjects, readObject, serverWithBuckets, storageOn, vaultDeps } from '../support/s3.ts';

const LIVE = 'export-registry';
const VAULT = 'export-vault';
const NAMES = ['team-0/app-0', 'team-1/app-1'];

let s3: S3ServerHandle;
let client: S3Client;
let source: RegistryHandle;
/** Where skopeo copies exported tags to. */
let copies: RegistryHandle;
/** The registry `import` fills: it has never seen these images. */
let imported: RegistryHandle;
let images: PopulatedRegistry;
let snapshotId: string;
let work: string;
let referrer: { subject: string; digest: string };

const regvault = (args: readonly string[], registryUrl?: string): Promise<CliRun> =>
  runRegvault(
    [...args, '--json'],
    sandboxEnv(s3, VAULT, registryUrl === undefined ? {} : { REGVAULT_REGISTRY_URL: registryUrl }),
  );
const resultOf = (run: CliRun) => jsonLines(run.stdout).at(-1) as Record<string, unknown>;
const tagsOf = (name: string) => images.repositories.find((r) => r.name === name)?.tags ?? {};

beforeAll(async () => {
  ({ server: s3, client } = await serverWithBuckets('s3-export', [LIVE, VAULT]));
  source = await startRegistry({ storage: { kind: 's3', ...storageOn(s3, LIVE) } });
  copies = await startRegistry({ storage: { kind: 'filesystem' } });
  imported = await startRegistry({ storage: { kind: 'filesystem' } });
  images = await populateRegistry(source.host, {
    repositories: NAMES.length,
    names: NAMES,
    tagsPerRepository: 2,
    multiArch: true,
    layerSizes: [3000],
    sharedBaseSize: 2048,
  });
  const subject = tagsOf('team-0/app-0')['v1.1'] ?? '';
  const served = await new RegistryClient(source.url).manifest('team-0/app-0', subject);
  referrer = {
    subject,
    digest: await pushReferrer(source.url, 'team-0/app-0', { ...served, digest: subject }, 'sig'),
  };
  const deps = vaultDeps(s3, VAULT, '');
  try {
    const backup = await runBackupLocally(
      { source: { bucket: LIVE, endpoint: s3.endpoint, region: s3.region } },
      { deps },
    );
    expect(backup.cause).toBeUndefined();
    snapshotId = (backup.output as { snapshotId: string }).snapshotId;
  } finally {
    deps.close();
  }
  work = await mkdtemp(join(tmpdir(), 'regvault-export-'));
}, 240_000);

afterAll(async () => {
  client?.destroy();
  await Promise.all([source?.stop(), copies?.stop(), imported?.stop()]);
  await s3?.stop();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe('exporting a repository for an air-gapped site', () => {
  it('writes an OCI image layout that skopeo copies every tag from', async () => {
    // Prepare
    const dir = join(work, 'layout');
    // Act
    const run = await regvault([
      'export',
      '--snapshot',
      snapshotId,
      '--repository',
      'team-0/app-0',
      '--to',
      dir,
    ]);
    // Assess: every tag (the multi-arch one, the signed one, the fallback tag) copies as it was
    expect(run.code).toBe(0);
    const refs = (resultOf(run)['export'] as { refs: string[] }).refs;
    const fallback = `sha256-${referrer.subject.slice(7)}`;
    expect(refs.sort()).toEqual(
      ['v1.0', 'v1.1', fallback].map((tag) => `team-0/app-0:${tag}`).sort(),
    );
    const served = new RegistryClient(copies.url);
    for (const ref of refs) {
      const tag = ref.slice(ref.lastIndexOf(':') + 1);
      await pushLayout(dir, ref, `${copies.host}/copied/app:${tag}`);
      const expected = tag === fallback ? undefined : tagsOf('team-0/app-0')[tag];
      const digest = await served.manifestDigest('copied/app', tag);
      if (expected !== undefined) expect(digest).toBe(expected);
      else expect(digest).toMatch(/^sha256:/);
    }
    expect((await readdir(join(dir, 'blobs', 'sha256'))).some((f) => f.endsWith('.partial'))).toBe(
      false,
    );
  }, 180_000);

  it('round-trips through a tar file and import into a registry that never had the images', async () => {
    // Prepare
    const tar = join(work, 'all.tar');
    // Act
    const exported = await regvault([
      'export',
      '--snapshot',
      snapshotId,
      '--repository',
      '**',
      '--to',
      tar,
    ]);
    const run = await regvault(['import', '--from', tar], imported.url);
    // Assess
    expect(exported.code).toBe(0);
    expect(run.code).toBe(0);
    const live = new RegistryClient(imported.url);
    for (const name of NAMES)
      for (const [tag, digest] of Object.entries(tagsOf(name))) {
        expect(await live.manifestDigest(name, tag)).toBe(digest);
        expect((await pullImage(`${imported.host}/${name}:${tag}`)).digest).toBe(digest);
      }
    const index = await live.manifestDigest('team-0/app-0', `sha256-${referrer.subject.slice(7)}`);
    const listed = (await live.manifest('team-0/app-0', index ?? '')).manifests.map(
      (m) => m.digest,
    );
    expect(listed).toEqual([referrer.digest]);
    // A second import finds every blob there already.
    const again = await regvault(['import', '--from', tar], imported.url);
    expect((resultOf(again)['import'] as { blobsUploaded: number }).blobsUploaded).toBe(0);
  }, 180_000);

  it('refuses a blob that is corrupt in the vault and leaves no tar behind', async () => {
    // Prepare: one layer of team-1 flipped in the vault, put back afterwards
    const image = tagsOf('team-1/app-1')['v1.0'] ?? '';
    const layers = (await new RegistryClient(source.url).manifest('team-1/app-1', image)).blobs;
    const digest = layers.at(-1)?.digest ?? '';
    const key = vaultKeys.blob('', digest);
    const original = await readObject(client, VAULT, key);
    const flipped = Buffer.from(original);
    flipped[0] = (flipped[0] ?? 0) ^ 0xff;
    await putObjects(client, VAULT, [{ key, body: flipped }]);
    const tar = join(work, 'corrupt.tar');
    try {
      // Act
      const run = await regvault([
        'export',
        '--snapshot',
        snapshotId,
        '--repository',
        'team-1/app-1',
        '--to',
        tar,
      ]);
      // Assess
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`blob ${digest} is corrupt in the vault`);
      await expect(stat(tar)).rejects.toThrow();
    } finally {
      await putObjects(client, VAULT, [{ key, body: original }]);
    }
  }, 60_000);

  it.each([
    { case: 'no repository', args: ['--to', 'x'], says: '--repository: a repository name' },
    {
      case: 'a repository the snapshot does not hold',
      args: ['--repository', 'team-9/app-9', '--to', 'x'],
      says: '--repository: team-9/app-9 is not in snapshot',
    },
  ])(
    'refuses an export of $case with exit 2',
    async ({ args, says }) => {
      // Act
      const run = await regvault(['export', '--snapshot', snapshotId, ...args]);
      // Assess
      expect(run.code).toBe(2);
      expect(run.stderr).toContain(says);
      await expect(stat('x')).rejects.toThrow();
    },
    60_000,
  );

  it('refuses an import from a path that holds no layout with exit 2', async () => {
    // Act
    const run = await regvault(['import', '--from', join(work, 'nothing-here')], imported.url);
    // Assess
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--from: ');
  }, 60_000);
});
