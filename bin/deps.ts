/**
 * What the commands run against: the registry cluster's kubeconfig, found the
 * way kubectl finds it, S3 locations reached with the vault's keys, and the
 * local workflow dependencies built from the settings.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { z } from 'zod';
import type { Location } from '../functions/commons/copy/model.ts';
import { InputError, messageOf } from '../functions/commons/errors.ts';
import { createLocalDeps } from '../functions/commons/local/deps.ts';
import { RegistryApiError } from '../functions/commons/registry/client-http.ts';
import { pathStyleFor } from '../functions/commons/s3/addressing.ts';
import type { S3Role } from '../functions/commons/s3/client.ts';
import {
  Access,
  type StepProgress,
  type WorkflowDeps,
} from '../functions/commons/workflows/deps.ts';
import { run } from './context.ts';
import { bucketName, endpointUrl, type Settings, settingLabel } from './settings.ts';
import { cliHalf } from './workflow-flags.ts';

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
    forcePathStyle: pathStyleFor(settings.vaultEndpoint, settings.vaultPathStyle),
    access: 'vault',
    ...(settings.vaultContentMd5 ? { contentMd5: true } : {}),
  };
}

/**
 * The flags that name an S3 location a command takes: `--from` names
 * `--from-endpoint` and `--from-region`, `--source` the `--source-bucket`
 * and its `--source-endpoint` and `--source-region`.
 */
export interface LocationFlags {
  readonly bucket: string;
  readonly endpoint: string;
  readonly region: string;
}

const locationSchema = z.object({
  bucket: bucketName,
  endpoint: endpointUrl.optional(),
  region: z.string().min(1, 'a region, e.g. us-east-1'),
});

/** A plain bucket's side in a command: its own keys come from REGVAULT_SOURCE_* / REGVAULT_TARGET_*. */
export type Side = 'source' | 'target';

/**
 * The source's and the target's own keys, from REGVAULT_SOURCE_ACCESS_KEY_ID
 * and REGVAULT_SOURCE_SECRET_ACCESS_KEY (REGVAULT_TARGET_... likewise):
 * variables only, never flags, which shell history and process listings keep.
 * One of a pair without the other is bad input naming the missing one.
 */
export function ownKeysOf(
  env: NodeJS.ProcessEnv = process.env,
): Partial<Record<Side, { accessKeyId: string; secretAccessKey: string }>> {
  const keys: Partial<Record<Side, { accessKeyId: string; secretAccessKey: string }>> = {};
  const issues: string[] = [];
  for (const side of ['source', 'target'] as const) {
    const prefix = `REGVAULT_${side.toUpperCase()}`;
    const id = `${prefix}_ACCESS_KEY_ID`;
    const secret = `${prefix}_SECRET_ACCESS_KEY`;
    const accessKeyId = env[id] === '' ? undefined : env[id];
    const secretAccessKey = env[secret] === '' ? undefined : env[secret];
    if (accessKeyId !== undefined && secretAccessKey !== undefined)
      keys[side] = { accessKeyId, secretAccessKey };
    else if (accessKeyId !== undefined || secretAccessKey !== undefined)
      issues.push(
        `${accessKeyId === undefined ? id : secret}: set it too, since ${accessKeyId === undefined ? secret : id} is set (the ${side}'s own keys come as a pair), or unset both to use the vault's keys`,
      );
  }
  if (issues.length > 0) throw new InputError('the keys are not complete', issues);
  return keys;
}

/** How failures name a side's own keys, and how to fix them. */
function ownRole(side: Side): S3Role {
  const prefix = `REGVAULT_${side.toUpperCase()}`;
  return {
    keys: `the ${side}'s keys (${prefix}_ACCESS_KEY_ID and ${prefix}_SECRET_ACCESS_KEY)`,
    fixKeys: `set ${prefix}_ACCESS_KEY_ID and ${prefix}_SECRET_ACCESS_KEY to keys this S3 accepts for the ${side} bucket`,
  };
}

/**
 * An S3 location the commands reach with the vault's keys, or with the
 * side's own keys when they are set; its endpoint and region default to the
 * vault's. Bad values are bad input, each naming its flag.
 */
export function s3Location(
  settings: Settings,
  where: { bucket: string; prefix: string; endpoint?: unknown; region?: unknown },
  flags: LocationFlags,
  side?: Side,
): Location {
  const endpoint = typeof where.endpoint === 'string' ? where.endpoint : settings.vaultEndpoint;
  const region = typeof where.region === 'string' ? where.region : settings.vaultRegion;
  const parsed = locationSchema.safeParse({ bucket: where.bucket, endpoint, region });
  if (!parsed.success)
    throw new InputError(
      'the S3 location is not valid',
      parsed.error.issues.map((issue) => {
        const key = String(issue.path[0]) as keyof LocationFlags;
        return `${flags[key]}: ${issue.message}`;
      }),
    );
  return {
    ...(endpoint === undefined ? {} : { endpoint }),
    region,
    bucket: where.bucket,
    prefix: where.prefix,
    // A bucket beside the vault is addressed as the vault; one elsewhere as the registry's.
    forcePathStyle: pathStyleFor(
      endpoint,
      endpoint === settings.vaultEndpoint ? settings.vaultPathStyle : settings.storagePathStyle,
    ),
    access: side !== undefined && ownKeysOf()[side] !== undefined ? side : Access.Vault,
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

/**
 * The vault in the user's terms, for S3 failures: the settings that name it
 * (with where each came from) and where its keys come from.
 */
function vaultRole(keys: boolean): S3Role {
  const label = (key: 'vaultBucket' | 'vaultEndpoint' | 'vaultRegion') =>
    settingLabel(key, run.origins[key]);
  return {
    what: 'the vault',
    settings: {
      bucket: label('vaultBucket'),
      endpoint: label('vaultEndpoint'),
      region: label('vaultRegion'),
    },
    keys: keys
      ? "the vault's keys (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
      : "the vault's keys (the AWS SDK's chain: AWS_PROFILE, ~/.aws, an instance role)",
    fixKeys:
      'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to keys this S3 accepts',
  };
}

/** The local workflow dependencies a command runs with. */
export function depsFor(
  settings: Settings,
  kubeconfig = findKubeconfig(settings),
  onProgress?: (event: StepProgress) => void,
) {
  const keys = envKeys();
  const own = ownKeysOf();
  if (settings.moduleInfo !== undefined && settings.profile !== 'acp')
    throw new InputError(`the ${settings.profile} profile has no ModuleInfo to name`, [
      `${settingLabel('moduleInfo', run.origins.moduleInfo)}: names an ACP ModuleInfo; leave it out, or give --profile acp`,
    ]);
  // Several files in $KUBECONFIG: no path, so client-node's loadFromDefault merges that list.
  const path =
    kubeconfig === undefined || kubeconfig.paths.length > 1 ? undefined : kubeconfig.paths[0];
  return createLocalDeps({
    vault: {
      location: vaultLocation(settings),
      ...(keys === undefined ? {} : { credentials: keys }),
      role: vaultRole(keys !== undefined),
    },
    ownKeys: Object.fromEntries(
      Object.entries(own).map(([side, credentials]) => [
        side,
        { credentials, role: ownRole(side as Side) },
      ]),
    ),
    ...(kubeconfig === undefined
      ? {}
      : {
          kube: {
            ...(path === undefined ? {} : { path }),
            ...(settings.context === undefined ? {} : { context: settings.context }),
          },
        }),
    storagePathStyle: settings.storagePathStyle,
    profileName: settings.profile,
    profileSettings: {
      ...settings.profileSettings,
      ...(settings.moduleInfo === undefined ? {} : { moduleInfoName: settings.moduleInfo }),
    },
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
 * Before anything runs, the registry answers `GET /v2/` with the login the
 * settings give: a refused login is bad input naming the settings to fix, a
 * registry that does not answer a failure saying where it was looked for.
 */
export async function registryAnswers(deps: Pick<WorkflowDeps, 'registry'>): Promise<void> {
  const registry = deps.registry();
  if (registry === undefined) return;
  try {
    await registry.checkAccess();
  } catch (err) {
    if (!(err instanceof RegistryApiError)) throw err;
    const text = cliHalf(messageOf(err));
    if (err.status === 401 || err.status === 403)
      throw new InputError(`the registry at ${registry.baseUrl} refused regvault's login`, [
        `${settingLabel('registryUsername', run.origins.registryUsername)}: ${text}`,
      ]);
    throw new RegistryApiError(text, err.status, { cause: err });
  }
}
