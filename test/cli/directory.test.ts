/**
 * `regvault backup --source-dir` and `restore --target-dir`: a real
 * `docker-registry` on its filesystem driver, backed up from its directory
 * into a vault on a real S3 server process as a normal snapshot (inventory,
 * digest-checked blobs, incremental), checked by fsck, restored into a new
 * directory that a second registry then serves, every image pulled and
 * digest-checked.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { RegistryClient } from '../../functions/commons/registry/client.ts';
import { verifyRegistry } from '../../functions/commons/registry/verify.ts';
import type { SnapshotManifest } from '../../functions/commons/vault/format.ts';
import { populateRegistry, pushOneLayerImage } from '../../sandbox/images/index.ts';
import { startRegistry } from '../../sandbox/registry/index.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { type CliRun, jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { listAll, readObject, serverWithBuckets } from '../support/s3.ts';

const VAULT = 'directory-vault';

let firstTree: Map<string, string>;
let s3: S3ServerHandle;
let client: S3Client;
let work: string;
let source: string;
let expected: Awaited<ReturnType<typeof populateRegistry>>;
let first: Record<string, unknown>;

const regvault = (...args: string[]): Promise<CliRun> =>
  runRegvault([...args, '--json'], sandboxEnv(s3, VAULT));
const resultOf = (run: CliRun) => jsonLines(run.stdout).at(-1) as Record<string, unknown>;
const snapshotOf = (run: CliRun) => resultOf(run)['snapshot'] as Record<string, unknown>;

/** Every file under `dir` by its path relative to it, with the SHA-256 of its bytes. */
async function tree(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    files.set(
      relative(dir, path),
      createHash('sha256')
        .update(await readFile(path))
        .digest('hex'),
    );
  }
  return files;
}

/** Runs `act` with a registry serving `directory`, stopping it after. */
async function serving<T>(directory: string, act: (url: string, host: string) => Promise<T>) {
  const registry = await startRegistry({ storage: { kind: 'filesystem', directory } });
  try {
    return await act(registry.url, registry.host);
  } finally {
    await registry.stop();
  }
}

beforeAll(async () => {
  ({ server: s3, client } = await serverWithBuckets('s3-directory', [VAULT]));
  work = await mkdtemp(join(tmpdir(), 'regvault-directory-'));
  source = join(work, 'source');
  await mkdir(source);
  expected = await serving(source, (_, host) =>
    populateRegistry(host, { repositories: 2, tagsPerRepository: 2, multiArch: true }),
  );
  const backup = await regvault('backup', '--source-dir', source);
  if (backup.code !== 0) throw new Error(`the first backup failed: ${backup.stderr}`);
  first = snapshotOf(backup);
  // What the first snapshot holds: a later test pushes more into the source.
  firstTree = await tree(source);
}, 180_000);

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe('a registry on a directory', () => {
  it('is backed up as a normal snapshot, every blob checked against its digest', async () => {
    // Act
    const manifest = JSON.parse(
      (
        await readObject(client, VAULT, `snapshots/${String(first['snapshotId'])}/manifest.json`)
      ).toString(),
    ) as SnapshotManifest;
    const fsck = await regvault('fsck', '--snapshot', String(first['snapshotId']), '--deep');
    // Assess
    expect(first['status']).toBe('complete');
    expect(first['repositories']).toBe(2);
    expect(first['tags']).toBe(4);
    expect(first['failed']).toBe(0);
    expect(manifest.source).toMatchObject({ profile: 'directory', endpoint: `file://${source}` });
    expect(manifest.checks['digests']?.ok).toBe(true);
    expect(fsck.code).toBe(0);
    // The first snapshot's blobs: a later test pushes more into the source and the pool.
    const blobs = manifest.counts.blobs;
    const sourceBlobs = [...firstTree.keys()].filter((path) =>
      /\/blobs\/sha256\/[0-9a-f]{2}\/[0-9a-f]{64}\/data$/.test(path),
    );
    expect(blobs).toBe(sourceBlobs.length);
    expect(blobs).toBe(expected.blobs.size);
    expect(manifest.checks['digests']?.detail).toContain(
      `${blobs} hashed while streaming, 0 unverified`,
    );
  });

  it('restores into a new directory that a registry serves, every image pulled and digest-checked', async () => {
    // Prepare
    const target = join(work, 'restored');
    await mkdir(target);
    // Act
    const restore = await regvault(
      'restore',
      '--no-switch',
      '--snapshot',
      String(first['snapshotId']),
      '--target-dir',
      target,
    );
    const report = await serving(target, (url) =>
      verifyRegistry(new RegistryClient(url), expected, { sample: Number.POSITIVE_INFINITY }),
    );
    // Assess
    expect(restore.code).toBe(0);
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.pulls.length).toBe(4);
    const to = await tree(target);
    const kept = [...firstTree].filter(([path]) => !path.includes('/_uploads/'));
    expect(new Map(kept)).toEqual(to);
  });

  it('backs up again copying only what changed since the last snapshot of the directory', async () => {
    // Prepare
    const added = join(work, 'incremental');
    await mkdir(added);
    await writeFile(join(added, 'marker'), 'x');
    const digest = await serving(source, (_, host) =>
      pushOneLayerImage(`${host}/team-9/new:v1`, 'incremental', 5000),
    );
    // Act
    const backup = await regvault('backup', '--source-dir', source);
    // Assess
    expect(backup.code).toBe(0);
    const summary = snapshotOf(backup);
    expect(summary['repositories']).toBe(3);
    // The new image: its layer, config and manifest blobs and its links, nothing else.
    expect(summary['copied']).toBeLessThan(15);
    expect(summary['skipped']).toBe(first['objects']);
    expect(digest).toMatch(/^sha256:/);
  });

  it('refuses a directory that does not exist, and a bucket beside it, writing nothing', async () => {
    // Prepare
    const before = await listAll(client, VAULT, '');
    // Act
    const missing = await regvault('backup', '--source-dir', join(work, 'nowhere'));
    const both = await regvault('backup', '--source-dir', source, '--source-bucket', 'some-bucket');
    // Assess
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--source-dir');
    expect(missing.stderr).toContain('is not an existing directory');
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--source-bucket: not with --source-dir');
    expect([...(await listAll(client, VAULT, '')).keys()]).toEqual([...before.keys()]);
  });

  it('refuses to restore into a directory that holds files, or to switch the registry, leaving it untouched', async () => {
    // Prepare
    const target = join(work, 'occupied');
    await mkdir(target);
    await writeFile(join(target, 'keep-me'), 'mine');
    // Act
    const occupied = await regvault('restore', '--no-switch', '--target-dir', target);
    const switching = await regvault('restore', '--target-dir', target);
    // Assess
    expect(occupied.code).toBe(2);
    expect(occupied.stderr).toMatch(/not empty|holds/);
    expect(switching.code).toBe(2);
    expect(switching.stderr).toContain('--no-switch');
    expect([...(await tree(target)).keys()]).toEqual(['keep-me']);
    expect(await readFile(join(target, 'keep-me'), 'utf8')).toBe('mine');
  });
});
