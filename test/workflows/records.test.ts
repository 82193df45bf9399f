import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { InventoryRecord } from '../../functions/commons/copy/model.ts';
import { createLocalDeps } from '../../functions/commons/local/deps.ts';
import { vaultKeys } from '../../functions/commons/vault/format.ts';
import { collectRunRecords, writeRunRecords } from '../../functions/commons/vault/runs.ts';
import { gzipLines, putBytes, rootOf } from '../../functions/commons/vault/store.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, locationOn } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let deps: WorkflowDeps & { close(): void };

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-records' });
  client = clientFor(s3);
  await createBucket(client, 'vault');
  deps = createLocalDeps({
    vault: { location: locationOn(s3, 'vault', '', 'vault'), credentials: s3.credentials },
  });
});

afterAll(async () => {
  deps?.close();
  client?.destroy();
  await s3?.stop();
});

const record = (key: string, copied = true): InventoryRecord => ({
  key,
  size: 1,
  etag: `etag-${key}`,
  targetKey: `vault/${key}`,
  copied,
});

async function writeRecords(runId: string, shard: string, seq: number, lines: unknown[]) {
  await putBytes(
    deps.vault,
    vaultKeys.runRecords(rootOf(deps.vault), runId, shard, seq),
    await gzipLines(lines),
    'application/gzip',
  );
}

describe('collecting what the copy workers of a run wrote', () => {
  it('counts each key once when a duplicated continuation wrote overlapping record files', async () => {
    // Prepare: one chain wrote pages a..c then d..f; a duplicate of its second
    // message cut the same keys as c..f, so "c" appears in two files.
    await writeRecords(
      'run-dup',
      'shard-0',
      0,
      ['a', 'b', 'c'].map((k) => ({ r: record(k) })),
    );
    await writeRecords(
      'run-dup',
      'shard-0',
      1,
      ['c', 'd', 'e', 'f'].map((k) => ({ r: record(k, false) })),
    );
    await writeRecords('run-dup', 'shard-1', 0, [
      { r: record('g') },
      { u: 'upload-1' },
      { u: 'upload-1' },
    ]);
    // Act
    const collected = await collectRunRecords(deps.vault, 'run-dup');
    // Assess
    expect(collected.records.map((r) => r.key).sort()).toEqual(['a', 'b', 'c', 'd', 'e', 'f', 'g']);
    expect(collected.records.find((r) => r.key === 'c')?.copied).toBe(false);
    expect(collected.uploadIds).toEqual(['upload-1']);
    expect(collected.failures).toEqual([]);
  });

  it('keeps a key failed when any chain failed it', async () => {
    // Prepare
    const failure = { key: 'x', operation: 'CopyObject', code: 'AccessDenied', message: 'denied' };
    await writeRecords('run-failed', 'shard-0', 0, [{ r: record('x') }, { r: record('y') }]);
    await writeRecords('run-failed', 'shard-0', 1, [{ f: failure }, { f: failure }]);
    // Act
    const collected = await collectRunRecords(deps.vault, 'run-failed');
    // Assess
    expect(collected.failures).toEqual([failure]);
    expect(collected.records.map((r) => r.key)).toEqual(['y']);
  });

  it('takes back the record files this process kept without reading them, and says the same as the vault', async () => {
    // Prepare: one shard's file kept (the local runner's memory queue), another not
    const failure = { key: 'x', operation: 'CopyObject', code: 'AccessDenied', message: 'denied' };
    await writeRunRecords(
      deps.vault,
      'run-kept',
      'shard-0',
      0,
      { records: [record('a'), record('b', false)], failures: [failure], uploadIds: ['u-1'] },
      { keep: true },
    );
    await writeRunRecords(deps.vault, 'run-kept', 'shard-1', 0, {
      records: [record('c')],
      failures: [],
      uploadIds: [],
    });
    await s3.resetCounters();
    // Act
    const kept = await collectRunRecords(deps.vault, 'run-kept');
    const afterKept = await s3.counters();
    await s3.resetCounters();
    const read = await collectRunRecords(deps.vault, 'run-kept');
    const afterRead = await s3.counters();
    // Assess: the kept file is taken once, then read from the vault like the other
    expect(afterKept.GetObject).toBe(1);
    expect(afterRead.GetObject).toBe(2);
    expect(kept).toEqual(read);
    expect(kept.records.map((r) => r.key)).toEqual(['a', 'b', 'c']);
    expect(kept.failures).toEqual([failure]);
    expect(kept.uploadIds).toEqual(['u-1']);
  });
});
