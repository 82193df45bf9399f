/**
 * `regvault restore --repository <name|glob> --into-live`: selected
 * repositories (and tags) of a snapshot back into the registry's live
 * bucket, verified through the registry API (workflows/selective.ts). The
 * flags that select live here; restore.ts hands the run over when one is given.
 */
import type { Command } from 'commander';
import { InputError } from '../../functions/commons/errors.ts';
import { selectionText } from '../../functions/commons/registry/selection.ts';
import type { SnapshotManifest } from '../../functions/commons/vault/format.ts';
import {
  type RepositoryOutcome,
  restoreSelection,
  type SelectiveRestoreResult,
} from '../../functions/commons/workflows/selective.ts';
import { type Flags, reporter, run, settingsOf } from '../context.ts';
import { depsFor, findKubeconfig, registryAnswers, requireCluster, s3Location } from '../deps.ts';
import { withDetectedProfile } from '../detect-profile.ts';
import { checkSnapshotId, pullSampleOf, repeatable, snapshotNamed } from '../flags.ts';
import { ExitCode } from '../outcome.ts';
import { stepProgressReporter } from '../progress.ts';
import { FlagNames } from '../workflow-flags.ts';

/** Which flags set the selective restore's fields (functions/commons/workflows/selective.ts). */
const SELECTIVE_FIELDS = {
  snapshot: { flag: '--snapshot' },
  repositories: { flag: '--repository' },
  tags: { flag: '--tag' },
  registryUrl: { setting: 'registryUrl' },
} as const;

/** The full restore's flags that a restore into the live registry does not take, and why. */
const NOT_INTO_LIVE: ReadonlyArray<{ option: string; flag: string; why: string }> = [
  {
    option: 'targetSecret',
    flag: '--target-secret',
    why: "the live bucket's keys are those the registry uses (its Secret, on ACP) or the vault's (with --target-bucket)",
  },
  {
    option: 'switch',
    flag: '--no-switch',
    why: 'a restore into the live registry never switches it',
  },
  { option: 'rollback', flag: '--no-rollback', why: 'there is no switch to roll back' },
  { option: 'allowNonEmpty', flag: '--allow-non-empty', why: 'the live bucket is never empty' },
];

/** Adds the selection flags to the restore command. */
export function selectiveRestoreOptions(command: Command): Command {
  return command
    .option(
      '--repository <name|glob>',
      'with --into-live: restore only this repository (repeat it, or a glob: team/* within one level, team/** below)',
      repeatable,
      [],
    )
    .option(
      '--tag <tag|glob>',
      'with --repository: only these tags and what they need, their referrers included (repeat it, or a glob)',
      repeatable,
      [],
    )
    .option(
      '--into-live',
      "restore the selected repositories into the registry's live bucket: no new bucket, no switch",
    )
    .option(
      '--overwrite-tags',
      'with --into-live: write back live tags that now point elsewhere than the snapshot',
    )
    .option(
      '--dry-run',
      'with --into-live: list what would be added or replaced; with --resources: print the objects as YAML, what would be created, updated or skipped; write nothing',
    );
}

/** What a full restore of a partial snapshot says before it starts. */
export function partialWarning(manifest: SnapshotManifest): string {
  return `snapshot ${manifest.id} is PARTIAL: it holds only the repositories ${selectionText(manifest.selection ?? {})}; the restored registry will hold no other`;
}

/** True when the command line asks for a selective restore (any of its flags). */
export function selectsRepositories(flags: Flags): boolean {
  return (
    flags['intoLive'] === true ||
    (flags['repository'] as string[]).length > 0 ||
    (flags['tag'] as string[]).length > 0 ||
    flags['overwriteTags'] === true ||
    // --dry-run also serves --resources; alone, the selective restore refuses it by name.
    (flags['dryRun'] === true && flags['resources'] !== true)
  );
}

/** The usage problems of a selective restore's flags, every one at once. */
function usageIssues(flags: Flags, command: Command): string[] {
  const issues: string[] = [];
  const restOf = 'a restore into a new bucket takes the whole snapshot';
  if (flags['intoLive'] !== true)
    issues.push(
      `--into-live: --repository, --tag, --overwrite-tags and --dry-run restore into the live registry; pass --into-live (${restOf})`,
    );
  if ((flags['repository'] as string[]).length === 0)
    issues.push(
      '--repository: name the repositories to restore into the live registry (a name such as team/app, or a glob such as team/*)',
    );
  for (const { option, flag, why } of NOT_INTO_LIVE)
    if (command.getOptionValueSource(option) === 'cli')
      issues.push(`${flag}: not taken with --into-live (${why}); leave it out`);
  return issues;
}

/** One repository's line of the report. */
function repositoryLine(r: RepositoryOutcome, dryRun: boolean): string {
  const parts = [
    r.added.length > 0 ? `${dryRun ? 'adds' : 'added'} ${r.added.join(', ')}` : '',
    r.replaced.length > 0
      ? `${dryRun ? 'replaces' : 'replaced'} ${r.replaced.map((t) => t.tag).join(', ')}`
      : '',
    r.kept.length > 0
      ? `keeps ${r.kept.map((t) => `${t.tag} (live ${t.live.slice(0, 19)}, snapshot ${t.snapshot.slice(0, 19)})`).join(', ')}: moved since the snapshot; --overwrite-tags writes them back`
      : '',
    r.unchanged > 0 ? `${r.unchanged} tag(s) already as in the snapshot` : '',
    Object.keys(r.referrers).length > 0
      ? `referrers of ${Object.keys(r.referrers).length} manifest(s)`
      : '',
  ].filter((part) => part !== '');
  return `  ${r.name}: ${parts.join('; ') || 'nothing to do'}`;
}

/** The result's text: what was (or would be) written, and how the verification went. */
function resultText(result: SelectiveRestoreResult): string {
  const lines = [
    result.dryRun
      ? `dry run of snapshot ${result.snapshotId} into ${result.target}: nothing was written`
      : `restored from snapshot ${result.snapshotId} into ${result.target}`,
    ...result.repositories.map((r) => repositoryLine(r, result.dryRun)),
    `  blobs: ${result.blobs.copied} ${result.dryRun ? 'to copy' : 'copied'} (${result.blobs.bytes} bytes), ${result.blobs.present} already live; links: ${result.links.copied} ${result.dryRun ? 'to copy' : 'copied'}, ${result.links.present} already live`,
  ];
  const verify = result.verify;
  if (verify !== undefined)
    lines.push(
      verify.ok
        ? `  verified through the registry: ${verify.tags} tags, ${verify.blobsServed} blobs served, ${verify.pulled} pulled in full, referrers of ${verify.referrersListed} manifest(s) listed${verify.referrersBy === undefined ? '' : ` (by ${verify.referrersBy})`}`
        : `  verification FAILED:\n    ${verify.problems.join('\n    ')}`,
    );
  return lines.join('\n');
}

/** Runs a selective restore from the restore command's flags. */
export async function restoreIntoLive(flags: Flags, command: Command): Promise<void> {
  let settings = await settingsOf(flags);
  const issues = usageIssues(flags, command);
  if (issues.length > 0)
    throw new InputError('the restore into the live registry cannot run as given', issues);
  const snapshotId = checkSnapshotId(String(flags['snapshot']), '--snapshot');
  const dryRun = flags['dryRun'] === true;
  const names = new FlagNames(SELECTIVE_FIELDS, run.origins);
  if (settings.registryUrl === undefined && !dryRun)
    throw new InputError('the restore into the live registry verifies it afterwards', [
      `${names.label('registryUrl')}: where the registry answers, e.g. https://registry.example.com; the restored repositories are checked through it`,
    ]);
  const plainBucket = typeof flags['targetBucket'] === 'string';
  const target = plainBucket
    ? {
        location: s3Location(
          settings,
          {
            bucket: String(flags['targetBucket']),
            prefix: String(flags['targetPrefix'] ?? ''),
            endpoint: flags['targetEndpoint'],
            region: flags['targetRegion'],
          },
          { bucket: '--target-bucket', endpoint: '--target-endpoint', region: '--target-region' },
        ),
      }
    : undefined;
  const kubeconfig = findKubeconfig(settings);
  // Without --target-bucket the live bucket is the one the registry's resource names.
  if (!plainBucket)
    requireCluster(
      kubeconfig,
      'restore --into-live (finding the registry bucket; or pass --target-bucket)',
    );
  // A default sample of 3 suits a whole registry; a few repositories are pulled in full.
  const pullSample =
    command.getOptionValueSource('pullSample') === 'default'
      ? 'all'
      : pullSampleOf(flags['pullSample']);
  if (!plainBucket) settings = await withDetectedProfile(settings, kubeconfig, reporter(settings));
  const out = reporter(settings);
  const deps = depsFor(settings, kubeconfig, stepProgressReporter({ json: settings.json }));
  try {
    const snapshot = await snapshotNamed(deps.vault, snapshotId, '--snapshot');
    if (!dryRun) await registryAnswers(deps);
    const progress = out.progress('restore copy');
    let result: SelectiveRestoreResult;
    try {
      result = await restoreSelection(
        {
          snapshot,
          repositories: flags['repository'] as string[],
          ...((flags['tag'] as string[]).length > 0 ? { tags: flags['tag'] as string[] } : {}),
          overwriteTags: flags['overwriteTags'] === true,
          dryRun,
          ...(target === undefined
            ? {}
            : {
                target: {
                  location: target.location,
                  rootDirectory: snapshot.source.rootDirectory,
                },
              }),
          pullSample,
          concurrency: settings.concurrency,
        },
        deps,
        { onPlanned: (total) => progress.setTotal(total), onProgress: (t) => progress.update(t) },
      );
    } catch (err) {
      throw names.rethrown(err);
    }
    progress.stop(result.totals);
    run.exitCode = result.verify === undefined || result.verify.ok ? ExitCode.Ok : ExitCode.Failed;
    const text = resultText(result);
    // The text goes into --json's result too: it says what to do about kept tags.
    out.result({ restore: result, summary: text }, text);
  } finally {
    deps.close();
  }
}
