/**
 * The backup workflow's steps (state-machines/backup.asl.json): validate and
 * discover here; plan in backup-plan.ts; copy shards in the workers; finalize
 * and mark failed in backup-end.ts (re-exported here). Each step takes the
 * previous step's small JSON output and returns its own.
 */
import { z } from 'zod';
import { resourceSelectionSchema } from '../cluster/resources-select.ts';
import { type Location, locationSchema } from '../copy/model.ts';
import { DEFAULT_OBJECTS_PER_SHARD } from '../copy/plan.ts';
import { InputError, messageOf, parseInput } from '../errors.ts';
import type { SourceLayout } from '../registry/blob-layout.ts';
import { looksLikeRegistry } from '../registry/copy-policy.ts';
import { normaliseRoot } from '../registry/layout.ts';
import type { QuiesceRecord } from '../registry/profile.ts';
import { isDirectoryEndpoint } from '../s3/directory.ts';
import {
  expiresAtOf,
  MAX_TTL_DAYS,
  newSnapshotId,
  selectionOf,
  selectionSchema,
  vaultKeys,
} from '../vault/format.ts';
import { lineOf, sourceOf } from '../vault/retention.ts';
import { acquireRunLease } from '../vault/run-lease.ts';
import { newestComplete, putBytes, putJson, rootOf } from '../vault/store.ts';
import { markBackupFailed } from './backup-end.ts';
import { type BackupState, baseManifest, leaseSourceOf } from './backup-run.ts';
import { Access, type WorkflowDeps } from './deps.ts';
import { quiesceAndDump } from './registry-state.ts';
import { captureResources } from './resources-capture.ts';

export {
  type BackupSummary,
  describeFailures,
  type ExecutionEnded,
  endDeadExecution,
  executionEndedSchema,
  finalizeBackup,
  markBackupFailed,
} from './backup-end.ts';
export {
  type BackupState,
  leaseSourceOf,
  renewBackupLease,
  vaultLocation,
} from './backup-run.ts';

/** The one parser of workflow input (it lives with the errors it throws). */
export { parseInput };

export const backupInputSchema = z
  .object({
    /** Back up a plain bucket instead of the registry the cluster names. */
    source: locationSchema
      .pick({ endpoint: true, region: true, bucket: true, prefix: true, forcePathStyle: true })
      .extend({
        access: z.string().default(Access.Vault),
        /** Unset: as the deps address a bucket at that endpoint (deps.pathStyle). */
        forcePathStyle: z.boolean().optional(),
      })
      .strict()
      .optional(),
    /** Capture the storage Secret too (it holds keys: off unless asked). */
    includeSecret: z.boolean().default(false),
    targetObjectsPerShard: z
      .number()
      .int()
      .min(100)
      .max(1_000_000)
      .default(DEFAULT_OBJECTS_PER_SHARD),
    concurrency: z.number().int().min(1).max(512).default(64),
    /**
     * Days the snapshot lives (fractions allowed: 0.5 is 12 hours); prune
     * deletes it once they have passed, whatever its policy. Days, as the
     * retention policy's `ttlDays`, so one unit serves both.
     */
    ttlDays: z.number().positive().max(MAX_TTL_DAYS).optional(),
    /**
     * The run id of a backup of the same source whose lease is live but which
     * is known to be dead: its lease is taken over and its snapshot marked
     * failed. Anything else running keeps this backup out (RunLocked).
     */
    breakLock: z.string().min(1).optional(),
    /**
     * A partial backup: only the repositories a glob here matches (`team/*`
     * within one level, `team/**` below), less those `excludeRepositories`
     * matches. Recorded in the snapshot's manifest.
     */
    repositories: selectionSchema.shape.repositories,
    excludeRepositories: selectionSchema.shape.excludeRepositories,
    /** Capture the cluster's objects this selects into the snapshot too (docs/resources.md). */
    resources: resourceSelectionSchema.optional(),
  })
  .strict();
export type BackupInput = z.infer<typeof backupInputSchema>;

/**
 * Step 1: validate the input, find the source (the registry's bucket, from
 * the cluster), take the source's run lease, capture its config. `execution`
 * (the Step Functions execution's id) goes into the lease, so the rule on an
 * execution that died finds its run.
 */
export async function discoverBackup(
  raw: unknown,
  deps: WorkflowDeps,
  execution?: string,
): Promise<BackupState> {
  const input = parseInput(backupInputSchema, raw, 'backup input');
  const now = deps.now();
  const snapshotId = newSnapshotId(now);
  const root = rootOf(deps.vault);
  let source: Location;
  let profile = 'bucket';
  let resourceName: string | undefined;
  let rootDirectory = '';
  const clusterFiles: string[] = [];
  let captured: ReadonlyArray<{ name: string; yaml: string }> = [];
  let quiesce: QuiesceRecord | undefined;
  /** The layout the profile says its bucket is in (Quay's); else it is looked for. */
  let declared: SourceLayout | undefined;
  if (input.source !== undefined) {
    const given = input.source;
    if (isDirectoryEndpoint(given.endpoint)) profile = 'directory';
    source = {
      ...(given.endpoint === undefined ? {} : { endpoint: given.endpoint }),
      region: given.region,
      bucket: given.bucket,
      prefix: given.prefix,
      forcePathStyle: given.forcePathStyle ?? deps.pathStyle(given.endpoint),
      access: given.access,
    };
  } else {
    const registry = deps.profile();
    const found = await registry.discover();
    const { claim } = found.storage;
    if (claim !== undefined)
      throw new InputError(
        `the registry keeps its blobs on PersistentVolumeClaim ${claim.namespace}/${claim.claimName}, not in a bucket`,
        [
          `source: back the volume up where it is mounted (regvault backup --source-dir <its mount>${claim.subPath === '' ? '' : `/${claim.subPath}`}), or let the CLI run a Job that mounts it (regvault backup --job-vault-secret <Secret>; docs/filesystem.md)`,
        ],
      );
    profile = registry.name;
    declared = registry.bucketLayout;
    resourceName = found.resourceName;
    rootDirectory = normaliseRoot(found.storage.rootDirectory);
    source = {
      ...deps.storageAccess(
        {
          bucket: found.storage.bucket,
          endpoint: found.storage.regionEndpoint,
          secretName: found.storage.secretName,
        },
        'read',
      ),
      region: found.storage.region,
      bucket: found.storage.bucket,
      prefix: '',
    };
    captured = await registry.captureConfig({ includeSecret: input.includeSecret });
    // What quiescing will change, and that it can be done, is known before anything is written.
    quiesce = await registry.planQuiesce?.();
  }
  // Everything that can fail for want of access (the keys, the bucket) is read
  // before the first vault write, so a refused discovery leaves nothing behind.
  const sourceClient = await deps.s3(source);
  const layout: SourceLayout =
    declared ??
    ((await looksLikeRegistry(sourceClient, source, rootDirectory)) ? 'registry' : 'generic');
  const selection = selectionOf(input);
  if (selection !== undefined && layout !== 'registry')
    throw new InputError(
      layout === 'quay'
        ? 'a Quay registry is backed up whole (its database holds every repository)'
        : 'a plain bucket cannot be backed up by repository',
      [
        layout === 'quay'
          ? 'repositories: leave out repositories and excludeRepositories for the quay profile'
          : `repositories: s3://${source.bucket}/${source.prefix} holds no registry layout; leave out repositories and excludeRepositories`,
      ],
    );
  // A partial backup builds on the last one of the same selection, as retention judges them.
  const line = lineOf(source, selection);
  const previous = await newestComplete(deps.vault, (m) => sourceOf(m) === line);
  // The first write: a backup of this source already running keeps this one out.
  const taken = await acquireRunLease(
    deps.vault,
    {
      runId: `backup-${snapshotId}`,
      snapshotId,
      source: leaseSourceOf(source),
      ...(input.breakLock === undefined ? {} : { breakLock: input.breakLock }),
    },
    {
      ttlMs: deps.lease.ttlMs,
      holder: { ...deps.lease.holder, ...(execution === undefined ? {} : { execution }) },
    },
    now,
  );
  if (taken.replaced !== undefined)
    deps.log.warn('backup took over the lease of a dead run and marked it failed', {
      runId: taken.replaced.lease.runId,
      snapshotId: taken.replaced.lease.snapshotId,
      reason: taken.replaced.reason,
    });
  for (const file of captured) {
    const key = vaultKeys.cluster(root, snapshotId, file.name);
    await putBytes(deps.vault, key, Buffer.from(file.yaml), 'application/yaml');
    clusterFiles.push(file.name);
  }
  const resources =
    input.resources === undefined
      ? undefined
      : await captureResources({
          vault: deps.vault,
          api: await deps.resources(),
          snapshotId,
          selection: input.resources,
          required: input.source === undefined ? await deps.profile().requiredObjects() : [],
          log: deps.log,
          now,
        });
  const state: BackupState = {
    runId: `backup-${snapshotId}`,
    snapshotId,
    startedAt: now.toISOString(),
    layout,
    source,
    profile,
    ...(resourceName === undefined ? {} : { resourceName }),
    rootDirectory,
    ...(previous === undefined ? {} : { previousSnapshotId: previous.id }),
    targetObjectsPerShard: input.targetObjectsPerShard,
    concurrency: input.concurrency,
    clusterFiles,
    ...(resources === undefined ? {} : { resources }),
    ...(input.ttlDays === undefined ? {} : { expiresAt: expiresAtOf(now, input.ttlDays) }),
    ...(selection === undefined ? {} : { selection }),
  };
  await putJson(deps.vault, vaultKeys.manifest(root, snapshotId), baseManifest(state, deps));
  if (quiesce !== undefined) return quiesceForBackup(state, quiesce, deps);
  deps.log.info('backup discovered its source', {
    runId: state.runId,
    bucket: source.bucket,
    layout,
    previous: previous?.id,
  });
  return state;
}

/**
 * Quiesces the registry and dumps its database into the snapshot; the
 * state with the dump. On failure the run is marked failed, which resumes
 * the registry, before the error goes on.
 */
async function quiesceForBackup(
  state: BackupState,
  plan: QuiesceRecord,
  deps: WorkflowDeps,
): Promise<BackupState> {
  try {
    const database = await quiesceAndDump(state, plan, deps);
    const quiesced: BackupState = { ...state, quiesced: true };
    const dumped = database === undefined ? quiesced : { ...quiesced, database };
    await putJson(
      deps.vault,
      vaultKeys.manifest(rootOf(deps.vault), state.snapshotId),
      baseManifest(dumped, deps),
    );
    return dumped;
  } catch (err) {
    await markBackupFailed(
      state,
      undefined,
      { error: err instanceof Error ? err.name : 'Error', cause: messageOf(err) },
      deps,
    );
    throw err;
  }
}
