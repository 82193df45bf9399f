/**
 * `regvault fsck`: a registry layout in a snapshot or a bucket.
 */
import type { Command } from 'commander';
import { fsckRegistry } from '../../functions/commons/registry/fsck.ts';
import {
  bucketSource,
  type RegistrySource,
} from '../../functions/commons/registry/fsck-sources.ts';
import { selectionText } from '../../functions/commons/registry/selection.ts';
import { snapshotSource } from '../../functions/commons/vault/snapshot-source.ts';
import { commandWithSettings, type Flags, reporter, run, settingsOf } from '../context.ts';
import { depsFor, s3Location } from '../deps.ts';
import { checkSnapshotId, snapshotNamed } from '../flags.ts';
import { ExitCode } from '../outcome.ts';
import { numbersOf } from '../settings.ts';

/** Adds the command to the program. */
export function fsckCommand(program: Command): void {
  commandWithSettings(
    program,
    'fsck',
    'check a registry layout: every tag leads to manifests, configs and layers that exist',
  )
    .option('--snapshot <id>', 'check a snapshot in the vault (id or latest)', 'latest')
    .option(
      '--bucket <bucket>',
      'check a registry bucket instead (endpoint and region as the vault unless given)',
    )
    .option('--bucket-endpoint <url>', 'endpoint of --bucket')
    .option('--bucket-region <region>', 'region of --bucket')
    .option('--root-directory <dir>', "the registry's root directory in --bucket", '')
    .option('--deep', 'hash every blob (or --sample of them) against its digest')
    .option('--sample <n>', 'with --deep, hash this many random blobs')
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const numbers = numbersOf(flags, ['sample']);
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        let source: RegistrySource;
        let what: string;
        if (typeof flags['bucket'] === 'string') {
          const location = s3Location(
            settings,
            {
              bucket: flags['bucket'],
              prefix: '',
              endpoint: flags['bucketEndpoint'],
              region: flags['bucketRegion'],
            },
            { bucket: '--bucket', endpoint: '--bucket-endpoint', region: '--bucket-region' },
          );
          source = bucketSource(
            await deps.s3(location),
            location.bucket,
            String(flags['rootDirectory']),
          );
          what = `s3://${location.bucket}`;
        } else {
          const manifest = await snapshotNamed(
            deps.vault,
            checkSnapshotId(String(flags['snapshot']), '--snapshot'),
            '--snapshot',
          );
          source = snapshotSource(deps.vault, manifest);
          what = `snapshot ${manifest.id}${manifest.selection === undefined ? '' : ` (partial: ${selectionText(manifest.selection)}; other repositories are not in it, by design)`}`;
        }
        const report = await fsckRegistry(source, {
          deep: flags['deep'] === true,
          ...(numbers.sample === undefined ? {} : { sample: numbers.sample }),
        });
        run.exitCode = report.ok ? ExitCode.Ok : ExitCode.Failed;
        out.result(
          {
            target: what,
            ok: report.ok,
            mode: report.mode,
            counts: report.counts,
            problems: report.problems,
            notices: report.notices,
          },
          `${what}: ${report.ok ? 'no problems' : 'PROBLEMS'} (${report.mode})\n${[...report.problems, ...report.notices].map((line) => `  ${line}`).join('\n')}`,
        );
      } finally {
        deps.close();
      }
    });
}
