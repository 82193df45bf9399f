/**
 * How a backup run ends: finalize (inventory, catalog and checks from the
 * workers' records, then the manifest), the failure path that marks its
 * snapshot failed with what is known, and the end of an execution that died
 * without either (aborted, timed out). Each resumes a quiesced registry and
 * lets the source's lease go.
 */
import { z } from 'zod';
import { addTotals, emptyTotals, type Failure, type Totals } from '../copy/model.ts';
import { type FailureName, failureNameOf, messageOf } from '../errors.ts';
import { type SnapshotManifest, SnapshotStatus, vaultKeys } from '../vault/format.ts';
import { endRunOfExecution, RunLeaseLostError } from '../vault/run-lease.ts';
import { putJson, readManifest, rootOf } from '../vault/store.ts';
import type { BackupPlanOutput } from './backup-plan.ts';
import {
  type BackupState,
  baseManifest,
  releaseBackupLease,
  renewBackupLease,
} from './backup-run.ts';
import type { WorkflowDeps } from './deps.ts';
import { tallyRun } from './finalize-records.ts';
import { resumeRegistry } from './registry-state.ts';

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
  // The registry first: whatever else fails, what this run stopped serves again.
  // (Its record is read when discover said it quiesced, and on every failure path.)
  const resumed =
    state.quiesced === true || error !== undefined
      ? await resumeRegistry(state.runId, deps)
      : undefined;
  // A run seen dead and taken over must not write its manifest over the failure the taker wrote.
  // A lease this process renewed less than a quarter of its life ago cannot have been seen
  // dead (it is neither expired nor held by a dead process), so it is not read again here.
  await renewBackupLease(state, deps, { unlessFresh: true });
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
  if (resumed !== undefined) checks['registryResumed'] = resumed;
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
    await resumeRegistry(state.runId, deps);
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
  // What the dead run quiesced (quay) serves again; without cluster access it is logged, not thrown.
  await resumeRegistry(ended.runId, deps);
  deps.log.warn('a backup execution ended without finishing its run; run ended', {
    runId: ended.runId,
    snapshotId: ended.snapshotId,
    status: detail.status,
  });
  return { ended: true, ...ended };
}
