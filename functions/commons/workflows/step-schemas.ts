/**
 * Zod schemas of the events the workflow steps receive (what the state
 * machines pass between Task states). Each is checked at compile time against
 * the workflow type it parses into, field for field, so a field added to
 * `BackupState` or `RestoreState` without its schema fails the typecheck
 * instead of being dropped by the parse.
 *
 * Every object is strict and every field given: our own steps write these
 * events, so a key the schema does not name (`allowNonEmptytarget`) or a
 * missing one is a hand-made or mismatched event, and is refused rather than
 * dropped or filled with a default that changes what the step does. No string
 * is read as a boolean or a number.
 */
import { z } from 'zod';
import { locationSchema } from '../copy/model.ts';
import { claimRefSchema } from '../registry/profile.ts';
import { databaseDumpSchema, selectionSchema } from '../vault/format.ts';
import type { BackupState } from './backup.ts';
import type { BackupPlanOutput } from './backup-plan.ts';
import { type CountEvent, type EnqueueEvent, SHARD_SETS } from './fan-out.ts';
import type { RestoreState, RolloutCheck, SwitchOutput, VerifyOutput } from './restore.ts';

type SameKeys<A, B> = [Exclude<keyof A, keyof B> | Exclude<keyof B, keyof A>] extends [never]
  ? true
  : false;

/**
 * A schema whose output is `T` and names exactly `T`'s fields. A mismatch in
 * types fails `S extends z.ZodType<T>`; a field in one and not the other
 * demands a second argument no caller can give.
 */
function schemaOf<T>() {
  return <S extends z.ZodType<T>>(
    schema: S,
    ..._sameKeys: SameKeys<z.output<S>, T> extends true ? [] : [missingOrExtraField: never]
  ): S => schema;
}

const count = z.number().int().nonnegative();
const id = z.string().min(1);

/**
 * A location as a step passes it on: the copy model's fields, none defaulted
 * (the `access` default of an input would name no credentials at all here).
 */
const stepLocationSchema = z.strictObject({
  ...locationSchema.shape,
  prefix: z.string(),
  forcePathStyle: z.boolean(),
  access: id,
});

export const backupStateSchema = schemaOf<BackupState>()(
  z.strictObject({
    runId: id,
    snapshotId: id,
    startedAt: z.iso.datetime(),
    layout: z.enum(['registry', 'quay', 'generic']),
    source: stepLocationSchema,
    profile: z.string(),
    resourceName: z.string().exactOptional(),
    rootDirectory: z.string(),
    previousSnapshotId: id.exactOptional(),
    targetObjectsPerShard: z.number().int().positive(),
    concurrency: z.number().int().positive(),
    clusterFiles: z.array(z.string()),
    resources: z.strictObject({ objects: count, secrets: count, types: count }).exactOptional(),
    expiresAt: z.iso.datetime().exactOptional(),
    selection: selectionSchema.exactOptional(),
    database: databaseDumpSchema.exactOptional(),
    quiesced: z.literal(true).exactOptional(),
  }),
);

export const backupPlanOutputSchema = schemaOf<BackupPlanOutput>()(
  z.strictObject({
    linkShardIds: z.array(id),
    dataShardIds: z.array(id),
    estimatedObjects: count,
    planRequests: count,
    planReused: z.boolean().exactOptional(),
  }),
);

export const restoreStateSchema = schemaOf<RestoreState>()(
  z.strictObject({
    runId: id,
    snapshotId: id,
    target: stepLocationSchema,
    secretName: id.exactOptional(),
    rootDirectory: z.string(),
    layout: z.enum(['registry', 'quay', 'generic']),
    switchRegistry: z.boolean(),
    rollbackOnFailure: z.boolean(),
    allowNonEmptyTarget: z.boolean(),
    pullSample: z.union([count, z.literal('all')]),
    pushTest: z.boolean(),
    skipBlobHashing: z.boolean(),
    rolloutTimeoutSeconds: z.number().int().positive(),
    concurrency: z.number().int().positive(),
    objects: count,
    bytes: count,
  }),
);

export const enqueueEventSchema = schemaOf<EnqueueEvent>()(
  z.strictObject({
    runId: id,
    which: z.enum(SHARD_SETS),
    timeoutSeconds: z.number().int().positive(),
  }),
);

export const countEventSchema = schemaOf<CountEvent>()(
  z.strictObject({ runId: id, which: z.enum(SHARD_SETS), deadline: z.iso.datetime() }),
);

const storageRefSchema = z.strictObject({
  bucket: z.string(),
  regionEndpoint: z.string(),
  region: z.string(),
  secretName: z.string(),
  rootDirectory: z.string(),
  claim: claimRefSchema.exactOptional(),
});

export const switchOutputSchema = schemaOf<SwitchOutput>()(
  z.strictObject({
    changed: z.boolean(),
    previous: storageRefSchema,
    current: storageRefSchema,
    podsBefore: z.array(z.string()),
    // Empty when the failure path reconstructs a switch whose answer was lost.
    switchedAt: z.string(),
    deadline: z.string(),
  }),
);

export const rolloutCheckSchema = schemaOf<RolloutCheck>()(
  z.strictObject({
    verdict: z.enum(['done', 'failed', 'waiting']),
    ready: count,
    desired: count,
    message: z.string(),
  }),
);

export const verifyOutputSchema = schemaOf<VerifyOutput>()(
  z.strictObject({
    ok: z.boolean(),
    repositories: count,
    tags: count,
    blobsServed: count,
    blobsChecked: count,
    pulled: count,
    push: z
      .strictObject({ ok: z.boolean(), repository: z.string(), digest: z.string().exactOptional() })
      .exactOptional(),
    problems: z.array(z.string()),
  }),
);

/** What a Catch puts at its ResultPath: the error's name and its cause (for Lambda errors, JSON). */
export const caughtErrorSchema = z.strictObject({
  Error: z.string().exactOptional(),
  Cause: z.string().exactOptional(),
});
