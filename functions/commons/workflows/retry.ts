/**
 * `regvault backup --retry-failed <run>`: copies again what a backup run did
 * not copy, with the run's own copy context: the objects it recorded as
 * failed (its record files, vault/runs.ts), and every shard that aborted or
 * never ended, from its start. It records what it copied beside the workers'
 * files and finalizes the run's snapshot again: complete when nothing failed
 * any more, else still failed naming what did. It holds the source's run
 * lease while it works, as a backup does.
 */
import type { Failure, InventoryRecord, ListedObject, Shard } from '../copy/model.ts';
import { InputError, messageOf, RunLockedError } from '../errors.ts';
import { headObject } from '../s3/get-object.ts';
import { SNAPSHOT_ID, SnapshotStatus } from '../vault/format.ts';
import { acquireRunLease } from '../vault/run-lease.ts';
import {
  type CopyJob,
  clearAbortedMark,
  listRunRecordFiles,
  loadJob,
  readShardRecords,
  type ShardResult,
  saveShardResult,
  writeRetryRecords,
} from '../vault/runs.ts';
import { readManifest } from '../vault/store.ts';
import { type BackupState, type BackupSummary, finalizeBackup, leaseSourceOf } from './backup.ts';
import type { BackupPlanOutput } from './backup-plan.ts';
import type { WorkflowDeps } from './deps.ts';
import { copyObjectsOfRun, copyShardAgain } from './worker.ts';

/** What a retry did, beside the snapshot's new summary. */
export interface RetrySummary extends BackupSummary {
  readonly runId: string;
  /** Objects the run had recorded failed. */
  readonly retried: number;
  /** Of those, copied now. */
  readonly recovered: number;
  /** Shards that had aborted or never ended, copied again from their start. */
  readonly shardsCopiedAgain: readonly string[];
  /** Objects those shards copied (the others were unchanged since the previous snapshot). */
  readonly objectsCopiedAgain: number;
}

/** The run id a `--retry-failed` value names: a run id, or the id of the snapshot it made. */
export function backupRunIdOf(value: string): string {
  return SNAPSHOT_ID.test(value) ? `backup-${value}` : value;
}

/** The source's size and ETag now; undefined when the object is gone. */
async function headOf(
  job: Extract<CopyJob, { purpose: 'backup' }>,
  key: string,
  deps: WorkflowDeps,
): Promise<ListedObject | undefined> {
  const client = await deps.s3(job.source);
  const head = await headObject(client, job.source.bucket, key);
  return head === undefined ? undefined : { key, ...head };
}

/** Link shards first: a backup lists blobs only after every link (docs/consistency.md). */
const linksFirst = (a: Shard, b: Shard) =>
  Number(b.kind === 'links') - Number(a.kind === 'links') || a.id.localeCompare(b.id);

/**
 * Retries what backup run `runId` did not copy and finalizes its snapshot
 * again: each object it recorded failed, and each shard that aborted (a
 * listing that kept failing, too many failures, a message dead-lettered) or
 * never ended (its run died) copied again from its start, since which of its
 * keys it missed is unknown. Bad input (exit 2): a run the vault does not
 * hold, not a backup, or one still running.
 */
export async function retryFailedObjects(runId: string, deps: WorkflowDeps): Promise<RetrySummary> {
  const snapshotId = runId.replace(/^backup-/, '');
  const manifest = SNAPSHOT_ID.test(snapshotId)
    ? await readManifest(deps.vault, snapshotId)
    : undefined;
  if (manifest === undefined || manifest.runId !== runId)
    throw new InputError(`there is no backup run ${runId} in the vault`, [
      `run: expected a backup run id (backup-<snapshot id>) or a snapshot id the vault holds; see regvault snapshots list`,
    ]);
  let job: CopyJob;
  try {
    job = await loadJob(deps.vault, runId);
  } catch (err) {
    throw new InputError(`backup run ${runId} has no copy job (${messageOf(err)})`, [
      'run: it ended before it was planned; run the backup again',
    ]);
  }
  if (job.purpose !== 'backup')
    throw new InputError(`run ${runId} is not a backup`, ['run: name a backup run']);
  // What each shard recorded: the failed objects of those that ended, by shard
  // (each shard's retry file goes beside its own).
  const shardOf = new Map<string, string>();
  const failures: Failure[] = [];
  const ended = new Set<string>();
  for (const [shardId, files] of await listRunRecordFiles(deps.vault, runId)) {
    const read = await readShardRecords(deps.vault, files);
    if (read.result === undefined || read.result.aborted !== undefined) continue;
    ended.add(shardId);
    for (const failure of read.failures) {
      shardOf.set(failure.key, shardId);
      failures.push(failure);
    }
  }
  const rerun = job.shards.filter((shard) => !ended.has(shard.id)).sort(linksFirst);
  // The source's lease: no backup of it runs while the snapshot is finalized
  // again. A run still marked running is refused unless its lease is dead
  // (taking the lease over marks its snapshot failed first).
  try {
    await acquireRunLease(
      deps.vault,
      { runId, snapshotId, source: leaseSourceOf(job.source) },
      deps.lease,
      deps.now(),
    );
  } catch (err) {
    if (!(err instanceof RunLockedError) || manifest.status !== SnapshotStatus.Running) throw err;
    throw new InputError(`backup run ${runId} is still running`, [
      'run: wait for it to end, then retry what failed',
    ]);
  }
  const objects: ListedObject[] = [];
  const again: Failure[] = [];
  for (const failure of failures) {
    const head = await headOf(job, failure.key, deps);
    if (head === undefined) again.push({ ...failure, sourceGone: true });
    else objects.push(head);
  }
  const copied =
    objects.length === 0 ? undefined : await copyObjectsOfRun(job, objects, deps, 'retry');
  again.push(...(copied?.result.failures ?? []));
  const byShard = new Map<string, { records: InventoryRecord[]; failures: Failure[] }>();
  const of = (key: string) => {
    const shardId = shardOf.get(key) ?? 'retry';
    let entry = byShard.get(shardId);
    if (entry === undefined) {
      entry = { records: [], failures: [] };
      byShard.set(shardId, entry);
    }
    return entry;
  };
  for (const record of copied?.records ?? []) of(record.key).records.push(record);
  for (const failure of again) of(failure.key).failures.push(failure);
  const now = deps.now();
  for (const [shardId, done] of byShard)
    await writeRetryRecords(deps.vault, runId, shardId, now, { ...done, uploadIds: [] });
  let copiedAgain = 0;
  for (const shard of rerun) {
    const { records, result } = await copyShardAgain(job, shard, deps);
    const shardResult: ShardResult = {
      shardId: shard.id,
      totals: result.totals,
      messages: 1,
      ...(result.aborted === undefined ? {} : { aborted: result.aborted }),
    };
    await writeRetryRecords(deps.vault, runId, shard.id, deps.now(), {
      records,
      failures: result.failures,
      uploadIds: result.uploadIds,
      result: shardResult,
    });
    if (result.aborted === undefined) await clearAbortedMark(deps.vault, runId, shard.id);
    await saveShardResult(deps.vault, runId, shardResult);
    copiedAgain += result.totals.copied;
  }
  const state: BackupState = {
    runId,
    snapshotId,
    startedAt: manifest.startedAt,
    layout: manifest.layout,
    source: job.source,
    profile: manifest.source.profile,
    ...(manifest.source.resourceName === undefined
      ? {}
      : { resourceName: manifest.source.resourceName }),
    rootDirectory: manifest.source.rootDirectory,
    ...(job.previousSnapshotId === undefined ? {} : { previousSnapshotId: job.previousSnapshotId }),
    targetObjectsPerShard: 1,
    concurrency: job.concurrency,
    clusterFiles: manifest.clusterFiles,
    ...(manifest.resources === undefined ? {} : { resources: manifest.resources }),
    ...(manifest.expiresAt === undefined ? {} : { expiresAt: manifest.expiresAt }),
  };
  const plan: BackupPlanOutput = {
    linkShardIds: job.shards.filter((s) => s.kind === 'links').map((s) => s.id),
    dataShardIds: job.shards.filter((s) => s.kind !== 'links').map((s) => s.id),
    estimatedObjects: 0,
    planRequests: 0,
  };
  const summary = await finalizeBackup(state, plan, deps);
  deps.log.info('retried the failed objects of a backup run', {
    runId,
    retried: failures.length,
    recovered: copied?.records.length ?? 0,
    shardsCopiedAgain: rerun.length,
    status: summary.status,
  });
  return {
    ...summary,
    runId,
    retried: failures.length,
    recovered: copied?.records.length ?? 0,
    shardsCopiedAgain: rerun.map((shard) => shard.id),
    objectsCopiedAgain: copiedAgain,
  };
}
