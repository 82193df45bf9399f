/**
 * A run's copy job, written to the vault by the planning step and read by
 * every copy worker: where from, where to, and the shards. Messages and
 * states carry only the run id and a shard id, so they stay small however
 * large the bucket is, and hold no credentials.
 */
import { z } from 'zod';
import { cursorSchema, locationSchema, shardSchema, totalsSchema } from '../copy/model.ts';
import { VaultError } from '../errors.ts';
import { vaultKeys } from '../vault/format.ts';
import { getJson, putJson, rootOf, type Vault } from '../vault/store.ts';

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
    /** The newest complete snapshot of the same source: its inventory replaces a target listing. */
    previousSnapshotId: z.string().optional(),
    /**
     * The vault held no blob when the run was planned: with no previous
     * snapshot, no page lists the target (link and plain objects always go to
     * the new snapshot's own folder, which starts empty).
     */
    targetEmpty: z.boolean().optional(),
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

/** A copy worker's SQS message (or in-process hand-off): references and running totals only. */
export const shardMessageSchema = z.object({
  runId: z.string().min(1),
  shardId: z.string().min(1),
  /** Step Functions task token of the waiting Map iteration. */
  taskToken: z.string().min(1),
  /** Continuation number: 0 for the first message of a shard. */
  seq: z.number().int().nonnegative().default(0),
  cursor: cursorSchema.optional(),
  totals: totalsSchema.optional(),
});
export type ShardMessage = z.infer<typeof shardMessageSchema>;

export const jobKey = (vault: Vault, runId: string) =>
  `${vaultKeys.run(rootOf(vault), runId)}job.json`;

export async function saveJob(vault: Vault, job: CopyJob): Promise<void> {
  await putJson(vault, jobKey(vault, job.runId), job);
}

const cache = new Map<string, CopyJob>();

/** Loads a run's job (cached: a Lambda container serves many messages of one run). */
export async function loadJob(vault: Vault, runId: string): Promise<CopyJob> {
  const cached = cache.get(runId);
  if (cached !== undefined) return cached;
  const job = await getJson(vault, jobKey(vault, runId), copyJobSchema);
  if (job === undefined)
    throw new VaultError(
      `run ${runId} has no job in the vault (${jobKey(vault, runId)}); was it planned?`,
    );
  cache.set(runId, job);
  if (cache.size > 20) cache.delete(cache.keys().next().value ?? '');
  return job;
}
