/**
 * A Quay restore that fails puts the database back (issue 20, beyond the
 * runbook): before the snapshot's dump replaces a database that holds
 * tables, the restore streams it through pods/exec into the run's files,
 * and the rollback loads it back. Tested after a failed verification (the
 * registry had been switched) and after a load that psql refused once the
 * old database was dropped (it had not; the put-back runs while Quay is
 * still quiesced, before it resumes): each time Quay's rows are those
 * before the restore, which differ from the snapshot's.
 */
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { NOTHING_ANSWERS } from '../../sandbox/process.ts';
import { quayRows } from '../../sandbox/quay-schema.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { QUAY_DATABASE, QUAY_NAME, type QuayBed } from '../support/quay.ts';
import {
  keysSecret,
  type RestoreBed,
  restoreQuay,
  startRestoreBed,
} from '../support/quay-restore.ts';
import { clientFor, listAll } from '../support/s3.ts';

const NS = 'quay-db';
let started: RestoreBed;
let s3: S3ServerHandle;
let bed: QuayBed;
let snapshotId: string;
/** The rows after the backup took its snapshot: a tag was added since. */
let rowsNow: string[];

/** The keys of the vault's objects. */
const vaultKeys = async () => [...(await listAll(clientFor(s3), 'vault')).keys()];

beforeAll(async () => {
  started = await startRestoreBed('s3-quay-restore-db', ['db-verify', 'db-load'], {
    version: '3.9.1',
    namespace: NS,
    bucket: 'quay-db-source',
    count: 2,
  });
  ({ s3, bed, snapshotId } = started);
  // Quay goes on after the snapshot: a new tag on a manifest it knows.
  const postgres = await bed.database();
  await postgres.sql(
    QUAY_DATABASE,
    `INSERT INTO tag (name, repository_id, manifest_id, lifetime_start_ms)
       SELECT 'v2', repository_id, id, ${Date.now()} FROM manifest ORDER BY id LIMIT 1;`,
  );
  rowsNow = await quayRows(postgres, QUAY_DATABASE);
  expect(rowsNow).not.toEqual(started.rows);
  keysSecret(s3, bed, NS, 'quay-s3');
}, 240_000);

afterAll(async () => {
  await started?.stop();
});

describe('quay restore rollback of the database', () => {
  it('puts the database back after a restore whose verification fails', async () => {
    // Act: a registry URL nothing answers on, so the verification fails after the switch.
    const result = await restoreQuay(s3, bed, {
      snapshotId,
      namespace: NS,
      bucket: 'db-verify',
      secretName: 'quay-s3',
      registryUrl: NOTHING_ANSWERS,
    });

    // Assess
    expect(result.status).toBe('FAILED');
    expect({ error: result.error, cause: result.cause }).toMatchObject({
      error: 'RestoreRolledBack',
    });
    expect(result.cause).toContain(`database ${QUAY_DATABASE} put back as it was before`);
    expect(await quayRows(await bed.database(), QUAY_DATABASE)).toEqual(rowsNow);
    const files = await vaultKeys();
    expect(files.some((key) => key.endsWith('/database-before.sql'))).toBe(true);
    await bed.operator.waitForAvailable(NS, QUAY_NAME, 30_000);
  });

  it('puts the database back when psql fails to load the dump after the old one was dropped', async () => {
    // Prepare: the first load (psql reading the dump from stdin) fails; the put-back runs.
    // Between the two, what asked the cluster API to change the QuayRegistry (resume Quay).
    let loads = 0;
    let failedAt = 0;
    let patchesBetween: string[] = [];
    bed.operator.overrideExec(NS, '*postgres', (fallback) => async (command, io, container) => {
      if (command[0] === 'psql' && command.includes('-q')) {
        loads++;
        if (loads === 1) {
          failedAt = bed.api.requests().length;
          io.stdin.resume();
          io.stderr('ERROR:  out of shared memory\n');
          return 3;
        }
        if (loads === 2)
          patchesBetween = bed.api
            .requests()
            .slice(failedAt)
            .filter((r) => r.method === 'PATCH' && r.path.includes('/quayregistries/'))
            .map((r) => r.path);
      }
      return fallback(command, io, container);
    });

    // Act
    const result = await restoreQuay(s3, bed, {
      snapshotId,
      namespace: NS,
      bucket: 'db-load',
      secretName: 'quay-s3',
      registryUrl: bed.registryUrl,
    }).finally(() => bed.operator.overrideExec(NS, '*postgres', undefined));

    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.cause).toContain('out of shared memory');
    expect(result.cause).toContain(`database ${QUAY_DATABASE} put back as it was before`);
    expect(loads).toBe(2);
    expect(patchesBetween).toEqual([]);
    expect(await quayRows(await bed.database(), QUAY_DATABASE)).toEqual(rowsNow);
    await bed.operator.waitForAvailable(NS, QUAY_NAME, 30_000);
  });
});
