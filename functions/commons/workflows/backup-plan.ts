/**
 * The backup's second step: the source cut into shards (a registry's with
 * its copy policy, anything else with the generic one, the last backup's
 * shards taken again where they still fit) and the run's job written for the
 * copy workers.
 */
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { leanPathFor } from '../copy/context.ts';
import { genericCopyPolicy, planShards } from '../copy/plan.ts';
import type { PreviousPlan } from '../copy/policy.ts';
import { registryCopyPolicy } from '../registry/copy-policy.ts';
import { REGISTRY_V2 } from '../registry/layout.ts';
import { quayCopyPolicy } from '../registry/quay-copy-policy.ts';
import { selectionOf, vaultKeys } from '../vault/format.ts';
import { previousPlanOf, saveJob } from '../vault/runs.ts';
import { rootOf } from '../vault/store.ts';
import { type BackupState, renewBackupLease, vaultLocation } from './backup-run.ts';
import type { WorkflowDeps } from './deps.ts';

export interface BackupPlanOutput {
  readonly linkShardIds: readonly string[];
  readonly dataShardIds: readonly string[];
  readonly estimatedObjects: number;
  readonly planRequests: number;
  /** True when the last backup's shards were planned with again (copy/policy.ts `reuse`). */
  readonly planReused?: boolean;
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
  await renewBackupLease(state, deps, { unlessFresh: true });
  const client = await deps.s3(state.source);
  // Listed through the lean request path, as the workers list: the SDK's XML
  // parsing made planning 3 to 4 times slower (0.55 s against 0.15 s for 20,000 objects).
  const fast = leanPathFor(client, state.source, state.concurrency);
  // The last backup's shards, when its run's job is still in the vault: the policy may plan with them.
  const previous =
    state.previousSnapshotId === undefined || state.layout !== 'registry'
      ? undefined
      : await previousPlanOf(deps.vault, state.previousSnapshotId);
  const planWith = (targetObjectsPerShard: number, again?: PreviousPlan) =>
    state.layout === 'quay'
      ? planShards(
          client,
          state.source.bucket,
          `${state.source.prefix}${state.rootDirectory}`,
          quayCopyPolicy,
          { targetObjectsPerShard, fast },
        )
      : state.layout === 'registry'
        ? planShards(
            client,
            state.source.bucket,
            `${state.source.prefix}${state.rootDirectory}`,
            registryCopyPolicy,
            { targetObjectsPerShard, previous: again, fast },
          )
        : planShards(client, state.source.bucket, state.source.prefix, genericCopyPolicy, {
            targetObjectsPerShard,
            fast,
          });
  let plan = await planWith(state.targetObjectsPerShard, previous);
  const shardCount = plan.linkShards.length + plan.dataShards.length;
  if (shardCount > MAX_SHARDS) {
    // Fewer, larger shards: their ids travel in the plan's output.
    plan = await planWith(Math.ceil((state.targetObjectsPerShard * shardCount) / MAX_SHARDS));
  }
  const shards = [...plan.linkShards, ...plan.dataShards];
  deps.log.info('backup planned', {
    runId: state.runId,
    shards: shards.length,
    reused: plan.reused,
    listRequests: plan.requests,
  });
  await saveJob(deps.vault, {
    purpose: 'backup',
    runId: state.runId,
    snapshotId: state.snapshotId,
    source: state.source,
    target: vaultLocation(deps),
    ...(state.layout === 'registry'
      ? { registryPrefix: `${state.rootDirectory}${REGISTRY_V2}` }
      : {}),
    ...(state.layout === 'quay'
      ? { registryPrefix: state.rootDirectory, registryLayout: 'quay' as const }
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
    planReused: plan.reused,
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
