/**
 * `regvault backup`: the backup workflow, run locally.
 */
import type { Command } from 'commander';
import { ExitCode, exitCodeOf, hintOf, InputError } from '../../functions/commons/errors.ts';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { backupInputSchema } from '../../functions/commons/workflows/backup.ts';
import { Access } from '../../functions/commons/workflows/deps.ts';
import { backupRunIdOf, retryFailedObjects } from '../../functions/commons/workflows/retry.ts';
import { backupThroughJobIfOnClaim } from '../claim-backup.ts';
import { commandWithSettings, type Flags, reporter, run, settingsOf } from '../context.ts';
import { depsFor, findKubeconfig, ownKeysOf, requireCluster } from '../deps.ts';
import { withDetectedProfile } from '../detect-profile.ts';
import { directoryLocationOf } from '../directory-flags.ts';
import { repeatable, selectionFlags } from '../flags.ts';
import { hintFields, workflowExitCode } from '../outcome.ts';
import { captureInputOf, withCaptureFlags } from '../resource-flags.ts';
import { numbersOf, type Settings } from '../settings.ts';
import { BACKUP_FIELDS, FlagNames } from '../workflow-flags.ts';

/** The object count a backup's plan step estimated, when `output` is that step's result. */
function planEstimateOf(state: string, output: unknown): number | undefined {
  if (state !== 'PlanShards' || typeof output !== 'object' || output === null) return undefined;
  const estimate: unknown = Reflect.get(output, 'estimatedObjects');
  return typeof estimate === 'number' ? estimate : undefined;
}

/** `backup --retry-failed <run>`: what the run did not copy, then its snapshot finalized again. */
async function retryFailed(value: string, settings: Settings): Promise<void> {
  const runId = backupRunIdOf(value.trim());
  if (runId === '')
    throw new InputError('the flags are not valid', [
      '--retry-failed: expected a backup run id or a snapshot id (see regvault snapshots list)',
    ]);
  const out = reporter(settings);
  const deps = depsFor(settings, findKubeconfig(settings));
  try {
    const summary = await retryFailedObjects(runId, deps).catch((err: unknown) => {
      // Its input is the flag's value: say so in the flag's name.
      if (err instanceof InputError)
        throw new InputError(
          err.message,
          err.issues.map((issue) => issue.replace(/^run: /, '--retry-failed: ')),
        );
      throw err;
    });
    run.exitCode =
      summary.status === 'complete' ? ExitCode.Ok : exitCodeOf(summary.error ?? 'BackupFailed');
    out.result(
      {
        status: summary.status === 'complete' ? 'SUCCEEDED' : 'FAILED',
        snapshot: summary,
        retried: summary.retried,
        recovered: summary.recovered,
        shardsCopiedAgain: summary.shardsCopiedAgain,
        ...(summary.error === undefined ? {} : { error: summary.message }),
        ...(summary.error === undefined ? {} : { hint: hintOf(summary.error) }),
      },
      `retried ${summary.retried} failed objects of ${runId}, ${summary.recovered} copied${
        summary.shardsCopiedAgain.length === 0
          ? ''
          : `; copied ${summary.shardsCopiedAgain.length} shards that had not ended again from their start (${summary.objectsCopiedAgain} objects copied)`
      }: ${summary.message}`,
    );
  } finally {
    deps.close();
  }
}

/** Adds the command to the program. */
export function backupCommand(program: Command): void {
  withCaptureFlags(
    commandWithSettings(
      program,
      'backup',
      'back up the registry the cluster names (or a plain bucket) into a new snapshot',
    ),
  )
    .option('--include-secret', 'also capture the storage Secret (it holds keys)')
    .option('--source-bucket <bucket>', 'back up this plain bucket instead of the registry')
    .option('--source-region <region>', 'region of --source-bucket (defaults to the vault region)')
    .option(
      '--source-endpoint <url>',
      'endpoint of --source-bucket (defaults to the vault endpoint)',
    )
    .option(
      '--source-dir <dir>',
      "back up the registry stored in this directory (its filesystem driver's rootdirectory, a mounted PVC) instead of the cluster's",
    )
    .option(
      '--job-vault-secret <name>',
      "for a registry on a PVC: the Secret (in the registry's namespace) with the vault's keys that the backup Job reads",
    )
    .option(
      '--job-image <image>',
      'the image the backup Job of a registry on a PVC runs regvault from',
    )
    .option('--shard-objects <n>', 'objects per shard', '5000')
    .option(
      '--break-lock <run>',
      'take over the run lease of this backup run (it holds the lock of the same source but is known dead), marking its snapshot failed',
    )
    .option(
      '--retry-failed <run>',
      'copy again only the objects this backup run (or snapshot id) recorded as failed, and finalize its snapshot again',
    )
    .option(
      '--repository <glob>',
      'back up only the repositories this matches (repeat it; team/* within one level, team/** below): a partial snapshot',
      repeatable,
      [],
    )
    .option(
      '--exclude-repository <glob>',
      'leave these repositories out (repeat it)',
      repeatable,
      [],
    )
    .option(
      '--ttl-days <days>',
      'the snapshot expires this many days after it starts; prune deletes it then, whatever the policy',
    )
    .action(async (flags: Flags) => {
      let settings = await settingsOf(flags);
      if (typeof flags['retryFailed'] === 'string') {
        await retryFailed(flags['retryFailed'], settings);
        return;
      }
      const numbers = numbersOf(flags, ['shardObjects', 'ttlDays']);
      const kubeconfig = findKubeconfig(settings);
      const sourceDir = directoryLocationOf(flags, 'sourceDir', settings.vaultRegion);
      if (typeof flags['sourceBucket'] !== 'string' && sourceDir === undefined)
        requireCluster(kubeconfig, 'backup (without --source-bucket or --source-dir)');
      const capture = captureInputOf(flags);
      if (capture.resources !== undefined) requireCluster(kubeconfig, 'backup --resources');
      const names = new FlagNames(BACKUP_FIELDS, run.origins);
      const input = names.check(
        backupInputSchema,
        {
          includeSecret: flags['includeSecret'] === true,
          targetObjectsPerShard: numbers.shardObjects,
          ...(numbers.ttlDays === undefined ? {} : { ttlDays: numbers.ttlDays }),
          ...(typeof flags['breakLock'] === 'string' ? { breakLock: flags['breakLock'] } : {}),
          ...selectionFlags(flags),
          concurrency: settings.concurrency,
          ...capture,
          ...(sourceDir !== undefined ? { source: sourceDir } : {}),
          ...(typeof flags['sourceBucket'] === 'string'
            ? {
                source: {
                  bucket: flags['sourceBucket'],
                  region: flags['sourceRegion'] ?? settings.vaultRegion,
                  // Its own keys when REGVAULT_SOURCE_* are set; the vault's otherwise.
                  ...(ownKeysOf().source === undefined ? {} : { access: Access.Source }),
                  // As plan and copy do: a bucket beside the vault needs no second endpoint.
                  ...(typeof flags['sourceEndpoint'] === 'string'
                    ? { endpoint: flags['sourceEndpoint'] }
                    : settings.vaultEndpoint === undefined
                      ? {}
                      : { endpoint: settings.vaultEndpoint }),
                },
              }
            : {}),
        },
        'backup input',
      );
      const fromCluster = sourceDir === undefined && typeof flags['sourceBucket'] !== 'string';
      if (fromCluster)
        settings = await withDetectedProfile(settings, kubeconfig, reporter(settings));
      const out = reporter(settings);
      const deps = depsFor(settings, kubeconfig);
      try {
        if (fromCluster && (await backupThroughJobIfOnClaim(flags, settings, deps, out))) return;
        // The total comes from the plan (PlanShards), which runs inside the workflow.
        const progress = out.progress('backup copy');
        const result = await runBackupLocally(input, {
          deps,
          onState: (state) => out.event('state', `backup: ${state}`, { state }),
          onStateDone: (state, output) => {
            const planned = planEstimateOf(state, output);
            if (planned !== undefined) progress.setTotal({ objects: planned, estimated: true });
          },
          onCopyProgress: (totals) => progress.update(totals),
        });
        progress.stop(result.totals);
        const summary = result.output as { message?: string } | undefined;
        const cause = result.cause === undefined ? undefined : names.rewrite(result.cause);
        run.exitCode = workflowExitCode(result);
        out.result(
          {
            status: result.status,
            ...(summary === undefined ? {} : { snapshot: summary }),
            ...(cause === undefined ? {} : { error: cause }),
            ...hintFields(result),
            totals: result.totals,
          },
          result.status === 'SUCCEEDED'
            ? (summary?.message ?? 'backup succeeded')
            : `backup FAILED: ${cause}`,
        );
      } finally {
        deps.close();
      }
    });
}
