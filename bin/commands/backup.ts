/**
 * `regvault backup`: the backup workflow, run locally.
 */
import type { Command } from 'commander';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { backupInputSchema } from '../../functions/commons/workflows/backup.ts';
import { commandWithSettings, type Flags, reporter, run, settingsOf } from '../context.ts';
import { depsFor, findKubeconfig, requireCluster } from '../deps.ts';
import { hintFields, workflowExitCode } from '../outcome.ts';
import { numbersOf } from '../settings.ts';
import { BACKUP_FIELDS, FlagNames } from '../workflow-flags.ts';

/** The object count a backup's plan step estimated, when `output` is that step's result. */
function planEstimateOf(state: string, output: unknown): number | undefined {
  if (state !== 'PlanShards' || typeof output !== 'object' || output === null) return undefined;
  const estimate: unknown = Reflect.get(output, 'estimatedObjects');
  return typeof estimate === 'number' ? estimate : undefined;
}

/** Adds the command to the program. */
export function backupCommand(program: Command): void {
  commandWithSettings(
    program,
    'backup',
    'back up the registry the cluster names (or a plain bucket) into a new snapshot',
  )
    .option('--include-secret', 'also capture the storage Secret (it holds keys)')
    .option('--source-bucket <bucket>', 'back up this plain bucket instead of the registry')
    .option('--source-region <region>', 'region of --source-bucket (defaults to the vault region)')
    .option(
      '--source-endpoint <url>',
      'endpoint of --source-bucket (defaults to the vault endpoint)',
    )
    .option('--shard-objects <n>', 'objects per shard', '5000')
    .option(
      '--break-lock <run>',
      'take over the run lease of this backup run (it holds the lock of the same source but is known dead), marking its snapshot failed',
    )
    .option(
      '--ttl-days <days>',
      'the snapshot expires this many days after it starts; prune deletes it then, whatever the policy',
    )
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const numbers = numbersOf(flags, ['shardObjects', 'ttlDays']);
      const kubeconfig = findKubeconfig(settings);
      if (typeof flags['sourceBucket'] !== 'string')
        requireCluster(kubeconfig, 'backup (without --source-bucket)');
      const names = new FlagNames(BACKUP_FIELDS, run.origins);
      const input = names.check(
        backupInputSchema,
        {
          includeSecret: flags['includeSecret'] === true,
          targetObjectsPerShard: numbers.shardObjects,
          ...(numbers.ttlDays === undefined ? {} : { ttlDays: numbers.ttlDays }),
          ...(typeof flags['breakLock'] === 'string' ? { breakLock: flags['breakLock'] } : {}),
          concurrency: settings.concurrency,
          ...(typeof flags['sourceBucket'] === 'string'
            ? {
                source: {
                  bucket: flags['sourceBucket'],
                  region: flags['sourceRegion'] ?? settings.vaultRegion,
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
      const out = reporter(settings);
      const deps = depsFor(settings, kubeconfig);
      try {
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
