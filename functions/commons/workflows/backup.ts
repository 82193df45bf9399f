/**
 * The backup workflow's steps (state-machines/backup.asl.json): validate and
 * discover, plan, (copy shards: the workers), finalize, and mark failed. Each
 * step takes the previous step's small JSON output and returns its own.
 */
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { resourceSelectionSchema } from '../cluster/resources-select.ts';
import {
  addTotals,
  emptyTotals,
  type Failure,
  type Location,
  locationSchema,
  type Totals,
} from '../copy/model.ts';
import { DEFAULT_OBJECTS_PER_SHARD, genericCopyPolicy, planShards } from '../copy/plan.ts';
import { type FailureName, failureNameOf, InputError, messageOf, parseInput } from '../errors.ts';
import { looksLikeRegistry, registryCopyPolicy } from '../registry/copy-policy.ts';
import { normaliseRoot, REGISTRY_V2 } from '../registry/layout.ts';
import type { RepositorySelection } from '../registry/selection.ts';
import {
  expiresAtOf,
  MAX_TTL_DAYS,
  newSnapshotId,
  type SnapshotManifest,
  SnapshotStatus,
  selectionOf,
  selectionSchema,
  VAULT_FORMAT_VERSION,
  vaultKeys,
} from '../vault/format.ts';
import { lineOf, sourceOf } from '../vault/retention.ts';
import {
  acquireRunLease,
  endRunOfExecution,
  type LeaseSource,
  RunLeaseLostError,
  releaseRunLease,
  renewRunLease,
} from '../vault/run-lease.ts';
import { saveJob } from '../vault/runs.ts';
import { listSnapshots, putBytes, putJson, readManifest, rootOf } from '../vault/store.ts';
import { Access, type WorkflowDeps } from './deps.ts';
import { tallyRun } from './finalize-records.ts';
import { type CaptureSummary, captureResources } from './resources-capture.ts';

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

/** The workflow state after discovery: references and names, no keys. */
export interface BackupState {
  readonly runId: string;
  readonly snapshotId: string;
  readonly startedAt: string;
  readonly layout: 'registry' | 'generic';
  readonly source: Location;
  readonly profile: string;
  readonly resourceName?: string;
  readonly rootDirectory: string;
  readonly previousSnapshotId?: string;
  readonly targetObjectsPerShard: number;
  readonly concurrency: number;
  readonly clusterFiles: readonly string[];
  /** What the capture of cluster objects took, when the input asked for one. */
  readonly resources?: CaptureSummary;
  /** From the input's `ttlDays`, counted from `startedAt`. */
  readonly expiresAt?: string;
  /** A partial backup's repositories (absent: the whole registry). */
  readonly selection?: RepositorySelection;
}

/** The source a backup's run lease guards. */
export function leaseSourceOf(source: Location): LeaseSource {
  return {
    ...(source.endpoint === undefined ? {} : { endpoint: source.endpoint }),
    bucket: source.bucket,
    prefix: source.prefix,
  };
}

/**
 * Renews the run's lease. A run whose lease another run took over, or whose
 * snapshot was marked failed when its lease was released, must stop
 * (RunLeaseLost). A lease that is simply not there while the snapshot still
 * runs (a run started by a version without leases) lets it go on.
 */
export async function renewBackupLease(
  run: { runId: string; snapshotId: string; source: Location },
  deps: WorkflowDeps,
): Promise<void> {
  try {
    await renewRunLease(
      deps.vault,
      { runId: run.runId, source: leaseSourceOf(run.source) },
      deps.lease,
      deps.now(),
    );
  } catch (err) {
    if (!(err instanceof RunLeaseLostError && err.gone)) throw err;
    const manifest = await readManifest(deps.vault, run.snapshotId);
    if (manifest !== undefined && manifest.status !== SnapshotStatus.Running) throw err;
    deps.log.warn('the run has no lease; it goes on', { runId: run.runId });
  }
}

/** Lets the next backup of the source in, once the run's manifest is final. */
async function releaseBackupLease(state: BackupState, deps: WorkflowDeps): Promise<void> {
  await releaseRunLease(deps.vault, { runId: state.runId, source: leaseSourceOf(state.source) });
}

function vaultLocation(deps: WorkflowDeps): Location {
  return { ...deps.vault.location, access: Access.Vault };
}

function baseManifest(state: BackupState, deps: WorkflowDeps): SnapshotManifest {
  return {
    formatVersion: VAULT_FORMAT_VERSION,
    id: state.snapshotId,
    status: SnapshotStatus.Running,
    startedAt: state.startedAt,
    ...(state.expiresAt === undefined ? {} : { expiresAt: state.expiresAt }),
    ...(state.selection === undefined ? {} : { selection: selectionOf(state.selection) }),
    toolVersion: deps.toolVersion,
    layout: state.layout,
    runId: state.runId,
    leased: true,
    source: {
      profile: state.profile,
      ...(state.resourceName === undefined ? {} : { resourceName: state.resourceName }),
      bucket: state.source.bucket,
      ...(state.source.endpoint === undefined ? {} : { endpoint: state.source.endpoint }),
      region: state.source.region,
      prefix: state.source.prefix,
      rootDirectory: state.rootDirectory,
    },
    counts: { objects: 0, blobs: 0, repositories: 0, tags: 0 },
    bytes: 0,
    totals: emptyTotals(),
    uploadsSkipped: [],
    checks: {},
    failures: { count: 0, sample: [] },
    clusterFiles: [...state.clusterFiles],
    ...(state.resources === undefined ? {} : { resources: state.resources }),
    inventory: { records: 0, parts: [] },
  };
}

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
  if (input.source !== undefined) {
    const given = input.source;
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
    profile = registry.name;
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
  }
  // Everything that can fail for want of access (the keys, the bucket) is read
  // before the first vault write, so a refused discovery leaves nothing behind.
  const sourceClient = await deps.s3(source);
  const layout = (await looksLikeRegistry(sourceClient, source, rootDirectory))
    ? 'registry'
    : 'generic';
  const selection = selectionOf(input);
  if (selection !== undefined && layout !== 'registry')
    throw new InputError('a plain bucket cannot be backed up by repository', [
      `repositories: s3://${source.bucket}/${source.prefix} holds no registry layout; leave out repositories and excludeRepositories`,
    ]);
  // A partial backup builds on the last one of the same selection, as retention judges them.
  const line = lineOf(source, selection);
  const previous = (await listSnapshots(deps.vault))
    .filter((m) => m.status === SnapshotStatus.Complete && sourceOf(m) === line)
    .at(-1);
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
  deps.log.info('backup discovered its source', {
    runId: state.runId,
    bucket: source.bucket,
    layout,
    previous: previous?.id,
  });
  return state;
}

export interface BackupPlanOutput {
  readonly linkShardIds: readonly string[];
  readonly dataShardIds: readonly string[];
  readonly estimatedObjects: number;
  readonly planRequests: number;
}

/**
 * At most this many shards per run: the plan's output names every shard, and
 * a state's payload must stay under Step Functions' 256 KiB. 5,000 ids are
 * about 65 KB of JSON (13 bytes each), a quarter of it; a registry of 10
 * million objects (about 2,100 shards at the default size) plans once.
 */
export const MAX_SHARDS = 5_000;

/** Step 2: plan the source into shards and write the run's job for the workers. */
export async function planBackup(
  state: BackupState,
  deps: WorkflowDeps,
): Promise<BackupPlanOutput> {
  await renewBackupLease(state, deps);
  const client = await deps.s3(state.source);
  const planWith = (targetObjectsPerShard: number) =>
    state.layout === 'registry'
      ? planShards(
          client,
          state.source.bucket,
          `${state.source.prefix}${state.rootDirectory}`,
          registryCopyPolicy,
          { targetObjectsPerShard },
        )
      : planShards(client, state.source.bucket, state.source.prefix, genericCopyPolicy, {
          targetObjectsPerShard,
        });
  let plan = await planWith(state.targetObjectsPerShard);
  const shardCount = plan.linkShards.length + plan.dataShards.length;
  if (shardCount > MAX_SHARDS) {
    // Fewer, larger shards: their ids travel in the plan's output.
    plan = await planWith(Math.ceil((state.targetObjectsPerShard * shardCount) / MAX_SHARDS));
  }
  const shards = [...plan.linkShards, ...plan.dataShards];
  await saveJob(deps.vault, {
    purpose: 'backup',
    runId: state.runId,
    snapshotId: state.snapshotId,
    source: state.source,
    target: vaultLocation(deps),
    ...(state.layout === 'registry'
      ? { registryPrefix: `${state.rootDirectory}${REGISTRY_V2}` }
      : {}),
    ...(state.previousSnapshotId === undefined
      ? {}
      : { previousSnapshotId: state.previousSnapshotId }),
    ...(state.previousSnapshotId === undefined && (await poolIsEmpty(deps))
      ? { targetEmpty: true }
      : {}),
    ...(state.selection === undefined ? {} : { selection: selectionOf(state.selection) }),
    concurrency: state.concurrency,
    shards,
  });
  return {
    linkShardIds: plan.linkShards.map((s) => s.id),
    dataShardIds: plan.dataShards.map((s) => s.id),
    estimatedObjects: plan.estimatedObjects,
    planRequests: plan.requests,
  };
}

/** True when the vault's blob pool holds nothing (one LIST). */
async function poolIsEmpty(deps: WorkflowDeps): Promise<boolean> {
  const found = await deps.vault.client.send(
    new ListObjectsV2Command({
      Bucket: deps.vault.location.bucket,
      Prefix: vaultKeys.blobPool(rootOf(deps.vault)),
      MaxKeys: 1,
    }),
  );
  return (found.KeyCount ?? 0) === 0;
}

export interface BackupSummary {
  readonly snapshotId: string;
  readonly status: 'complete' | 'failed';
  readonly objects: number;
  readonly bytes: number;
  readonly copied: number;
  readonly skipped: number;
  readonly failed: number;
  readonly repositories: number;
  readonly tags: number;
  readonly message: string;
  /** A failed snapshot's failure name, the workflow's Error (`BackupFailed` state's ErrorPath). */
  readonly error?: FailureName;
}

/**
 * Step 4: total the shards, write the inventory and catalog, run the checks and
 * write the manifest (last). A backup with any failed object is failed.
 */
export async function finalizeBackup(
  state: BackupState,
  plan: BackupPlanOutput,
  deps: WorkflowDeps,
  error?: { error: string; cause: string },
): Promise<BackupSummary> {
  const root = rootOf(deps.vault);
  // A run seen dead and taken over must not write its manifest over the failure the taker wrote.
  await renewBackupLease(state, deps);
  const run = await tallyRun(deps, state, plan);
  const { results, catalog } = run;
  const totals = results.reduce<Totals>((sum, r) => addTotals(sum, r.totals), emptyTotals());
  const expectedShards = plan.linkShardIds.length + plan.dataShardIds.length;
  await putJson(deps.vault, vaultKeys.catalog(root, state.snapshotId), catalog);
  const checks: SnapshotManifest['checks'] = {
    shards: {
      ok: results.length === expectedShards && results.every((r) => r.aborted === undefined),
      detail: `${results.length} of ${expectedShards} shards finished${
        results.some((r) => r.aborted !== undefined)
          ? `; aborted: ${results
              .filter((r) => r.aborted !== undefined)
              .map((r) => `${r.shardId} (${r.aborted})`)
              .join(', ')}`
          : ''
      }`,
    },
    objects: {
      ok: totals.failed === 0 && run.failures.count === 0,
      detail:
        totals.failed === 0
          ? `every listed object is in the vault (${totals.copied} copied, ${totals.skipped} unchanged)`
          : `${totals.failed} objects failed`,
    },
    accounted: {
      ok: run.objects + totals.failed === totals.listed,
      detail: `${run.objects} inventory records + ${totals.failed} failed of ${totals.listed} listed`,
    },
  };
  if (run.references !== undefined) {
    checks['references'] = run.references;
    deps.log.info('catalog built', { runId: state.runId, tagLinksRead: run.tagLinksRead });
  }
  const { verified } = run;
  checks['digests'] = {
    ok: run.failures.digestMismatches === 0,
    detail: `blobs in the snapshot, as checked when each entered the vault (in this run, or in the run that first copied it): ${verified['server-sha256']} checked by the server's SHA-256 of the copy, ${verified['stream-sha256']} hashed while streaming, ${verified.unverified} unverified (the server computes no additional checksums); ${run.failures.digestMismatches} did not match their digest`,
  };
  const { gone } = run.failures;
  if (gone > 0) {
    checks['sourceGone'] = {
      ok: false,
      detail: `${gone} objects were listed but gone when copied (deleted, or removed by a registry garbage collection during the backup); run the backup again outside GC windows`,
    };
  }
  if (error !== undefined)
    checks['workflow'] = { ok: false, detail: `${error.error}: ${error.cause}` };
  const ok = Object.values(checks).every((check) => check.ok);
  const blobs = run.inventory.parts
    .filter((p) => p.kind === 'blobs')
    .reduce((sum, p) => sum + p.records, 0);
  const tags = catalog.repositories.reduce((sum, r) => sum + Object.keys(r.tags).length, 0);
  const manifest: SnapshotManifest = {
    ...baseManifest(state, deps),
    status: ok ? SnapshotStatus.Complete : SnapshotStatus.Failed,
    finishedAt: deps.now().toISOString(),
    counts: { objects: run.objects, blobs, repositories: catalog.repositories.length, tags },
    bytes: run.bytes,
    totals,
    uploadsSkipped: run.uploadIds,
    checks,
    failures: {
      count: Math.max(totals.failed, run.failures.count),
      sample: run.failures.sample,
    },
    inventory: run.inventory,
  };
  await putJson(deps.vault, vaultKeys.manifest(root, state.snapshotId), manifest);
  await releaseBackupLease(state, deps);
  const failedChecks = Object.entries(checks).filter(([, c]) => !c.ok);
  const message = ok
    ? `snapshot ${state.snapshotId} is complete: ${run.objects} objects, ${manifest.bytes} bytes (${totals.copied} copied, ${totals.skipped} unchanged)${state.resources === undefined ? '' : `, and ${state.resources.objects} cluster objects of ${state.resources.types} types (${state.resources.secrets} Secrets)`}`
    : `snapshot ${state.snapshotId} FAILED: ${failedChecks.map(([name, c]) => `${name}: ${c.detail}`).join('; ')}${run.failures.count > 0 ? `; failed objects: ${describeFailures(run.failures.sample, 5, run.failures.count)}` : ''}`;
  deps.log.info('backup finalized', {
    runId: state.runId,
    status: manifest.status,
    objects: run.objects,
  });
  const objectsFailed = totals.failed > 0 || run.failures.count > 0;
  return {
    snapshotId: state.snapshotId,
    status: ok ? 'complete' : 'failed',
    ...(ok
      ? {}
      : { error: failureNameOf(error?.error, objectsFailed ? 'ObjectsFailed' : 'BackupFailed') }),
    objects: run.objects,
    bytes: manifest.bytes,
    copied: totals.copied,
    skipped: totals.skipped,
    failed: totals.failed,
    repositories: catalog.repositories.length,
    tags,
    message,
  };
}

/** A short list of failed keys and why, for causes and logs (`total`: failures in all, where `failures` is a sample). */
export function describeFailures(
  failures: readonly Failure[],
  limit = 5,
  total = failures.length,
): string {
  const shown = failures
    .slice(0, limit)
    .map((f) => `${f.key} (${f.operation} ${f.code}: ${f.message})`);
  return `${shown.join(', ')}${total > shown.length ? ` and ${total - shown.length} more` : ''}`;
}

/** Step on any error: mark the snapshot failed with what is known, so nothing looks complete. */
export async function markBackupFailed(
  state: BackupState | undefined,
  plan: BackupPlanOutput | undefined,
  error: { error: string; cause: string },
  deps: WorkflowDeps,
): Promise<BackupSummary | { status: 'failed'; error: FailureName; message: string }> {
  const failed = {
    status: 'failed',
    error: failureNameOf(error.error, 'BackupFailed'),
    message: `${error.error}: ${error.cause}`,
  } as const;
  if (state === undefined) return failed;
  try {
    return await finalizeBackup(
      state,
      plan ?? {
        linkShardIds: [],
        dataShardIds: [],
        estimatedObjects: 0,
        planRequests: 0,
      },
      deps,
      error,
    );
  } catch (err) {
    if (err instanceof RunLeaseLostError) return failed; // the run that took over marked it failed
    const manifest =
      (await readManifest(deps.vault, state.snapshotId)) ?? baseManifest(state, deps);
    await putJson(deps.vault, vaultKeys.manifest(rootOf(deps.vault), state.snapshotId), {
      ...manifest,
      status: SnapshotStatus.Failed,
      finishedAt: deps.now().toISOString(),
      checks: {
        ...manifest.checks,
        workflow: {
          ok: false,
          detail: `${error.error}: ${error.cause}; finalizing also failed: ${messageOf(err)}`,
        },
      },
    });
    await releaseBackupLease(state, deps);
    return failed;
  }
}

/**
 * The EventBridge event of a backup execution that ended without finishing
 * its run (Step Functions Execution Status Change). AWS's own event: only the
 * fields read are named, the others are let through.
 */
export const executionEndedSchema = z.object({
  source: z.literal('aws.states'),
  'detail-type': z.literal('Step Functions Execution Status Change'),
  detail: z.object({
    executionArn: z.string().min(1),
    name: z.string(),
    status: z.enum(['ABORTED', 'TIMED_OUT', 'FAILED']),
    stopDate: z.number().nullish(),
    error: z.string().nullish(),
    cause: z.string().nullish(),
  }),
});
export type ExecutionEnded = z.infer<typeof executionEndedSchema>;

/** The longest part of an execution's cause kept in the reason (a manifest check, not a log). */
const CAUSE_CHARS = 500;

/**
 * Ends the run of a backup execution that was aborted, timed out or failed:
 * its snapshot is marked failed with the reason and its lease deleted, at
 * once, where a lease left behind would keep the next backup out until it
 * expired. An execution whose own failure path ended its run finds nothing.
 */
export async function endDeadExecution(
  event: ExecutionEnded,
  deps: WorkflowDeps,
): Promise<{ ended: boolean; runId?: string; snapshotId?: string; marked?: boolean }> {
  const { detail } = event;
  const at = detail.stopDate == null ? deps.now() : new Date(detail.stopDate);
  const why = [detail.error, detail.cause?.slice(0, CAUSE_CHARS)]
    .filter((part) => part != null && part !== '')
    .join(': ');
  const reason = `the execution ${detail.name} ended ${detail.status} at ${at.toISOString()}${why === '' ? '' : ` (${why})`}`;
  const ended = await endRunOfExecution(deps.vault, detail.executionArn, reason, deps.now());
  if (ended === undefined) return { ended: false };
  deps.log.warn('a backup execution ended without finishing its run; run ended', {
    runId: ended.runId,
    snapshotId: ended.snapshotId,
    status: detail.status,
  });
  return { ended: true, ...ended };
}
