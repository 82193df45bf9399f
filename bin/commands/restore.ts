/**
 * `regvault restore`: the restore workflow, run locally.
 */
import type { Command } from 'commander';
import { InputError } from '../../functions/commons/errors.ts';
import { runRestoreLocally } from '../../functions/commons/local/runner.ts';
import { restoreInputSchema } from '../../functions/commons/workflows/restore.ts';
import { restoreClaimNow } from '../claim-restore.ts';
import { commandWithSettings, type Flags, reporter, run, settingsOf } from '../context.ts';
import { depsFor, findKubeconfig, registryAnswers, requireCluster } from '../deps.ts';
import { withDetectedProfile } from '../detect-profile.ts';
import { directoryLocationOf } from '../directory-flags.ts';
import { pullSampleOf, snapshotNamed } from '../flags.ts';
import { restoreOutcome, workflowExitCode } from '../outcome.ts';
import { stepProgressReporter } from '../progress.ts';
import { numbersOf } from '../settings.ts';
import { FlagNames, RESTORE_FIELDS } from '../workflow-flags.ts';
import {
  partialWarning,
  restoreIntoLive,
  selectiveRestoreOptions,
  selectsRepositories,
} from './restore-repository.ts';
import {
  resourceFlagsWithoutResources,
  restoreResourcesNow,
  withResourceRestoreFlags,
} from './restore-resources.ts';

/** Adds the command to the program. */
export function restoreCommand(program: Command): void {
  withResourceRestoreFlags(
    selectiveRestoreOptions(
      commandWithSettings(
        program,
        'restore',
        'restore a snapshot into a bucket, switch the registry to it, verify, roll back on failure',
      ),
    ),
  )
    .option('--snapshot <id>', 'snapshot id, or latest', 'latest')
    // Required unless --resources (cluster objects only) or --into-live (checked in the action).
    .option(
      '--target-bucket <bucket>',
      'empty bucket to restore into (create it first); with --into-live, the live one',
    )
    .option(
      '--target-dir <dir>',
      'restore into this directory instead of a bucket (a registry filesystem rootdirectory; empty unless --allow-non-empty); with --no-switch',
    )
    .option(
      '--target-claim <name>',
      "for a registry on a PVC: the claim (in the registry's namespace; made when missing) a Job restores into before the switch",
    )
    .option(
      '--job-vault-secret <name>',
      "with --target-claim: the Secret (in the registry's namespace) with the vault's keys that the restore Job reads",
    )
    .option(
      '--job-image <image>',
      'with --target-claim: the image the restore Job runs regvault from',
    )
    .option('--target-region <region>', 'its region (defaults to the vault region)')
    .option('--target-endpoint <url>', 'its endpoint (defaults to the vault endpoint)')
    .option('--target-prefix <prefix>', 'key prefix in the target bucket', '')
    .option(
      '--target-secret <name>',
      "Secret (in the registry's namespace) with keys for the target bucket",
    )
    .option('--no-switch', 'copy only; leave the registry where it is')
    .option('--no-rollback', 'leave the registry on the new bucket even if verification fails')
    .option('--allow-non-empty', 'restore into a bucket that already holds objects')
    .option(
      '--pull-sample <n|all>',
      'images pulled in full after the switch, every blob sha256-checked (a count, or all)',
      '3',
    )
    .option('--push-test', 'also push a test image into regvault-verify/push-test after verifying')
    .option(
      '--skip-blob-hashing',
      'before the switch, trust blobs the copy did not check against their digest (faster; the restore is then not proven)',
    )
    .option('--rollout-timeout <seconds>', 'how long the registry may take to roll', '600')
    .action(async (flags: Flags, command: Command) => {
      if (selectsRepositories(flags)) return restoreIntoLive(flags, command);
      let settings = await settingsOf(flags);
      if (flags['resources'] === true) return restoreResourcesNow(flags, settings);
      const alone = resourceFlagsWithoutResources(flags);
      if (alone.length > 0) throw new InputError('the flags are not valid', alone);
      if (flags['targetClaim'] !== undefined) return restoreClaimNow(flags, settings);
      const targetDir = directoryLocationOf(flags, 'targetDir', settings.vaultRegion);
      if (targetDir !== undefined && flags['switch'] !== false)
        throw new InputError('the flags are not valid', [
          '--target-dir: a restore into a directory copies only; pass --no-switch (the registry is pointed at a PVC by the cluster path, docs/filesystem.md)',
        ]);
      if (flags['targetBucket'] === undefined && targetDir === undefined)
        command.error("error: required option '--target-bucket <bucket>' not specified");
      const numbers = numbersOf(flags, ['rolloutTimeout']);
      const pullSample = pullSampleOf(flags['pullSample']);
      const kubeconfig = findKubeconfig(settings);
      // The switch patches the cluster; the target's keys come from a Secret in it.
      if (flags['switch'] !== false) requireCluster(kubeconfig, 'restore (switching the registry)');
      else if (flags['targetSecret'] !== undefined)
        requireCluster(kubeconfig, 'restore (reading --target-secret)');
      const names = new FlagNames(RESTORE_FIELDS, run.origins);
      const targetEndpoint = flags['targetEndpoint'] ?? settings.vaultEndpoint;
      const input = names.check(
        restoreInputSchema,
        {
          snapshot: flags['snapshot'],
          target:
            targetDir !== undefined
              ? {
                  bucket: targetDir.bucket,
                  region: targetDir.region,
                  endpoint: targetDir.endpoint,
                }
              : {
                  bucket: flags['targetBucket'],
                  region: flags['targetRegion'] ?? settings.vaultRegion,
                  prefix: flags['targetPrefix'],
                  ...(targetEndpoint === undefined ? {} : { endpoint: targetEndpoint }),
                  ...(flags['targetSecret'] === undefined
                    ? {}
                    : { secretName: flags['targetSecret'] }),
                },
          switchRegistry: flags['switch'] !== false,
          rollbackOnFailure: flags['rollback'] !== false,
          allowNonEmptyTarget: flags['allowNonEmpty'] === true,
          pullSample,
          pushTest: flags['pushTest'] === true,
          skipBlobHashing: flags['skipBlobHashing'] === true,
          rolloutTimeoutSeconds: numbers.rolloutTimeout,
          concurrency: settings.concurrency,
        },
        'restore input',
      );
      if (input.switchRegistry && settings.registryUrl === undefined)
        throw new InputError('the restore cannot prove the registry serves the snapshot', [
          `${names.label('registryUrl')}: switching the registry needs its URL to verify it afterwards; pass it, or pass --no-switch to copy only`,
        ]);
      if (input.switchRegistry || input.target.secretName !== undefined)
        settings = await withDetectedProfile(settings, kubeconfig, reporter(settings));
      const out = reporter(settings);
      const deps = depsFor(settings, kubeconfig, stepProgressReporter({ json: settings.json }));
      try {
        // A snapshot the vault does not hold (or not complete) is bad input, found before
        // anything runs; the manifest gives the progress its total, and the workflow
        // restores the very snapshot it names.
        const manifest = await snapshotNamed(deps.vault, input.snapshot, '--snapshot');
        if (manifest.selection !== undefined)
          out.event('warning', `restore: ${partialWarning(manifest)}`, {
            message: partialWarning(manifest),
            partial: manifest.selection,
          });
        // The registry is verified after the switch with this login: a wrong one would
        // otherwise be found only then, after the whole copy, and rolled back.
        if (input.switchRegistry) await registryAnswers(deps);
        const progress = out.progress('restore copy', {
          objects: manifest.counts.objects,
          bytes: manifest.bytes,
        });
        const result = await runRestoreLocally(
          { ...input, snapshot: manifest.id },
          {
            deps,
            waitMs: 2_000,
            onState: (state) => out.event('state', `restore: ${state}`, { state }),
            onCopyProgress: (totals) => progress.update(totals),
          },
        );
        progress.stop(result.totals);
        run.exitCode = workflowExitCode(result);
        const outcome = restoreOutcome(result, (text) => names.rewrite(text));
        out.result(outcome.fields, outcome.text);
      } finally {
        deps.close();
      }
    });
}
