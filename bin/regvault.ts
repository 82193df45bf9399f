#!/usr/bin/env -S npx tsx
/**
 * The regvault CLI: the backup and restore workflows (the same ASL files and
 * step code the AWS deployment runs, executed locally), verification, snapshot
 * management, a planning dry run and a bucket-to-bucket copy.
 *
 * Settings come from flags, then REGVAULT_* environment variables, then a
 * config file (--config, YAML or JSON with the same names in camelCase); all
 * are validated by one schema before anything runs.
 *
 * Exit codes (./outcome.ts): 0 success, 1 failed, 2 bad input, 3 partial (the
 * run finished but some objects failed), 4 a restore rolled back.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { z } from 'zod';
import {
  createCopyContext,
  looksLikeRegistry,
  prefixMapper,
  runPlan,
} from '../functions/commons/copy/engine.ts';
import type { Location, Totals } from '../functions/commons/copy/model.ts';
import { planGeneric, planRegistry } from '../functions/commons/copy/plan.ts';
import { targetStateFor } from '../functions/commons/copy/target-state.ts';
import { exitCodeOf, hintOf, InputError, messageOf } from '../functions/commons/errors.ts';
import { createLocalDeps } from '../functions/commons/local/deps.ts';
import { runBackupLocally, runRestoreLocally } from '../functions/commons/local/runner.ts';
import {
  bucketSource,
  fsckRegistry,
  type RegistrySource,
  snapshotSource,
} from '../functions/commons/registry/fsck.ts';
import { SNAPSHOT_ID, SNAPSHOT_ID_EXAMPLE } from '../functions/commons/vault/format.ts';
import {
  deleteSnapshot,
  describeGrace,
  parseRetentionPolicy,
  prune,
  type SnapshotVerdict,
} from '../functions/commons/vault/retention.ts';
import { listSnapshots, readManifest, resolveSnapshot } from '../functions/commons/vault/store.ts';
import { backupInputSchema } from '../functions/commons/workflows/backup.ts';
import type { StepProgress } from '../functions/commons/workflows/deps.ts';
import { restoreInputSchema, verifyRestore } from '../functions/commons/workflows/restore.ts';
import { ExitCode, hintFields, restoreOutcome, workflowExitCode } from './outcome.ts';
import { createProgress, type ProgressTotal, stepProgressReporter } from './progress.ts';
import {
  bucketName,
  numbersOf,
  resolveSettings,
  type SettingOrigins,
  type Settings,
  settingLabel,
} from './settings.ts';
import { BACKUP_FIELDS, FlagNames, RESTORE_FIELDS } from './workflow-flags.ts';

export { ExitCode } from './outcome.ts';

/** Where the registry cluster's kubeconfig comes from, found the way kubectl finds it. */
export type KubeconfigChoice =
  | { readonly from: '--kubeconfig'; readonly paths: readonly [string] }
  | { readonly from: 'KUBECONFIG'; readonly paths: readonly string[] }
  | { readonly from: '~/.kube/config'; readonly paths: readonly [string] };

/**
 * `--kubeconfig` (or `kubeconfig` in the config file) wins; else $KUBECONFIG,
 * a list like kubectl's (`:`-separated); else ~/.kube/config when it exists.
 * Undefined when there is none: only the commands that need the cluster fail.
 */
export function findKubeconfig(
  settings: Pick<Settings, 'kubeconfig'>,
  env: NodeJS.ProcessEnv = process.env,
  home: string = homedir(),
): KubeconfigChoice | undefined {
  if (settings.kubeconfig !== undefined)
    return { from: '--kubeconfig', paths: [settings.kubeconfig] };
  const listed = (env['KUBECONFIG'] ?? '').split(delimiter).filter((path) => path !== '');
  if (listed.length > 0) return { from: 'KUBECONFIG', paths: listed };
  const fallback = join(home, '.kube', 'config');
  return existsSync(fallback) ? { from: '~/.kube/config', paths: [fallback] } : undefined;
}

/**
 * Fails with bad input (exit 2) before anything runs when a command needs the
 * cluster and no kubeconfig is found, or a file it names is missing. Unlike
 * kubectl, a missing file in a $KUBECONFIG list is an error, not skipped:
 * client-node's loadFromDefault, which merges the list, cannot skip it either.
 */
export function requireCluster(choice: KubeconfigChoice | undefined, what: string): void {
  const fix =
    'pass --kubeconfig <file> (or set KUBECONFIG, or create ~/.kube/config), and --context when its current context is not the registry cluster';
  if (choice === undefined)
    throw new InputError(`${what} needs the registry cluster, and no kubeconfig was found`, [
      `--kubeconfig: ${fix}`,
    ]);
  const where = choice.from === 'KUBECONFIG' ? 'KUBECONFIG' : '--kubeconfig';
  const missing = choice.paths.filter((path) => !existsSync(path));
  if (missing.length > 0)
    throw new InputError(
      `${what} needs the registry cluster, and the kubeconfig cannot be found`,
      missing.map((path) => `${where}: ${path} does not exist; ${fix}`),
    );
}

function vaultLocation(settings: Settings): Location {
  return {
    ...(settings.vaultEndpoint === undefined ? {} : { endpoint: settings.vaultEndpoint }),
    region: settings.vaultRegion,
    bucket: settings.vaultBucket,
    prefix: settings.vaultPrefix,
    forcePathStyle: settings.vaultEndpoint !== undefined,
    access: 'vault',
    ...(settings.vaultContentMd5 ? { contentMd5: true } : {}),
  };
}

/** Keys for S3 from the usual environment variables; undefined lets the SDK find them (profiles, roles). */
function envKeys(prefix = 'AWS'): { accessKeyId: string; secretAccessKey: string } | undefined {
  const accessKeyId = process.env[`${prefix}_ACCESS_KEY_ID`];
  const secretAccessKey = process.env[`${prefix}_SECRET_ACCESS_KEY`];
  return accessKeyId !== undefined && secretAccessKey !== undefined
    ? { accessKeyId, secretAccessKey }
    : undefined;
}

function depsFor(
  settings: Settings,
  kubeconfig = findKubeconfig(settings),
  onProgress?: (event: StepProgress) => void,
) {
  const keys = envKeys();
  // Several files in $KUBECONFIG: no path, so client-node's loadFromDefault merges that list.
  const path =
    kubeconfig === undefined || kubeconfig.paths.length > 1 ? undefined : kubeconfig.paths[0];
  return createLocalDeps({
    vault: {
      location: vaultLocation(settings),
      ...(keys === undefined ? {} : { credentials: keys }),
    },
    ...(kubeconfig === undefined
      ? {}
      : {
          kube: {
            ...(path === undefined ? {} : { path }),
            ...(settings.context === undefined ? {} : { context: settings.context }),
          },
        }),
    ...(settings.moduleInfo === undefined
      ? {}
      : { profileSettings: { moduleInfoName: settings.moduleInfo } }),
    ...(settings.registryUrl === undefined ? {} : { registryUrl: settings.registryUrl }),
    ...(onProgress === undefined ? {} : { onProgress }),
    ...(settings.registryUsername === undefined || settings.registryPassword === undefined
      ? {}
      : {
          registryCredentials: {
            kind: 'basic' as const,
            username: settings.registryUsername,
            password: settings.registryPassword,
          },
        }),
    concurrency: settings.concurrency,
  });
}

/**
 * What this run has said: the exit code it ends with, whether it prints JSON
 * lines, and whether its one result line is out (an error prints it otherwise).
 */
const run: {
  exitCode: ExitCode;
  json: boolean;
  resultWritten: boolean;
  origins: SettingOrigins;
} = {
  exitCode: ExitCode.Ok,
  json: false,
  resultWritten: false,
  origins: {},
};

/**
 * Resolves the settings and remembers --json (a config file may set it too)
 * for error output, and where each setting came from for messages.
 */
async function settingsOf(flags: Record<string, unknown>): Promise<Settings> {
  const { settings, origins } = await resolveSettings(flags);
  run.json = settings.json;
  run.origins = origins;
  return settings;
}

/** The object count a backup's plan step estimated, when `output` is that step's result. */
function planEstimateOf(state: string, output: unknown): number | undefined {
  if (state !== 'PlanShards' || typeof output !== 'object' || output === null) return undefined;
  const estimate: unknown = Reflect.get(output, 'estimatedObjects');
  return typeof estimate === 'number' ? estimate : undefined;
}

/** Output: JSON lines with --json, plain lines otherwise. */
function reporter(settings: Settings) {
  return {
    event(event: string, text: string, fields: Record<string, unknown> = {}) {
      if (settings.json) process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
      else process.stderr.write(`${text}\n`);
    },
    /** Copy progress for a phase: the bar or plain lines, or `progress` JSON lines. */
    progress(label: string, total?: ProgressTotal) {
      return createProgress({
        json: settings.json,
        label,
        ...(total === undefined ? {} : { total }),
      });
    },
    /** The one result: with --json a line with `ok` and `exitCode` (set `run.exitCode` first). */
    result(value: Record<string, unknown>, text: string) {
      run.resultWritten = true;
      if (!settings.json) {
        process.stdout.write(`${text}\n`);
        return;
      }
      process.stdout.write(
        `${JSON.stringify({ event: 'result', ok: run.exitCode === ExitCode.Ok, ...value, exitCode: run.exitCode })}\n`,
      );
      if (run.exitCode !== ExitCode.Ok) process.stderr.write(`regvault: ${text}\n`);
    },
  };
}

/** `--pull-sample`: a count of images, or `all`. */
function pullSampleOf(value: unknown): number | 'all' {
  if (value === undefined) return 3;
  if (value === 'all') return 'all';
  const parsed = z.coerce.number().int().min(0).max(1_000_000).safeParse(value);
  if (!parsed.success)
    throw new InputError('the restore settings are not valid', [
      `--pull-sample: expected a count of images (0 or more) or "all", got ${JSON.stringify(value)}`,
    ]);
  return parsed.data;
}

function parseS3Url(value: string, flag: string): { bucket: string; prefix: string } {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(value);
  if (match?.[1] === undefined)
    throw new InputError('the copy locations are not valid', [
      `${flag}: expected s3://bucket/prefix, got ${value}`,
    ]);
  const checked = bucketName.safeParse(match[1]);
  if (!checked.success)
    throw new InputError('the copy locations are not valid', [
      `${flag}: ${checked.error.issues[0]?.message ?? 'bad bucket'}`,
    ]);
  return { bucket: match[1], prefix: match[2] ?? '' };
}

type Flags = Record<string, unknown>;

/**
 * A snapshot id the user gave has the one form ids have, or is `latest`
 * unless `latest` is refused there; `subject` is the flag or argument.
 */
function checkSnapshotId(id: string, subject: string, latest = true): string {
  if (SNAPSHOT_ID.test(id) || (latest && id === 'latest')) return id;
  throw new InputError(`${id} is not a snapshot id`, [
    `${subject}: expected an id such as ${SNAPSHOT_ID_EXAMPLE}${latest ? ', or latest' : ''}; run \`regvault snapshots list\` for the ids`,
  ]);
}

function commandWithSettings(program: Command, name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .option(
      '--config <file>',
      'settings file (YAML or JSON); flags and REGVAULT_* variables override it',
    )
    .option('--vault-bucket <bucket>', 'bucket holding the vault (REGVAULT_VAULT_BUCKET)')
    .option('--vault-region <region>', 'its region (REGVAULT_VAULT_REGION)')
    .option('--vault-endpoint <url>', 'S3-compatible endpoint of the vault; omit for AWS')
    .option('--vault-prefix <prefix>', 'key prefix of the vault in the bucket')
    .option(
      '--vault-content-md5',
      'send Content-MD5 with vault uploads (a bucket with Object Lock default retention needs it)',
    )
    .option('--kubeconfig <file>', 'kubeconfig of the registry cluster (KUBECONFIG)')
    .option('--context <name>', 'kubeconfig context')
    .option('--module-info <name>', 'the registry ModuleInfo, when the label finds several')
    .option('--registry-url <url>', 'where the registry answers, for verification')
    .option('--registry-username <user>', 'registry user (basic or token auth)')
    .option('--concurrency <n>', 'copies in flight')
    .option('--json', 'JSON lines of progress and one result object');
}

export function buildProgram(): Command {
  const program = new Command()
    .name('regvault')
    .description('back up and recover a container registry whose data lives in S3')
    .exitOverride();

  commandWithSettings(
    program,
    'backup',
    'back up the registry the cluster names (or a plain bucket) into a new snapshot',
  )
    .option('--include-secret', 'also capture the storage Secret (it holds keys)')
    .option('--source-bucket <bucket>', 'back up this plain bucket instead of the registry')
    .option('--source-region <region>', 'region of --source-bucket')
    .option('--source-endpoint <url>', 'endpoint of --source-bucket')
    .option('--shard-objects <n>', 'objects per shard', '20000')
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
          concurrency: settings.concurrency,
          ...(typeof flags['sourceBucket'] === 'string'
            ? {
                source: {
                  bucket: flags['sourceBucket'],
                  region: flags['sourceRegion'] ?? settings.vaultRegion,
                  ...(typeof flags['sourceEndpoint'] === 'string'
                    ? { endpoint: flags['sourceEndpoint'] }
                    : {}),
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
            if (planned !== undefined) progress.setTotal({ objects: planned });
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

  commandWithSettings(
    program,
    'restore',
    'restore a snapshot into a bucket, switch the registry to it, verify, roll back on failure',
  )
    .option('--snapshot <id>', 'snapshot id, or latest', 'latest')
    .requiredOption('--target-bucket <bucket>', 'empty bucket to restore into (create it first)')
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
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
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
          target: {
            bucket: flags['targetBucket'],
            region: flags['targetRegion'] ?? settings.vaultRegion,
            prefix: flags['targetPrefix'],
            ...(targetEndpoint === undefined ? {} : { endpoint: targetEndpoint }),
            ...(flags['targetSecret'] === undefined ? {} : { secretName: flags['targetSecret'] }),
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
      const out = reporter(settings);
      const deps = depsFor(settings, kubeconfig, stepProgressReporter({ json: settings.json }));
      try {
        // The manifest gives the progress its total; the workflow restores the very snapshot
        // it resolved. When it cannot be resolved here, the workflow says why.
        const manifest = await resolveSnapshot(deps.vault, input.snapshot).catch(() => undefined);
        const progress = out.progress(
          'restore copy',
          manifest === undefined
            ? undefined
            : { objects: manifest.counts.objects, bytes: manifest.bytes },
        );
        const result = await runRestoreLocally(
          { ...input, snapshot: manifest?.id ?? input.snapshot },
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

  commandWithSettings(
    program,
    'verify',
    'check a registry against what a snapshot says it should serve',
  )
    .option('--snapshot <id>', 'snapshot id, or latest', 'latest')
    .option(
      '--pull-sample <n|all>',
      'images pulled in full, every blob sha256-checked (a count, or all)',
      '3',
    )
    .option('--push-test', 'also push a test image into regvault-verify/push-test')
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const pullSample = pullSampleOf(flags['pullSample']);
      const snapshot = checkSnapshotId(String(flags['snapshot']), '--snapshot');
      const pushTest = flags['pushTest'] === true;
      if (settings.registryUrl === undefined)
        throw new InputError('verify needs the registry', [
          `${settingLabel('registryUrl', run.origins.registryUrl)}: where the registry answers, e.g. https://registry.example.com`,
        ]);
      const out = reporter(settings);
      const deps = depsFor(settings, undefined, stepProgressReporter({ json: settings.json }));
      try {
        const manifest = await resolveSnapshot(deps.vault, snapshot);
        const report = await verifyRestore({ snapshotId: manifest.id, pullSample, pushTest }, deps);
        run.exitCode = report.ok ? ExitCode.Ok : ExitCode.Failed;
        // A push that fails is one of the problems, so a verification that passed pushed.
        out.result(
          { snapshotId: manifest.id, pushTest, ...report },
          report.ok
            ? `the registry serves snapshot ${manifest.id}: ${report.repositories} repositories, ${report.tags} tags, ${report.pulled} pulls checked${pushTest ? ', and it accepted a test push' : ''}`
            : `verification FAILED:\n  ${report.problems.join('\n  ')}`,
        );
      } finally {
        deps.close();
      }
    });

  const snapshots = program.command('snapshots').description('list, show and delete snapshots');
  commandWithSettings(snapshots, 'list', 'every snapshot, oldest first').action(
    async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        const all = await listSnapshots(deps.vault);
        if (settings.json) {
          for (const m of all)
            out.event('snapshot', m.id, {
              id: m.id,
              status: m.status,
              objects: m.counts.objects,
              bytes: m.bytes,
              source: m.source.bucket,
            });
          out.result({ snapshots: all.length }, `${all.length} snapshots`);
        } else {
          process.stdout.write(
            `${['ID'.padEnd(24), 'STATUS'.padEnd(9), 'OBJECTS'.padStart(9), 'BYTES'.padStart(14), '  SOURCE'].join(' ')}\n`,
          );
          for (const m of all)
            process.stdout.write(
              `${[m.id.padEnd(24), m.status.padEnd(9), String(m.counts.objects).padStart(9), String(m.bytes).padStart(14), `  s3://${m.source.bucket}`].join(' ')}\n`,
            );
        }
      } finally {
        deps.close();
      }
    },
  );
  commandWithSettings(snapshots, 'show', 'one snapshot manifest')
    .argument('<id>', 'snapshot id, or latest (the newest complete snapshot)')
    .action(async (id: string, flags: Flags) => {
      const settings = await settingsOf(flags);
      checkSnapshotId(id, '<id>');
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        const manifest =
          id === 'latest'
            ? await resolveSnapshot(deps.vault, id)
            : await readManifest(deps.vault, id);
        if (manifest === undefined)
          throw new InputError(`no snapshot ${id}`, [
            `<id>: run \`regvault snapshots list\` for the ids`,
          ]);
        out.result({ manifest }, JSON.stringify(manifest, null, 2));
      } finally {
        deps.close();
      }
    });
  commandWithSettings(
    snapshots,
    'delete',
    "delete a snapshot's manifest, inventory and objects (pool blobs stay until a prune)",
  )
    .argument('<id>', 'snapshot id')
    .action(async (id: string, flags: Flags) => {
      const settings = await settingsOf(flags);
      checkSnapshotId(id, '<id>', false);
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        const manifest = await readManifest(deps.vault, id);
        if (manifest === undefined)
          throw new InputError(`no snapshot ${id}`, [
            `<id>: run \`regvault snapshots list\` for the ids`,
          ]);
        // Its own objects/ stay for the next prune's sweep: later snapshots may point into them.
        const deleted = await deleteSnapshot(deps.vault, manifest);
        out.result(
          { deleted: id, report: deleted },
          `deleted snapshot ${id}; objects no other snapshot uses go at the next \`regvault snapshots prune\``,
        );
      } finally {
        deps.close();
      }
    });

  commandWithSettings(
    snapshots,
    'prune',
    'delete expired snapshots, then the vault objects no remaining snapshot uses',
  )
    .option('--keep-last <n>', 'keep the newest N snapshots of each source')
    .option('--ttl-days <days>', 'expire snapshots older than this')
    .option(
      '--grace-minutes <m>',
      'grace period: keep snapshots superseded less than this ago, and unreferenced objects written less than this before now (or before a running backup started)',
      '60',
    )
    .option('--dry-run', 'say what would be deleted, delete nothing')
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const numbers = numbersOf(flags, ['keepLast', 'ttlDays', 'graceMinutes']);
      const policy = parseRetentionPolicy({
        ...(numbers.keepLast === undefined ? {} : { keepLast: numbers.keepLast }),
        ...(numbers.ttlDays === undefined ? {} : { ttlDays: numbers.ttlDays }),
      });
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        const report = await prune(deps.vault, policy, {
          now: deps.now(),
          graceMs: (numbers.graceMinutes ?? 60) * 60_000,
          dryRun: flags['dryRun'] === true,
          log: deps.log,
        });
        run.exitCode =
          report.failedDeletes.length > 0 || report.sweepSkipped !== undefined
            ? ExitCode.Partial
            : ExitCode.Ok;
        const kept = report.plan.keep.map(({ id, status, rule, reason, until }) => ({
          id,
          status,
          rule,
          reason,
          ...(until === undefined ? {} : { until }),
        }));
        const grace = describeGrace(report, '--grace-minutes');
        const verdicts = [...report.plan.expire, ...report.plan.keep];
        const width = Math.max(0, ...verdicts.map((v) => v.rule.length));
        const line = (v: SnapshotVerdict) => `  ${v.id}  ${v.rule.padEnd(width)}  ${v.reason}`;
        const count = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
        out.result(
          { ...report, kept, ...(grace === undefined ? {} : { grace }) },
          [
            `${report.dryRun ? 'would delete' : 'deleted'} ${count(report.deletedSnapshots.length, 'snapshot')} and ${count(report.deleted.keys, 'object')} (${report.deleted.bytes} bytes)${report.plan.expire.length === 0 ? '' : ':'}`,
            ...report.plan.expire.map(line),
            `kept ${count(kept.length, 'snapshot')}${kept.length === 0 ? '' : ':'}`,
            ...report.plan.keep.map(line),
            ...(grace === undefined ? [] : [grace]),
            ...(report.sweepSkipped === undefined ? [] : [`sweep skipped: ${report.sweepSkipped}`]),
          ].join('\n'),
        );
      } finally {
        deps.close();
      }
    });

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
          const endpointFlag =
            (flags['bucketEndpoint'] as string | undefined) ?? settings.vaultEndpoint;
          const location: Location = {
            ...(endpointFlag === undefined ? {} : { endpoint: endpointFlag }),
            region: (flags['bucketRegion'] as string | undefined) ?? settings.vaultRegion,
            bucket: flags['bucket'],
            prefix: '',
            forcePathStyle: endpointFlag !== undefined,
            access: 'vault',
          };
          source = bucketSource(
            await deps.s3(location),
            location.bucket,
            String(flags['rootDirectory']),
          );
          what = `s3://${location.bucket}`;
        } else {
          const manifest = await resolveSnapshot(
            deps.vault,
            checkSnapshotId(String(flags['snapshot']), '--snapshot'),
          );
          source = snapshotSource(deps.vault, manifest);
          what = `snapshot ${manifest.id}`;
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

  commandWithSettings(
    program,
    'plan',
    'dry run: how a bucket would be split into shards, with counts and an estimate',
  )
    .requiredOption('--source-bucket <bucket>', 'the bucket to plan')
    .option('--source-region <region>', 'its region (defaults to the vault region)')
    .option('--source-endpoint <url>', 'its endpoint (defaults to the vault endpoint)')
    .option('--shard-objects <n>', 'objects per shard', '20000')
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const numbers = numbersOf(flags, ['shardObjects']);
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        const endpointFlag =
          (flags['sourceEndpoint'] as string | undefined) ?? settings.vaultEndpoint;
        const source: Location = {
          ...(endpointFlag === undefined ? {} : { endpoint: endpointFlag }),
          region: (flags['sourceRegion'] as string | undefined) ?? settings.vaultRegion,
          bucket: String(flags['sourceBucket']),
          prefix: '',
          forcePathStyle: endpointFlag !== undefined,
          access: 'vault',
        };
        const client = await deps.s3(source);
        const registry = await looksLikeRegistry(client, source);
        const options = { targetObjectsPerShard: numbers.shardObjects ?? 20_000 };
        const plan = registry
          ? await planRegistry(client, source.bucket, '', options)
          : await planGeneric(client, source.bucket, '', options);
        // ~700 server-side copies/s per worker process measured on the sandbox; AWS S3 is faster per connection.
        const estimateSeconds = Math.ceil(plan.estimatedObjects / 700);
        out.result(
          {
            layout: registry ? 'registry' : 'generic',
            linkShards: plan.linkShards.length,
            dataShards: plan.dataShards.length,
            estimatedObjects: plan.estimatedObjects,
            planRequests: plan.requests,
            estimateSeconds,
          },
          `${registry ? 'registry' : 'plain bucket'}: ${plan.linkShards.length} link shards, ${plan.dataShards.length} data shards, about ${plan.estimatedObjects} objects; ${plan.requests} LIST requests to plan; about ${estimateSeconds} s on one machine`,
        );
      } finally {
        deps.close();
      }
    });

  commandWithSettings(
    program,
    'copy',
    'copy a bucket (or prefix) to another, skipping what is already there',
  )
    .requiredOption('--from <s3url>', 'source, s3://bucket/prefix')
    .requiredOption('--to <s3url>', 'target, s3://bucket/prefix')
    .option('--from-endpoint <url>', 'source endpoint (defaults to the vault endpoint)')
    .option('--to-endpoint <url>', 'target endpoint (defaults to the vault endpoint)')
    .option('--from-region <region>', 'source region (defaults to the vault region)')
    .option('--to-region <region>', 'target region (defaults to the vault region)')
    .action(async (flags: Flags) => {
      const settings = await settingsOf(flags);
      const out = reporter(settings);
      const from = parseS3Url(String(flags['from']), '--from');
      const to = parseS3Url(String(flags['to']), '--to');
      const deps = depsFor(settings);
      try {
        const fromEndpoint =
          (flags['fromEndpoint'] as string | undefined) ?? settings.vaultEndpoint;
        const toEndpoint = (flags['toEndpoint'] as string | undefined) ?? settings.vaultEndpoint;
        const source: Location = {
          ...(fromEndpoint === undefined ? {} : { endpoint: fromEndpoint }),
          region: (flags['fromRegion'] as string | undefined) ?? settings.vaultRegion,
          ...from,
          forcePathStyle: fromEndpoint !== undefined,
          access: 'vault',
        };
        const target: Location = {
          ...(toEndpoint === undefined ? {} : { endpoint: toEndpoint }),
          region: (flags['toRegion'] as string | undefined) ?? settings.vaultRegion,
          ...to,
          forcePathStyle: toEndpoint !== undefined,
          access: 'vault',
        };
        const [sourceClient, targetClient] = await Promise.all([deps.s3(source), deps.s3(target)]);
        const [registry, targetState] = await Promise.all([
          looksLikeRegistry(sourceClient, source),
          targetStateFor(targetClient, target.bucket, target.prefix),
        ]);
        const ctx = createCopyContext({
          source: { location: source, client: sourceClient },
          target: { location: target, client: targetClient },
          mapKey: prefixMapper(source, target),
          targetState,
          concurrency: settings.concurrency,
        });
        const planOptions = { targetObjectsPerShard: 2_000, fast: ctx.source.fast };
        const plan =
          registry && source.prefix === ''
            ? await planRegistry(sourceClient, source.bucket, '', planOptions)
            : await planGeneric(sourceClient, source.bucket, source.prefix, planOptions);
        const progress = out.progress('copy', { objects: plan.estimatedObjects });
        const outcome = await runPlan(ctx, plan, {
          onProgress: (totals: Totals) => progress.update(totals),
        });
        progress.stop(outcome.totals);
        run.exitCode = outcome.ok
          ? ExitCode.Ok
          : outcome.totals.copied + outcome.totals.skipped > 0
            ? ExitCode.Partial
            : ExitCode.Failed;
        out.result(
          { ok: outcome.ok, ...outcome.totals, failures: outcome.failures.slice(0, 20) },
          outcome.ok
            ? `copied ${outcome.totals.copied}, unchanged ${outcome.totals.skipped}, ${outcome.totals.bytesCopied} bytes`
            : `copy finished with ${outcome.totals.failed} failed objects, e.g. ${outcome.failures
                .slice(0, 3)
                .map((f) => `${f.key} (${f.code})`)
                .join(', ')}`,
        );
      } finally {
        deps.close();
      }
    });
  return program;
}

/** Whether the command line asks for --json (before a `--`), for errors raised before the settings resolve. */
function asksForJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end === -1 ? argv : argv.slice(0, end)).includes('--json');
}

/**
 * Runs the CLI and returns the exit code. Errors are printed to stderr, never
 * thrown; with --json the last stdout line is still the result object.
 */
export async function runCli(argv: readonly string[]): Promise<number> {
  run.exitCode = ExitCode.Ok;
  run.json = asksForJson(argv);
  run.resultWritten = false;
  const program = buildProgram();
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return run.exitCode;
  } catch (err) {
    // Commander has printed its own message (and --help its text, which is not an error).
    if (err instanceof CommanderError && err.exitCode === 0) return ExitCode.Ok;
    // Judged by the error's name: every error regvault names carries its exit code.
    const name = err instanceof Error ? err.name : undefined;
    const code = err instanceof CommanderError ? ExitCode.BadInput : exitCodeOf(name);
    const hint = hintOf(name);
    if (!(err instanceof CommanderError)) process.stderr.write(`regvault: ${messageOf(err)}\n`);
    if (run.json && !run.resultWritten)
      process.stdout.write(
        `${JSON.stringify({
          event: 'result',
          ok: false,
          error: err instanceof InputError ? err.message.split('\n')[0] : messageOf(err),
          ...(err instanceof InputError ? { issues: err.issues } : {}),
          ...(hint === undefined ? {} : { hint }),
          exitCode: code,
        })}\n`,
      );
    return code;
  }
}

if (
  import.meta.url === `file://${process.argv[1]}` ||
  process.argv[1]?.endsWith('regvault.ts') === true
) {
  runCli(process.argv.slice(2)).then((code) => process.exit(code));
}
