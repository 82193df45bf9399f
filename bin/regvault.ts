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
 * Exit codes: 0 success, 1 failed, 2 bad input, 3 partial (the run finished
 * but some objects failed).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Command, CommanderError } from 'commander';
import { parse as parseYaml } from 'yaml';
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
import { InputError, messageOf } from '../functions/commons/errors.ts';
import { createLocalDeps } from '../functions/commons/local/deps.ts';
import {
  type LocalRunResult,
  runBackupLocally,
  runRestoreLocally,
} from '../functions/commons/local/runner.ts';
import {
  bucketSource,
  fsckRegistry,
  type RegistrySource,
  snapshotSource,
} from '../functions/commons/registry/fsck.ts';
import {
  deleteSnapshot,
  parseRetentionPolicy,
  prune,
} from '../functions/commons/vault/retention.ts';
import { listSnapshots, readManifest, resolveSnapshot } from '../functions/commons/vault/store.ts';
import { verifyRestore } from '../functions/commons/workflows/restore.ts';
import { createProgress, type ProgressTotal } from './progress.ts';

export const ExitCode = { Ok: 0, Failed: 1, BadInput: 2, Partial: 3 } as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

const bucketName = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
    'a bucket name: 3-63 lowercase letters, digits, dots and hyphens',
  );
const endpoint = z.url({
  protocol: /^https?$/,
  message: 'an http(s) URL such as https://s3.example.com',
});

/** Every setting the commands read, after flags, environment and config file are merged. */
export const settingsSchema = z
  .object({
    vaultBucket: bucketName,
    vaultRegion: z.string().min(1, 'the vault bucket region, e.g. us-east-1'),
    vaultEndpoint: endpoint.optional(),
    vaultPrefix: z.string().default(''),
    /** Uploads to the vault carry Content-MD5 (a bucket with Object Lock default retention needs it). */
    vaultContentMd5: z
      .union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')])
      .default(false),
    kubeconfig: z.string().optional(),
    context: z.string().optional(),
    moduleInfo: z.string().optional(),
    registryUrl: z.url().optional(),
    registryUsername: z.string().optional(),
    registryPassword: z.string().optional(),
    concurrency: z.coerce.number().int().min(1).max(512).default(64),
    json: z.boolean().default(false),
  })
  .strict();
export type Settings = z.infer<typeof settingsSchema>;

const ENV: Record<string, keyof Settings> = {
  REGVAULT_VAULT_BUCKET: 'vaultBucket',
  REGVAULT_VAULT_REGION: 'vaultRegion',
  REGVAULT_VAULT_ENDPOINT: 'vaultEndpoint',
  REGVAULT_VAULT_PREFIX: 'vaultPrefix',
  REGVAULT_VAULT_CONTENT_MD5: 'vaultContentMd5',
  REGVAULT_REGISTRY_URL: 'registryUrl',
  REGVAULT_REGISTRY_USERNAME: 'registryUsername',
  REGVAULT_REGISTRY_PASSWORD: 'registryPassword',
};

const SETTING_FLAGS = new Set<string>(Object.keys(settingsSchema.shape));

function flagName(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** The command-level numeric flags and what each accepts. */
const numericFlags = {
  shardObjects: z.coerce.number().int().min(1_000).max(1_000_000),
  rolloutTimeout: z.coerce.number().int().min(1).max(86_400),
  sample: z.coerce.number().int().min(1),
  keepLast: z.coerce.number().int().min(1),
  ttlDays: z.coerce.number().positive(),
  graceMinutes: z.coerce.number().min(0),
} as const;
type NumericFlag = keyof typeof numericFlags;

/**
 * Parses a command's own numeric flags with one schema, before anything runs;
 * each bad value names its flag. Flags left unset stay undefined.
 */
export function numbersOf<K extends NumericFlag>(
  flags: Record<string, unknown>,
  names: readonly K[],
): { [N in K]?: number } {
  const out: { [N in K]?: number } = {};
  const issues: string[] = [];
  for (const name of names) {
    if (flags[name] === undefined) continue;
    const parsed = numericFlags[name].safeParse(flags[name]);
    if (parsed.success) out[name] = parsed.data;
    else
      issues.push(
        `${flagName(name)}: ${String(flags[name])} is not accepted (${parsed.error.issues.map((i) => i.message).join('; ')})`,
      );
  }
  if (issues.length > 0) throw new InputError('the flags are not valid', issues);
  return out;
}

/** Merges the config file, the environment and the flags (in rising priority) and validates them. */
export async function resolveSettings(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv = process.env,
): Promise<Settings> {
  let fromFile: Record<string, unknown> = {};
  const configPath = typeof flags['config'] === 'string' ? flags['config'] : env['REGVAULT_CONFIG'];
  if (configPath !== undefined) {
    let text: string;
    try {
      text = await readFile(configPath, 'utf8');
    } catch (err) {
      throw new InputError('the config file cannot be read', [
        `--config: ${configPath}: ${messageOf(err)}`,
      ]);
    }
    const parsed: unknown = parseYaml(text);
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new InputError('the config file is not valid', [
        `--config: ${configPath} must hold a mapping of settings such as vaultBucket: my-vault`,
      ]);
    }
    fromFile = parsed as Record<string, unknown>;
  }
  const fromEnv: Record<string, unknown> = {};
  for (const [name, key] of Object.entries(ENV))
    if (env[name] !== undefined && env[name] !== '') fromEnv[key] = env[name];
  const fromFlags = Object.fromEntries(
    Object.entries(flags).filter(([key, value]) => SETTING_FLAGS.has(key) && value !== undefined),
  );
  const parsed = settingsSchema.safeParse({ ...fromFile, ...fromEnv, ...fromFlags });
  if (!parsed.success) {
    throw new InputError(
      'the settings are not valid',
      parsed.error.issues.flatMap((issue) => {
        if (issue.code === 'unrecognized_keys') {
          return issue.keys.map(
            (key) => `${key} in the config file (unknown setting): remove it or fix its spelling`,
          );
        }
        const key = String(issue.path[0] ?? '');
        const where = SETTING_FLAGS.has(key)
          ? `${flagName(key)} (or ${key} in the config file)`
          : `${key} in the config file (unknown setting)`;
        return `${where}: ${issue.message}`;
      }),
    );
  }
  return Object.freeze(parsed.data);
}

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

function depsFor(settings: Settings, kubeconfig = findKubeconfig(settings)) {
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
const run: { exitCode: ExitCode; json: boolean; resultWritten: boolean } = {
  exitCode: ExitCode.Ok,
  json: false,
  resultWritten: false,
};

/** Resolves the settings and remembers --json (a config file may set it too) for error output. */
async function settingsOf(flags: Record<string, unknown>): Promise<Settings> {
  const settings = await resolveSettings(flags);
  run.json = settings.json;
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

/**
 * A workflow run's exit code: bad input when a step refused its input, partial
 * when the run got through the copy with some objects failed (a backup's
 * snapshot marked failed, a restore's target missing them), failed otherwise.
 */
function workflowExitCode(result: LocalRunResult): ExitCode {
  if (result.status === 'SUCCEEDED') return ExitCode.Ok;
  const cause = result.cause ?? '';
  if (/InputError/.test(cause)) return ExitCode.BadInput;
  if (
    result.totals.failed > 0 ||
    /failed objects|objects failed|missing \d+ of \d+ snapshot objects/.test(cause)
  )
    return ExitCode.Partial;
  return ExitCode.Failed;
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
      const out = reporter(settings);
      const deps = depsFor(settings, kubeconfig);
      try {
        const input = {
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
        };
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
        run.exitCode = workflowExitCode(result);
        out.result(
          {
            status: result.status,
            ...(summary === undefined ? {} : { snapshot: summary }),
            ...(result.cause === undefined ? {} : { error: result.cause }),
            totals: result.totals,
          },
          result.status === 'SUCCEEDED'
            ? (summary?.message ?? 'backup succeeded')
            : `backup FAILED: ${result.cause}`,
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
      const out = reporter(settings);
      const deps = depsFor(settings, kubeconfig);
      try {
        const endpointFlag = flags['targetEndpoint'] ?? settings.vaultEndpoint;
        // The manifest gives the progress its total; the workflow restores the very snapshot
        // it resolved. When it cannot be resolved here, the workflow says why.
        const manifest = await resolveSnapshot(deps.vault, String(flags['snapshot'])).catch(
          () => undefined,
        );
        const input = {
          snapshot: manifest?.id ?? flags['snapshot'],
          target: {
            bucket: flags['targetBucket'],
            region: flags['targetRegion'] ?? settings.vaultRegion,
            prefix: flags['targetPrefix'],
            ...(endpointFlag === undefined ? {} : { endpoint: endpointFlag }),
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
        };
        const progress = out.progress(
          'restore copy',
          manifest === undefined
            ? undefined
            : { objects: manifest.counts.objects, bytes: manifest.bytes },
        );
        const result = await runRestoreLocally(input, {
          deps,
          waitMs: 2_000,
          onState: (state) => out.event('state', `restore: ${state}`, { state }),
          onCopyProgress: (totals) => progress.update(totals),
        });
        progress.stop(result.totals);
        run.exitCode = workflowExitCode(result);
        out.result(
          {
            status: result.status,
            ...(result.output === undefined ? {} : { restore: result.output }),
            ...(result.cause === undefined ? {} : { error: result.cause }),
            totals: result.totals,
          },
          result.status === 'SUCCEEDED'
            ? `restore succeeded: ${JSON.stringify(result.output)}`
            : `restore FAILED: ${result.cause}`,
        );
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
      if (settings.registryUrl === undefined)
        throw new InputError('verify needs the registry', [
          '--registry-url: where the registry answers, e.g. https://registry.example.com',
        ]);
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        const manifest = await resolveSnapshot(deps.vault, String(flags['snapshot']));
        const report = await verifyRestore(
          { snapshotId: manifest.id, pullSample, pushTest: flags['pushTest'] === true },
          deps,
        );
        run.exitCode = report.ok ? ExitCode.Ok : ExitCode.Failed;
        out.result(
          { snapshotId: manifest.id, ...report },
          report.ok
            ? `the registry serves snapshot ${manifest.id}: ${report.repositories} repositories, ${report.tags} tags, ${report.pulled} pulls checked`
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
    .argument('<id>', 'snapshot id')
    .action(async (id: string, flags: Flags) => {
      const settings = await settingsOf(flags);
      const out = reporter(settings);
      const deps = depsFor(settings);
      try {
        const manifest = await readManifest(deps.vault, id);
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
      'never delete objects newer than a running backup start minus this',
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
        out.result(
          { ...report },
          `${flags['dryRun'] === true ? 'would delete' : 'deleted'} ${report.deletedSnapshots.length} snapshots and ${report.deleted.keys} objects (${report.deleted.bytes} bytes); kept ${report.keptForGrace.keys} newer than a running backup${report.sweepSkipped === undefined ? '' : `; sweep skipped: ${report.sweepSkipped}`}`,
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
          const manifest = await resolveSnapshot(deps.vault, String(flags['snapshot']));
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
    const code =
      err instanceof CommanderError || err instanceof InputError
        ? ExitCode.BadInput
        : ExitCode.Failed;
    if (!(err instanceof CommanderError)) process.stderr.write(`regvault: ${messageOf(err)}\n`);
    if (run.json && !run.resultWritten)
      process.stdout.write(
        `${JSON.stringify({
          event: 'result',
          ok: false,
          error: err instanceof InputError ? err.message.split('\n')[0] : messageOf(err),
          ...(err instanceof InputError ? { issues: err.issues } : {}),
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
