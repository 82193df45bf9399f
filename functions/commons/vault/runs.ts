/**
 * The files of a run under `runs/<id>/`, read and written here only: the copy
 * job, the workers' record files and shard results, the link shards' listed
 * markers, the restore's registry-before and proof. A run's copy job, written to the vault by the planning step and read by
 * every copy worker: where from, where to, and the shards. Messages and
 * states carry only the run id and a shard id, so they stay small however
 * large the bucket is, and hold no credentials.
 */
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import { z } from 'zod';
import {
  cursorSchema,
  type Failure,
  failureSchema,
  type InventoryRecord,
  inventoryRecordSchema,
  locationSchema,
  type ShardKind,
  shardSchema,
  totalsSchema,
} from '../copy/model.ts';
import type { PreviousPlan } from '../copy/policy.ts';
import { VaultError } from '../errors.ts';
import { selectionSchema, vaultKeys } from './format.ts';
import { byKey } from './inventory.ts';
import { KeptRecordFiles } from './kept-records.ts';
import {
  getBytes,
  getJson,
  gunzipLines,
  gzipLines,
  listKeys,
  putBytes,
  putJson,
  readCompleteManifest,
  rootOf,
  type Vault,
} from './store.ts';

export const restorePartSchema = z.object({
  id: z.string(),
  /** Index into the snapshot manifest's inventory parts. */
  partIndex: z.number().int().nonnegative(),
  kind: z.enum(['blobs', 'links', 'objects']),
});
export type RestorePart = z.infer<typeof restorePartSchema>;

export const copyJobSchema = z.discriminatedUnion('purpose', [
  z.object({
    purpose: z.literal('backup'),
    runId: z.string(),
    snapshotId: z.string(),
    source: locationSchema,
    target: locationSchema,
    /** The registry data prefix relative to the source prefix; absent for a generic bucket. */
    registryPrefix: z.string().optional(),
    /** Quay's layout below `registryPrefix` (registry/quay-copy-policy.ts); absent: Distribution's. */
    registryLayout: z.literal('quay').optional(),
    /** The newest complete snapshot of the same source: its inventory replaces a target listing. */
    previousSnapshotId: z.string().optional(),
    /**
     * The vault held no blob when the run was planned: with no previous
     * snapshot, no page lists the target (link and plain objects always go to
     * the new snapshot's own folder, which starts empty).
     */
    targetEmpty: z.boolean().optional(),
    /** A partial backup: the repositories it takes (registry/copy-policy.ts copies only theirs). */
    selection: selectionSchema.optional(),
    concurrency: z.number().int().positive(),
    shards: z.array(shardSchema),
  }),
  z.object({
    purpose: z.literal('restore'),
    runId: z.string(),
    snapshotId: z.string(),
    source: locationSchema,
    target: locationSchema,
    /** The prefix the snapshot's source keys start with, swapped for the target's prefix. */
    sourcePrefix: z.string(),
    targetMayHoldObjects: z.boolean(),
    concurrency: z.number().int().positive(),
    parts: z.array(restorePartSchema),
  }),
]);
export type CopyJob = z.infer<typeof copyJobSchema>;

/**
 * A copy worker's SQS message (or in-process hand-off): references and
 * running totals only. Strict: only regvault writes these, so a field it does
 * not name (`shardID`, a hand-made message) is refused, not dropped.
 */
export const shardMessageSchema = z.strictObject({
  runId: z.string().min(1),
  shardId: z.string().min(1),
  /** Continuation number: 0 for the first message of a shard. */
  seq: z.number().int().nonnegative().default(0),
  cursor: cursorSchema.optional(),
  totals: totalsSchema.optional(),
});
export type ShardMessage = z.infer<typeof shardMessageSchema>;

export const jobKey = (vault: Vault, runId: string) =>
  `${vaultKeys.run(rootOf(vault), runId)}job.json`;

const cache = new Map<string, CopyJob>();
/** Runs whose job this process saved and whose shards it has not yet sent. */
const unsent = new Set<string>();

const remember = (job: CopyJob) => {
  cache.set(job.runId, job);
  if (cache.size > 20) cache.delete(cache.keys().next().value ?? '');
};

/** Saves a run's job, and keeps it for this process's workers (the local runner plans and copies in one). */
export async function saveJob(vault: Vault, job: CopyJob): Promise<void> {
  await putJson(vault, jobKey(vault, job.runId), job);
  remember(job);
  unsent.add(job.runId);
  // A plan Lambda saves jobs it never sends: keep the set small.
  if (unsent.size > 20) unsent.delete(unsent.values().next().value ?? '');
}

/**
 * True once, for a run whose job this process saved and for which it has
 * saved no shard result: none of its shards can have ended before they were
 * first sent (the local runner plans and sends in one process; on AWS the
 * plan is another Lambda's, so this is false there).
 */
export function firstSendOfSavedJob(runId: string): boolean {
  return unsent.delete(runId);
}

/** Loads a run's job (cached: a Lambda container serves many messages of one run). */
export async function loadJob(vault: Vault, runId: string): Promise<CopyJob> {
  const cached = cache.get(runId);
  if (cached !== undefined) return cached;
  const job = await getJson(vault, jobKey(vault, runId), copyJobSchema);
  if (job === undefined)
    throw new VaultError(
      `run ${runId} has no job in the vault (${jobKey(vault, runId)}); was it planned?`,
    );
  remember(job);
  return job;
}

/** How a shard ended: its totals and messages, and why it stopped early if it did. */
export const shardResultSchema = z.object({
  shardId: z.string(),
  totals: totalsSchema,
  messages: z.number().int().positive(),
  aborted: z.string().optional(),
});
export type ShardResult = z.infer<typeof shardResultSchema>;

/** One line of a run's record file. */
const recordLineSchema = z.union([
  z.object({ r: inventoryRecordSchema }),
  z.object({ f: failureSchema }),
  z.object({ u: z.string() }),
  z.object({ s: shardResultSchema }),
  // A shard copied again from its start: what its earlier files said is replaced.
  z.object({ again: z.literal(true) }),
]);

/**
 * Where a shard's result is kept once it has finished: the shard's end, which
 * the workflow counts and a duplicate delivery finds.
 */
const shardResultKey = (vault: Vault, runId: string, shardId: string) =>
  vaultKeys.runShardResult(rootOf(vault), runId, shardId);

/** Beside an aborted shard's result, in the same folder, so one LIST counts both. */
const ABORTED_SUFFIX = '.aborted';
const RESULT_SUFFIX = '.json';
const shardsPrefix = (vault: Vault, runId: string) =>
  `${vaultKeys.run(rootOf(vault), runId)}shards/`;

/**
 * Records that a shard has ended. An aborted shard's marker is written first,
 * so a listing that sees the result sees the marker too (S3 lists what it has
 * acknowledged).
 */
export async function saveShardResult(vault: Vault, runId: string, result: ShardResult) {
  unsent.delete(runId);
  if (result.aborted !== undefined)
    await putJson(vault, `${shardsPrefix(vault, runId)}${result.shardId}${ABORTED_SUFFIX}`, {
      shardId: result.shardId,
      aborted: result.aborted,
    });
  await putJson(vault, shardResultKey(vault, runId, result.shardId), result);
}

/**
 * Takes back an aborted shard's marker once a retry has copied the shard
 * again (its result, saved after, says how it ended now).
 */
export async function clearAbortedMark(vault: Vault, runId: string, shardId: string) {
  await vault.client.send(
    new DeleteObjectCommand({
      Bucket: vault.location.bucket,
      Key: `${shardsPrefix(vault, runId)}${shardId}${ABORTED_SUFFIX}`,
    }),
  );
}

/** How many shards of a run have ended, and which ended early (ids only, sorted). */
export interface FinishedShards {
  readonly finished: ReadonlySet<string>;
  readonly aborted: readonly string[];
}

/** The shards of a run that have ended: one LIST request per 1,000 shards, nothing read. */
export async function listFinishedShards(vault: Vault, runId: string): Promise<FinishedShards> {
  const prefix = shardsPrefix(vault, runId);
  const finished = new Set<string>();
  const aborted: string[] = [];
  for (const { key } of await listKeys(vault, prefix)) {
    const name = key.slice(prefix.length);
    if (name.endsWith(RESULT_SUFFIX)) finished.add(name.slice(0, -RESULT_SUFFIX.length));
    else if (name.endsWith(ABORTED_SUFFIX)) aborted.push(name.slice(0, -ABORTED_SUFFIX.length));
  }
  return { finished, aborted: aborted.sort() };
}

export async function loadShardResult(
  vault: Vault,
  runId: string,
  shardId: string,
): Promise<ShardResult | undefined> {
  return getJson(vault, shardResultKey(vault, runId, shardId), shardResultSchema);
}

/** Run files read at once: one per shard or message, each small, read in a burst when a run ends. */
const RUN_FILE_READS = 16;

/** Reads every file with `read`, RUN_FILE_READS at a time; the results keep the files' order. */
async function readAll<F, T>(files: readonly F[], read: (file: F) => Promise<T>): Promise<T[]> {
  const queue = new PQueue({ concurrency: RUN_FILE_READS });
  return Promise.all(files.map((file) => queue.add(() => read(file))));
}

/** What a record file holds: records, failures, skipped uploads and, last, a shard's result. */
interface RecordFile {
  readonly records: readonly InventoryRecord[];
  readonly failures: readonly Failure[];
  readonly uploadIds: readonly string[];
  readonly result?: ShardResult;
}

/** A record file's lines, in the order readShardRecords reads them. */
const recordFileLines = (done: RecordFile): Array<z.infer<typeof recordLineSchema>> => [
  ...done.records.map((r) => ({ r })),
  ...done.failures.map((f) => ({ f })),
  ...done.uploadIds.map((u) => ({ u })),
  ...(done.result === undefined ? [] : [{ s: done.result }]),
];

const keptFiles = new KeptRecordFiles<RecordFile>();

/**
 * What one copy message did: its records, failures and skipped uploads, and
 * on a shard's last message its result, one gzip file. `keep`: this process
 * finalizes the run too (the local runner's memory queue), so it keeps them.
 */
export async function writeRunRecords(
  vault: Vault,
  runId: string,
  shardId: string,
  seq: number,
  done: RecordFile,
  options: { keep?: boolean } = {},
): Promise<void> {
  const key = vaultKeys.runRecords(rootOf(vault), runId, shardId, seq);
  await putBytes(vault, key, await gzipLines(recordFileLines(done)), 'application/gzip');
  if (options.keep === true) keptFiles.keep(vault, key, done);
}

/** What the record files of one shard say. */
export interface ShardRecords {
  /** One per source key, sorted by key; none for a key that failed. */
  readonly records: InventoryRecord[];
  readonly failures: Failure[];
  readonly uploadIds: string[];
  /** The shard's result, from its last message's file (absent while it runs, or if it died). */
  readonly result?: ShardResult;
}

/** The record files of a run by shard, each shard's in the order its messages wrote them. */
export async function listRunRecordFiles(
  vault: Vault,
  runId: string,
): Promise<Map<string, string[]>> {
  const prefix = `${vaultKeys.run(rootOf(vault), runId)}records/`;
  const byShard = new Map<string, string[]>();
  for (const file of await listKeys(vault, prefix)) {
    const shardId = file.key.slice(prefix.length).split('/')[0] ?? '';
    byShard.set(shardId, [...(byShard.get(shardId) ?? []), file.key]);
  }
  return byShard;
}

/**
 * What `regvault backup --retry-failed` copied of a shard's failed objects is
 * written as one more file of that shard, named with this prefix (it sorts
 * after the numbered files of its messages, so it is read last).
 */
const RETRY_FILE_PREFIX = 'retry-';

/**
 * Reads one shard's record files (`files`, in the order written). SQS may
 * deliver a continuation twice and the two chains may cut their pages at
 * different places, so their files can overlap: the later file's word on a
 * key stands, and a key that failed in any chain stays failed, unless a
 * retry file (read last) records it copied: the shard's result then counts
 * it copied, not failed. A retry file that copied the shard again from its
 * start replaces everything read before it.
 */
export async function readShardRecords(
  vault: Vault,
  files: readonly string[],
): Promise<ShardRecords> {
  const records = new Map<string, InventoryRecord>();
  const failures = new Map<string, Failure>();
  const uploads = new Set<string>();
  let result: ShardResult | undefined;
  const retried = { objects: 0, bytes: 0 };
  const isRetry = (file: string) => (file.split('/').at(-1) ?? '').startsWith(RETRY_FILE_PREFIX);
  const ordered = [...files.filter((f) => !isRetry(f)), ...files.filter(isRetry)];
  const contents = await readAll(ordered, async (file) => {
    // What this process wrote and kept is what the file holds, already checked.
    const kept = keptFiles.take(vault, file);
    if (kept !== undefined) return { retry: isRetry(file), lines: recordFileLines(kept) };
    const bytes = await getBytes(vault, file);
    return {
      retry: isRetry(file),
      lines:
        bytes === undefined
          ? []
          : (await gunzipLines(bytes)).map((line) => recordLineSchema.parse(line)),
    };
  });
  for (const { retry, lines } of contents) {
    for (const parsed of lines) {
      if ('r' in parsed) {
        records.set(parsed.r.key, parsed.r);
        if (retry && failures.delete(parsed.r.key)) {
          retried.objects++;
          retried.bytes += parsed.r.size;
        }
      } else if ('f' in parsed) failures.set(parsed.f.key, parsed.f);
      else if ('s' in parsed) result = parsed.s;
      else if ('u' in parsed) uploads.add(parsed.u);
      else {
        // Skipped uploads stay: they are still to be cleaned up.
        records.clear();
        failures.clear();
        result = undefined;
        retried.objects = 0;
        retried.bytes = 0;
      }
    }
  }
  for (const key of failures.keys()) records.delete(key);
  if (result !== undefined && retried.objects > 0) {
    const { totals } = result;
    result = {
      ...result,
      totals: {
        ...totals,
        copied: totals.copied + retried.objects,
        bytesCopied: totals.bytesCopied + retried.bytes,
        failed: Math.max(0, totals.failed - retried.objects),
      },
    };
  }
  return {
    records: [...records.values()].sort(byKey),
    failures: [...failures.values()],
    uploadIds: [...uploads],
    ...(result === undefined ? {} : { result }),
  };
}

/**
 * Writes what a retry of a shard did (`backup --retry-failed`) as the
 * shard's last record file: the objects it copied, and those that failed
 * again. A shard copied again from its start (`result` given: it had aborted,
 * or never ended) replaces what its earlier files said, result included.
 */
export async function writeRetryRecords(
  vault: Vault,
  runId: string,
  shardId: string,
  now: Date,
  done: RecordFile,
): Promise<void> {
  const lines: Array<z.infer<typeof recordLineSchema>> = [
    ...(done.result === undefined ? [] : [{ again: true as const }]),
    ...recordFileLines(done),
  ];
  const stamp = now.toISOString().replace(/[-:.]/g, '');
  await putBytes(
    vault,
    `${vaultKeys.run(rootOf(vault), runId)}records/${shardId}/${RETRY_FILE_PREFIX}${stamp}.jsonl.gz`,
    await gzipLines(lines),
    'application/gzip',
  );
}

/**
 * Everything the workers of a run wrote, held at once: records, failures and
 * skipped uploads, one per source key, and each finished shard's result. For
 * a restore's parts (a backup's finalize reads shard by shard instead).
 */
export async function collectRunRecords(
  vault: Vault,
  runId: string,
): Promise<{
  records: InventoryRecord[];
  failures: Failure[];
  uploadIds: string[];
  results: ShardResult[];
}> {
  const files = await listRunRecordFiles(vault, runId);
  const shards = await readAll([...files.values()], (shardFiles) =>
    readShardRecords(vault, shardFiles),
  );
  return {
    records: shards.flatMap((shard) => shard.records),
    failures: shards.flatMap((shard) => shard.failures),
    uploadIds: [...new Set(shards.flatMap((shard) => shard.uploadIds))].sort(),
    results: shards.flatMap((shard) => (shard.result === undefined ? [] : [shard.result])),
  };
}

/** Where a backup's link shard says it has listed everything (its tags copied). */
const listedPrefix = (vault: Vault, runId: string) =>
  `${vaultKeys.run(rootOf(vault), runId)}listed/`;

/** A link shard has listed every link: blob shards may list. */
export async function markShardListed(vault: Vault, runId: string, shardId: string) {
  await putJson(vault, `${listedPrefix(vault, runId)}${shardId}`, { shardId });
}

/** How many link shards have listed everything (one LIST). */
export async function countListedShards(vault: Vault, runId: string): Promise<number> {
  return (await listKeys(vault, listedPrefix(vault, runId))).length;
}

/** Where a restore's switch records the registry's storage before it patches (names only, no keys). */
export const registryBeforeKey = (vault: Vault, runId: string) =>
  `${vaultKeys.run(rootOf(vault), runId)}registry-before.json`;

/**
 * A restore's copy of the target's database as it was before the load (the
 * dump, and its record: name, size, SHA-256), for the rollback.
 */
export const databaseBeforeKeys = (vault: Vault, runId: string) => ({
  dump: `${vaultKeys.run(rootOf(vault), runId)}database-before.sql`,
  record: `${vaultKeys.run(rootOf(vault), runId)}database-before.json`,
});

/** What a backup's quiesce changed in the cluster (the profile's undo record, no keys), and whether it was undone. */
export const quiesceKey = (vault: Vault, runId: string) =>
  `${vaultKeys.run(rootOf(vault), runId)}quiesce.json`;

/**
 * The live tags a backup read from the registry's database while it was
 * quiesced, with the blobs each needs (Quay): finalize builds the catalog
 * and the reference check from them.
 */
export const databaseTagsKey = (vault: Vault, runId: string) =>
  `${vaultKeys.run(rootOf(vault), runId)}database-tags.json`;

/** What a restore proved before its switch (ProveRestoredContent's output). */
export async function saveProof(vault: Vault, runId: string, proof: unknown): Promise<void> {
  await putJson(vault, `${vaultKeys.run(rootOf(vault), runId)}proof.json`, proof);
}

/**
 * The shards the run of a complete snapshot copied, and how many objects of
 * each kind its inventory holds: what the next backup of the source may plan
 * with (CopyPolicy.reuse). Undefined when the snapshot or its run's job is
 * gone (pruned, cleaned) or the snapshot is not complete.
 */
export async function previousPlanOf(
  vault: Vault,
  snapshotId: string,
): Promise<PreviousPlan | undefined> {
  const manifest = await readCompleteManifest(vault, snapshotId);
  if (manifest === undefined) return undefined;
  const job = await getJson(vault, jobKey(vault, manifest.runId), copyJobSchema);
  if (job === undefined || job.purpose !== 'backup') return undefined;
  const objects: Partial<Record<ShardKind, number>> = {};
  for (const part of manifest.inventory.parts)
    objects[part.kind] = (objects[part.kind] ?? 0) + part.records;
  return { shards: job.shards, objects };
}
