/**
 * `regvault backup --retry-failed <run>` (issue 18, item 3) copies only the
 * objects a run recorded as failed. The sandbox S3 server fails every
 * attempt (all six) at copying two objects of a backup; the backup ends
 * partial (exit 3) naming them; the retry copies those two and nothing else,
 * and the same snapshot is then complete with every source object.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { SnapshotStatus } from '../../functions/commons/vault/format.ts';
import { listSnapshots, readInventory } from '../../functions/commons/vault/store.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { listAll, putObjects, serverWithBuckets, vaultDeps } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  ({ server: s3, client } = await serverWithBuckets('s3-retry-failed', ['vault', 'source']));
  await putObjects(client, 'source', [
    ...Array.from({ length: 40 }, (_, i) => ({ key: `data/${i}`, body: `object ${i}` })),
    { key: 'flaky/a', body: 'first flaky object' },
    { key: 'flaky/b', body: 'second flaky object' },
  ]);
  env = sandboxEnv(s3, 'vault');
}, 60_000);

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
});

describe('backup --retry-failed', () => {
  it('copies only the objects the run recorded as failed, and completes the same snapshot', async () => {
    // Prepare: every attempt at copying the two flaky objects fails (six attempts each).
    await s3.injectFaults({
      operation: 'CopyObject',
      status: 500,
      code: 'InternalError',
      count: 12,
      keyPrefix: 'flaky/',
    });
    const first = await runRegvault(['backup', '--source-bucket', 'source', '--json'], env);
    // A failed run's result carries no snapshot: its id is in the vault.
    const deps = vaultDeps(s3, 'vault', '');
    const snapshotId = (await listSnapshots(deps.vault))[0]?.id ?? '(none)';
    await s3.clearFaults();
    await s3.resetCounters();

    // Act
    const retry = await runRegvault(
      ['backup', '--retry-failed', `backup-${snapshotId}`, '--json'],
      env,
    );
    const copies = (await s3.counters())['CopyObject'] ?? 0;

    // Assess
    expect(first.code).toBe(3);
    expect(first.stderr).toContain('flaky/a');
    expect(retry.stderr).toBe('');
    expect(retry.code).toBe(0);
    expect(jsonLines(retry.stdout).at(-1)).toMatchObject({
      event: 'result',
      ok: true,
      retried: 2,
      recovered: 2,
      snapshot: { snapshotId, status: 'complete', failed: 0 },
    });
    expect(copies).toBe(2);
    const manifests = await listSnapshots(deps.vault);
    expect(manifests.map((m) => [m.id, m.status])).toEqual([[snapshotId, SnapshotStatus.Complete]]);
    const [manifest] = manifests;
    const inventory = manifest === undefined ? [] : await readInventory(deps.vault, manifest);
    const source = await listAll(client, 'source');
    expect(new Map(inventory.map((r) => [r.key, r.size]))).toEqual(
      new Map([...source].map(([key, { size }]) => [key, size])),
    );
    expect(manifest?.totals).toMatchObject({ failed: 0, copied: 42 });
    deps.close();
  }, 120_000);

  it('copies a shard whose listing kept failing again from its start, and completes the same snapshot', async () => {
    // Prepare: two shards of 1,000 keys; every listing of the second one fails (the planner's do not).
    const { server, client: own } = await serverWithBuckets('s3-retry-aborted', [
      'vault',
      'source',
    ]);
    try {
      await putObjects(own, 'source', [
        ...Array.from({ length: 1_000 }, (_, i) => ({ key: `a/${i}`, body: `first half ${i}` })),
        ...Array.from({ length: 1_000 }, (_, i) => ({ key: `b/${i}`, body: `second half ${i}` })),
      ]);
      const ownEnv = sandboxEnv(server, 'vault');
      await server.injectFaults({
        operation: 'ListObjectsV2',
        status: 503,
        code: 'SlowDown',
        count: 1_000,
        listingFrom: 'b',
      });
      const first = await runRegvault(
        ['backup', '--source-bucket', 'source', '--shard-objects', '1000', '--json'],
        ownEnv,
      );
      await server.clearFaults();
      const deps = vaultDeps(server, 'vault', '');
      const snapshotId = (await listSnapshots(deps.vault))[0]?.id ?? '(none)';
      await server.resetCounters();

      // Act
      const retry = await runRegvault(['backup', '--retry-failed', snapshotId, '--json'], ownEnv);
      const copies = (await server.counters())['CopyObject'] ?? 0;

      // Assess: the aborted shard's keys, and only those, are copied; the snapshot is whole.
      expect(first.code).toBe(3);
      expect(first.stderr).toContain('listing failed');
      expect(retry.stderr).toBe('');
      expect(retry.code).toBe(0);
      expect(jsonLines(retry.stdout).at(-1)).toMatchObject({
        event: 'result',
        ok: true,
        retried: 0,
        shardsCopiedAgain: ['objects-00001'],
        snapshot: { snapshotId, status: 'complete', failed: 0, objects: 2_000 },
      });
      expect(copies).toBe(1_000);
      const [manifest] = await listSnapshots(deps.vault);
      expect(manifest?.checks['shards']?.ok).toBe(true);
      const inventory = manifest === undefined ? [] : await readInventory(deps.vault, manifest);
      expect(inventory.map((r) => r.key).sort()).toEqual(
        [...(await listAll(own, 'source')).keys()].sort(),
      );
      deps.close();
    } finally {
      own.destroy();
      await server.stop();
    }
  }, 120_000);

  it('refuses a run the vault does not hold, naming the flag, before it writes anything', async () => {
    // Act
    const refused = await runRegvault(['backup', '--retry-failed', 'backup-nothing-here'], env);

    // Assess
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('--retry-failed: expected a backup run id');
  }, 60_000);
});
