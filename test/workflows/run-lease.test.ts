/**
 * Interrupted runs end cleanly (issue 18, item 2): one run lease per source
 * and vault keeps a second backup out while the first runs, a run that died
 * is marked failed with the reason by the next backup or by the rule on its
 * execution's status (the end-dead-run handler, invoked here as on AWS), and
 * prune reclaims a dead run's partial data once its lease is dead. Against
 * the sandbox S3 server, whose conditional PUTs behave as AWS S3's.
 */
import { HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { localContext, stepHandler } from '../../functions/commons/aws/step-handler.ts';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { SnapshotStatus, vaultKeys } from '../../functions/commons/vault/format.ts';
import { prune } from '../../functions/commons/vault/prune.ts';
import {
  acquireRunLease,
  leaseKeyOf,
  listRunLeases,
  type RunLease,
} from '../../functions/commons/vault/run-lease.ts';
import { writeRunRecords } from '../../functions/commons/vault/runs.ts';
import { listSnapshots, putBytes, readManifest } from '../../functions/commons/vault/store.ts';
import { type BackupState, discoverBackup } from '../../functions/commons/workflows/backup.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, putObjects, vaultDeps } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let deps: WorkflowDeps & { close(): void };
let prefixes = 0;

/** A vault prefix of its own and a source bucket of a few objects, for one test. */
async function freshVault(): Promise<{ deps: WorkflowDeps & { close(): void }; source: string }> {
  prefixes += 1;
  const source = `source-${prefixes}`;
  await createBucket(client, source);
  await putObjects(
    client,
    source,
    Array.from({ length: 20 }, (_, i) => ({ key: `data/${i}`, body: `object ${i}` })),
  );
  return { deps: vaultDeps(s3, 'vault', `v${prefixes}/`), source };
}

const backupInput = (bucket: string, more: Record<string, unknown> = {}) => ({
  source: { bucket, region: s3.region, endpoint: s3.endpoint, forcePathStyle: true },
  targetObjectsPerShard: 100,
  ...more,
});

/**
 * A backup run that died after discovery: its running manifest and its
 * lease, taken `agoMs` ago with a ttl of `ttlMs`, by an execution.
 */
async function deadRun(
  withDeps: WorkflowDeps,
  bucket: string,
  { agoMs, ttlMs, execution }: { agoMs: number; ttlMs: number; execution: string },
): Promise<BackupState> {
  const then = new Date(Date.now() - agoMs);
  return discoverBackup(
    backupInput(bucket),
    { ...withDeps, now: () => then, lease: { ttlMs, holder: { via: 'aws' } } },
    execution,
  );
}

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-run-lease' });
  client = clientFor(s3, 1);
  await createBucket(client, 'vault');
  deps = vaultDeps(s3, 'vault', 'conditional/');
}, 60_000);

afterAll(async () => {
  deps?.close();
  client?.destroy();
  await s3?.stop();
});

describe('the sandbox S3 server', () => {
  it.each([
    ['If-None-Match: * on a key that exists', { IfNoneMatch: '*' }],
    [
      'If-Match on an ETag the key no longer has',
      { IfMatch: '"0123456789abcdef0123456789abcdef"' },
    ],
  ])('refuses a PutObject with %s (412), as AWS S3 does', async (_what, condition) => {
    // Prepare
    const key = `conditional/${_what.length}`;
    await client.send(new PutObjectCommand({ Bucket: 'vault', Key: key, Body: 'first' }));

    // Act
    const refused = await client
      .send(new PutObjectCommand({ Bucket: 'vault', Key: key, Body: 'second', ...condition }))
      .then(
        () => undefined,
        (err: { $metadata?: { httpStatusCode?: number }; name?: string }) => err,
      );

    // Assess
    expect(refused?.$metadata?.httpStatusCode).toBe(412);
    expect(refused?.name).toBe('PreconditionFailed');
  });
});

describe('one run lock per source and vault', () => {
  it('refuses a second backup of the same source while the first holds its lease, naming the run, its expiry and the override, and writes nothing', async () => {
    // Prepare
    const { deps: here, source } = await freshVault();
    const running = await discoverBackup(backupInput(source), here, 'local:backup:first');
    const before = await listSnapshots(here.vault);

    // Act
    const second = await runBackupLocally(backupInput(source), { deps: here });

    // Assess
    expect(second.status).toBe('FAILED');
    expect(second.error).toBe('RunLocked');
    expect(second.cause).toContain(`run ${running.runId}`);
    expect(second.cause).toMatch(/expires \d{4}-\d\d-\d\dT/);
    expect(second.cause).toContain(`--break-lock ${running.runId}`);
    expect(await listSnapshots(here.vault)).toEqual(before);
    here.close();
  }, 60_000);

  it('takes over the live lease of a run named by breakLock, marking that run failed, and completes', async () => {
    // Prepare
    const { deps: here, source } = await freshVault();
    const stuck = await discoverBackup(backupInput(source), here, 'local:backup:stuck');

    // Act
    const result = await runBackupLocally(backupInput(source, { breakLock: stuck.runId }), {
      deps: here,
    });

    // Assess
    expect(result.status).toBe('SUCCEEDED');
    const broken = await readManifest(here.vault, stuck.snapshotId);
    expect(broken?.status).toBe(SnapshotStatus.Failed);
    expect(broken?.checks['workflow']?.detail).toContain('--break-lock');
    expect(await listRunLeases(here.vault)).toEqual([]);
    here.close();
  }, 60_000);

  it('marks a run whose lease expired failed with the reason when the next backup starts, and completes that backup', async () => {
    // Prepare
    const { deps: here, source } = await freshVault();
    const dead = await deadRun(here, source, {
      agoMs: 60_000,
      ttlMs: 10_000,
      execution: 'arn:aws:states:eu-west-1:123456789012:execution:Backup:killed',
    });

    // Act
    const result = await runBackupLocally(backupInput(source), { deps: here });

    // Assess
    expect(result.status).toBe('SUCCEEDED');
    const marked = await readManifest(here.vault, dead.snapshotId);
    expect(marked?.status).toBe(SnapshotStatus.Failed);
    expect(marked?.checks['workflow']?.detail).toMatch(
      /^RunDied: the Step Functions execution arn:aws:states:.*:killed stopped renewing the run's lease: last renewed at .*, expired at /,
    );
    expect(await listRunLeases(here.vault)).toEqual([]);
    here.close();
  }, 60_000);
});

describe('the end-dead-run handler (the EventBridge rule on a backup execution)', () => {
  it.each(['ABORTED', 'TIMED_OUT'] as const)(
    'marks the run of an execution that ended %s failed with its status and frees the lease at once',
    async (status) => {
      // Prepare
      const { deps: here, source } = await freshVault();
      const execution = `arn:aws:states:eu-west-1:123456789012:execution:Backup:${status}`;
      const run = await deadRun(here, source, { agoMs: 0, ttlMs: 3_600_000, execution });
      const event = {
        version: '0',
        id: 'b6a3b4f5-0000-4000-8000-000000000000',
        'detail-type': 'Step Functions Execution Status Change',
        source: 'aws.states',
        account: '123456789012',
        time: new Date().toISOString(),
        region: 'eu-west-1',
        resources: [execution],
        detail: {
          executionArn: execution,
          stateMachineArn: 'arn:aws:states:eu-west-1:123456789012:stateMachine:Backup',
          name: status,
          status,
          startDate: Date.now() - 5_000,
          stopDate: Date.now(),
          input: '{}',
          output: null,
          error: null,
          cause: null,
        },
      };
      const handler = stepHandler('end-dead-run');

      // Act
      const first = await handler(event, localContext('end-dead-run', here));
      const again = await handler(event, localContext('end-dead-run', here));

      // Assess
      expect(first).toEqual({
        ended: true,
        runId: run.runId,
        snapshotId: run.snapshotId,
        marked: true,
      });
      expect(again).toEqual({ ended: false });
      const manifest = await readManifest(here.vault, run.snapshotId);
      expect(manifest?.status).toBe(SnapshotStatus.Failed);
      expect(manifest?.checks['workflow']?.detail).toContain(`ended ${status} at `);
      expect(await listRunLeases(here.vault)).toEqual([]);
      here.close();
    },
    60_000,
  );

  it('refuses an event that is not a backup execution status change, before touching the vault', async () => {
    // Prepare
    const handler = stepHandler('end-dead-run');
    const event = {
      source: 'aws.states',
      'detail-type': 'Step Functions Execution Status Change',
      detail: { executionArn: 'x', name: 'x', status: 'SUCCEEDED' },
    };

    // Act
    const refused = await handler(event, localContext('end-dead-run', deps)).then(
      () => undefined,
      (err: Error) => err,
    );

    // Assess
    expect(refused?.name).toBe('InputError');
    expect(refused?.message).toContain('detail.status');
  });
});

describe('prune and dead runs', () => {
  /** A blob the run copied into the pool and recorded, as a copy worker does. */
  async function partialCopy(withDeps: WorkflowDeps, run: BackupState): Promise<string> {
    const key = vaultKeys.blob('', `sha256:${run.snapshotId.slice(-6).padEnd(64, '0')}`);
    const full = `${withDeps.vault.location.prefix}${key}`;
    await putBytes(withDeps.vault, full, Buffer.from('partial'), 'application/octet-stream');
    await writeRunRecords(withDeps.vault, run.runId, 'd0000', 0, {
      records: [{ key: 'data/blob', size: 7, etag: '"x"', targetKey: full, copied: true }],
      failures: [],
      uploadIds: [],
    });
    return full;
  }

  it.each([
    ['reclaims what a run copied once its lease expired', 10_000, false],
    ['keeps what a running backup copied while its lease is live', 3_600_000, true],
  ])(
    '%s',
    async (_what, ttlMs, kept) => {
      // Prepare
      const { deps: here, source } = await freshVault();
      const run = await deadRun(here, source, {
        agoMs: 60_000,
        ttlMs,
        execution: `arn:aws:states:eu-west-1:123456789012:execution:Backup:prune-${ttlMs}`,
      });
      const blob = await partialCopy(here, run);

      // Act
      const report = await prune(here.vault, { keepLast: 1 }, { now: new Date(), graceMs: 0 });

      // Assess
      expect(report.plan.dead).toEqual(kept ? [] : [run.snapshotId]);
      expect(report.plan.running.map((r) => r.id)).toEqual(kept ? [run.snapshotId] : []);
      const left = await client.send(new HeadObjectCommand({ Bucket: 'vault', Key: blob })).then(
        () => true,
        () => false,
      );
      expect(left).toBe(kept);
      here.close();
    },
    60_000,
  );
});

describe('the lease file', () => {
  it('names its run, snapshot, holder and expiry, and nothing secret', async () => {
    // Prepare
    const { deps: here, source } = await freshVault();
    const now = new Date();

    // Act
    const { lease } = await acquireRunLease(
      here.vault,
      { runId: 'backup-x', snapshotId: 'x', source: { bucket: source, prefix: '' } },
      here.lease,
      now,
    );
    const stored: RunLease[] = await listRunLeases(here.vault);

    // Assess
    expect(stored).toEqual([lease]);
    expect(lease.expiresAt).toBe(new Date(now.getTime() + here.lease.ttlMs).toISOString());
    expect(lease.holder).toEqual({ via: 'cli', host: expect.any(String), pid: process.pid });
    expect(leaseKeyOf(here.vault, lease.source)).toMatch(
      /^v\d+\/locks\/backup-[0-9a-f]{24}\.json$/,
    );
    expect(JSON.stringify(stored)).not.toContain(s3.credentials.secretAccessKey);
    here.close();
  });
});
