/**
 * What the workflow steps need from the world, passed in so the Lambda
 * handlers, the local runner, the CLI and the tests call the same code with
 * their own clients, clock and logger.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { AwsCredentialIdentityProvider } from '@smithy/types';
import type { EksIdentity } from '../cluster/eks-token.ts';
import type { ResourceApi } from '../cluster/resources-api.ts';
import type { Location } from '../copy/model.ts';
import { InputError, parseInput } from '../errors.ts';
import { type StepLogger, silentLogger } from '../log.ts';
import { RegistryClient } from '../registry/client.ts';
import type { RegistryCredentials } from '../registry/client-http.ts';
import type { RegistryProfile, StorageKeys } from '../registry/profile.ts';
import { DEFAULT_PROFILE, PROFILES, type ProfileName } from '../registry/profiles.ts';
import { pathStyleFor } from '../s3/addressing.ts';
import { createS3Client, type S3Role } from '../s3/client.ts';
import { type LeaseSettings, LOCAL_LEASE_TTL_MS, localLeaseHolder } from '../vault/run-lease.ts';
import type { Vault } from '../vault/store.ts';

export { type StepLogger, silentLogger } from '../log.ts';

export interface WorkflowDeps {
  readonly vault: Vault;
  /** An S3 client for a location, its credentials resolved from `location.access`. */
  s3(location: Location): Promise<S3Client>;
  /**
   * True when one client can read `source` and write `target` (same endpoint,
   * same keys), so objects are copied server-side.
   */
  sameAccess(source: Location, target: Location): Promise<boolean>;
  /**
   * Who reaches a bucket the cluster names with a Secret (a registry's
   * storage, a restore target): the vault's own identity when it may `use`
   * that bucket on the vault's endpoint, so objects copy server-side between
   * it and the vault; the registry role, assumed, for such a bucket read
   * through one (`DepsConfig.registryRole`: another account's, streamed);
   * else the keys in the Secret.
   */
  storageAccess(storage: StorageOnCluster, use: 'read' | 'write'): StorageAccess;
  /**
   * Whether a bucket at `endpoint` is addressed path style (s3/addressing.ts):
   * on the vault's endpoint as the vault is, elsewhere virtual-hosted unless
   * `storagePathStyle` asks for path style or the endpoint is an IP address.
   */
  pathStyle(endpoint: string | undefined): boolean;
  /** The registry-side profile (cluster access). */
  profile(): RegistryProfile;
  /** Any resource type of the cluster (backup: capture; restore: the target cluster). */
  resources(): Promise<ResourceApi>;
  /** A registry API client for verification, or undefined when no registry URL is configured. */
  registry(): RegistryClient | undefined;
  now(): Date;
  readonly log: StepLogger;
  readonly toolVersion: string;
  /** Who takes a backup's run lease and how long it lives unrenewed (vault/run-lease.ts). */
  readonly lease: LeaseSettings;
  /** Where a long step reports how far it is (the CLI's progress); absent in Lambda. */
  readonly progress?: (event: StepProgress) => void;
}

/** How far a long step is, in the registry's units where it has them. */
export interface StepProgress {
  /** `prove`: blobs hashed before the switch; `verify`: the registry checked after it. */
  readonly step: 'prove' | 'verify';
  readonly repositories?: { readonly done: number; readonly total: number };
  readonly tags?: { readonly done: number; readonly total: number };
  readonly blobs?: { readonly done: number; readonly total: number };
  readonly bytes?: { readonly done: number; readonly total: number };
}

/** A bucket as the cluster names it: where it is and the Secret with its keys. */
export interface StorageOnCluster {
  readonly bucket: string;
  /** undefined or '': AWS S3. */
  readonly endpoint: string | undefined;
  readonly secretName: string;
}

/** The parts of a Location that say how a bucket is reached. */
export interface StorageAccess {
  readonly endpoint?: string;
  readonly forcePathStyle: boolean;
  readonly access: string;
}

/**
 * An endpoint as one identity sees it: AWS S3's own endpoints (none given,
 * `https://s3.amazonaws.com`, `https://s3.<region>.amazonaws.com`, dualstack)
 * are all "aws"; any other is its URL without a trailing slash.
 */
function endpointIdentity(endpoint: string | undefined): string {
  if (endpoint === undefined || endpoint === '') return 'aws';
  const url = endpoint.replace(/\/+$/, '').toLowerCase();
  return /^https:\/\/s3([.-]dualstack)?([.-][a-z0-9-]+)?\.amazonaws\.com(\.cn)?$/.test(url)
    ? 'aws'
    : url;
}

/** Access references: who reads and writes a location, resolved at the edge and never serialised as keys. */
export const Access = {
  /** The vault's own credentials (the Lambda role in AWS; the configured vault keys locally). */
  Vault: 'vault',
  /** The source's own keys (a plain bucket's, `regvault copy --from`), when it has other keys than the vault. */
  Source: 'source',
  /** The target's own keys (`regvault copy --to`). */
  Target: 'target',
  /** Keys from the registry's storage Secret, read through the cluster. */
  registrySecret: (secretName: string) => `registry-secret:${secretName}`,
  /**
   * Short-lived credentials of a role the vault's identity assumes
   * (`DepsConfig.registryRole`): registry buckets in another account, read
   * only. Another identity than the vault's, so copies from it stream.
   */
  RegistryRole: 'registry-role',
  /** A local directory (a `file://` endpoint): this process's own file access, no keys. */
  Directory: 'directory',
} as const;

/** The Secret name of a `registry-secret:` reference, if it is one. */
export function registrySecretOf(access: string): string | undefined {
  return access.startsWith('registry-secret:')
    ? access.slice('registry-secret:'.length)
    : undefined;
}

/**
 * What differs between a Lambda and a run on one machine: where the vault's
 * credentials and the kubeconfig come from, and how a missing cluster is fixed.
 * Everything else (key lookup, same-access detection, client reuse) is one code.
 */
export interface DepsConfig {
  /**
   * The vault; no credentials means the SDK's own chain (the Lambda role, a
   * profile). `role` names its settings and keys in failures; by default they
   * are the deployment's.
   */
  readonly vault: {
    readonly location: Location;
    readonly credentials?: StorageKeys;
    readonly role?: S3Role;
  };
  /**
   * Keys of their own for a plain source or target bucket (Access.Source,
   * Access.Target), with how failures name them; without them such a
   * location cannot be reached.
   */
  readonly ownKeys?: Partial<
    Record<'source' | 'target', { readonly credentials: StorageKeys; readonly role: S3Role }>
  >;
  /**
   * Kubeconfig for the registry's cluster; without it only plain-bucket
   * backups run. `eks`: authenticate with short-lived EKS tokens.
   */
  readonly kube?: {
    readonly path?: string;
    readonly yaml?: string;
    readonly context?: string;
    readonly eks?: EksIdentity;
  };
  /** How to give the cluster when a step needs it and `kube` is absent. */
  readonly kubeHint?: string;
  /** Which registry profile reaches the cluster (registry/profiles.ts); `acp` when unset. */
  readonly profileName?: ProfileName;
  /** That profile's settings, checked by its schema when the profile is first used. */
  readonly profileSettings?: Readonly<Record<string, unknown>>;
  /** Path style for buckets on endpoints other than the vault's (s3/addressing.ts). */
  readonly storagePathStyle?: boolean;
  readonly registryUrl?: string;
  readonly registryCredentials?: RegistryCredentials;
  readonly logger?: StepLogger;
  readonly now?: () => Date;
  /** Sockets per S3 client (requests one copy keeps in flight). */
  readonly concurrency?: number;
  readonly toolVersion?: string;
  /** Run leases: this process on this host for two minutes unless given (AWS: the execution's). */
  readonly lease?: LeaseSettings;
  /**
   * Buckets on the vault's endpoint the vault's own identity may read, or
   * read and write (AWS: the role's `registryBucketNames` and
   * `roleBucketNames` grants): a registry stored in one, or a restore target,
   * is then reached with that identity and copied server-side.
   */
  readonly vaultReaches?: { readonly read?: readonly string[]; readonly write?: readonly string[] };
  /**
   * A role in the registry buckets' account (AWS: the stack's
   * `registryReadRoleArn`): the `vaultReaches.read` buckets are then read with
   * its credentials, assumed by the vault's identity, instead of with that
   * identity itself. `stsEndpoint`: another STS than AWS's (tests).
   */
  readonly registryRole?: {
    readonly roleArn: string;
    readonly externalId?: string;
    readonly stsEndpoint?: string;
  };
  /** Progress of the long steps (proof, verification), at most four calls a second plus each step's last. */
  readonly onProgress?: (event: StepProgress) => void;
}

/** Passes progress on at most every `ms`, and always a step's final count. */
function throttled(
  listener: (event: StepProgress) => void,
  ms = 250,
): (event: StepProgress) => void {
  let last = 0;
  return (event) => {
    const counts = [event.tags, event.blobs].filter((c) => c !== undefined);
    const finished = counts.length > 0 && counts.every((c) => c.done >= c.total);
    const now = Date.now();
    if (!finished && now - last < ms) return;
    last = now;
    listener(event);
  };
}

/**
 * The Kubernetes client's module, loaded once and before any other module
 * that needs the client: two imports of one module graph at once are fine in
 * Node, but Jest's ESM loader fails to link them ("a module not been linked").
 */
let kubeModule: Promise<typeof import('../cluster/kube.ts')> | undefined;
const loadKube = () => {
  kubeModule ??= import('../cluster/kube.ts');
  return kubeModule;
};

/**
 * The chosen profile with its module, and the Kubernetes client under it,
 * loaded on the first call: a backup of a bucket given by name never reaches
 * the cluster, and the client is the CLI's largest dependency to load.
 */
function lazyProfile(
  name: ProfileName,
  kube: NonNullable<DepsConfig['kube']>,
  settings: unknown,
): RegistryProfile {
  let loaded: Promise<RegistryProfile> | undefined;
  const real = () => {
    loaded ??= loadKube().then((cluster) =>
      PROFILES[name].load(cluster.loadKubeConfig(kube), settings),
    );
    return loaded;
  };
  const forward =
    <K extends ProfileMethod>(method: K) =>
    async (...args: Parameters<RegistryProfile[K]>) =>
      // biome-ignore lint/suspicious/noExplicitAny: each method forwards its own arguments.
      ((await real())[method] as (...a: any[]) => any)(...args);
  const { bucketLayout } = PROFILES[name];
  return {
    name,
    ...(bucketLayout === undefined ? {} : { bucketLayout }),
    discover: forward('discover'),
    readStorageKeys: forward('readStorageKeys'),
    captureConfig: forward('captureConfig'),
    requiredObjects: forward('requiredObjects'),
    switchStorage: forward('switchStorage'),
    rolloutStatus: forward('rolloutStatus'),
    // The optional hooks: a profile without one has nothing to stop, dump or apply.
    planQuiesce: async () => (await real()).planQuiesce?.(),
    quiesce: async (plan) => (await real()).quiesce?.(plan),
    unquiesce: async (plan) => (await (await real()).unquiesce?.(plan)) ?? '',
    dumpDatabase: async () => (await real()).dumpDatabase?.(),
    databaseTags: async () => (await (await real()).databaseTags?.()) ?? [],
    loadDatabase: async (database, open) => (await real()).loadDatabase?.(database, open),
    restoreRegistry: async (restore) => {
      const profile = await real();
      return profile.restoreRegistry === undefined
        ? profile.switchStorage(restore.storage)
        : profile.restoreRegistry(restore);
    },
  };
}

/** The methods every profile has (the optional hooks are forwarded one by one). */
type ProfileMethod =
  | 'discover'
  | 'readStorageKeys'
  | 'captureConfig'
  | 'requiredObjects'
  | 'switchStorage'
  | 'rolloutStatus';

/** The one dependency factory: Lambda containers and local runs differ only in `config`. */
export function createDeps(config: DepsConfig): WorkflowDeps & { close(): void } {
  const maxSockets = config.concurrency ?? 64;
  const clients = new Map<string, S3Client>();
  const keyCache = new Map<string, Promise<StorageKeys | undefined>>();
  let profile: RegistryProfile | undefined;
  const kubeOrFail = () => {
    if (config.kube === undefined)
      throw new InputError(
        `this step needs the cluster, and no kubeconfig was given; ${config.kubeHint ?? 'give a kubeconfig'}`,
      );
    return config.kube;
  };
  const profileName = config.profileName ?? DEFAULT_PROFILE;
  const profileSettings = () =>
    parseInput(
      PROFILES[profileName].settingsSchema,
      config.profileSettings ?? {},
      `the ${profileName} profile's settings`,
    );
  const getProfile = (): RegistryProfile => {
    profile ??= lazyProfile(profileName, kubeOrFail(), profileSettings());
    return profile;
  };
  let resources: Promise<ResourceApi> | undefined;
  const getResources = (): Promise<ResourceApi> => {
    const kube = kubeOrFail();
    resources ??= loadKube().then(async (cluster) =>
      (await import('../cluster/resources-api.ts')).resourceApi(cluster.loadKubeConfig(kube)),
    );
    return resources;
  };
  const keysFor = (access: string): Promise<StorageKeys | undefined> => {
    let keys = keyCache.get(access);
    if (keys === undefined) {
      const secretName = registrySecretOf(access);
      if (access === Access.Vault) keys = Promise.resolve(config.vault.credentials);
      else if (access === Access.Directory) keys = Promise.resolve(undefined);
      else if (access === Access.Source || access === Access.Target) {
        const own = config.ownKeys?.[access];
        if (own === undefined)
          throw new InputError(`no keys are configured for the ${access}`, [
            `access: "${access}" needs the ${access}'s own keys (CLI: REGVAULT_${access.toUpperCase()}_ACCESS_KEY_ID and REGVAULT_${access.toUpperCase()}_SECRET_ACCESS_KEY); or use "${Access.Vault}"`,
          ]);
        keys = Promise.resolve(own.credentials);
      } else if (secretName !== undefined) keys = getProfile().readStorageKeys(secretName);
      else
        throw new InputError(`unknown access reference "${access}"`, [
          `access: expected "${Access.Vault}", "${Access.RegistryRole}", "${Access.Source}", "${Access.Target}" or "${Access.registrySecret('<name>')}"`,
        ]);
      // A refused read is not cached: the next step asks the cluster again.
      keys.catch(() => keyCache.delete(access));
      keyCache.set(access, keys);
    }
    return keys;
  };
  let assumed: Promise<AwsCredentialIdentityProvider> | undefined;
  /** The registry role's credentials, assumed with the vault's identity and renewed before they expire. */
  const registryRoleCredentials = (): Promise<AwsCredentialIdentityProvider> => {
    const role = config.registryRole;
    if (role === undefined)
      throw new InputError(`access "${Access.RegistryRole}" names no role here`, [
        `access: "${Access.RegistryRole}" needs the stack's registryReadRoleArn; use "${Access.Vault}" or "${Access.registrySecret('<name>')}"`,
      ]);
    assumed ??= import('@aws-sdk/credential-providers').then(({ fromTemporaryCredentials }) =>
      fromTemporaryCredentials({
        params: {
          RoleArn: role.roleArn,
          RoleSessionName: 'regvault',
          ...(role.externalId === undefined ? {} : { ExternalId: role.externalId }),
        },
        ...(config.vault.credentials === undefined
          ? {}
          : { masterCredentials: config.vault.credentials }),
        clientConfig: {
          region: config.vault.location.region,
          ...(role.stsEndpoint === undefined ? {} : { endpoint: role.stsEndpoint }),
        },
      }),
    );
    return assumed;
  };
  const vaultRole: S3Role = config.vault.role ?? {
    what: 'the vault',
    keys: "the vault's keys (the function's role)",
    fixKeys: "grant the function's role access to the vault bucket",
  };
  // Read again, not parsed: bad profile settings are refused where the profile is made.
  const parsedSettings = PROFILES[profileName].settingsSchema.safeParse(
    config.profileSettings ?? {},
  );
  const namespace = parsedSettings.success
    ? PROFILES[profileName].secretNamespace(parsedSettings.data)
    : undefined;
  /** Whose keys sign a location's requests, for failures: the vault's, or a Secret's. */
  const roleOf = (access: string): S3Role => {
    if (access === Access.RegistryRole)
      return {
        keys: `the role ${config.registryRole?.roleArn ?? '?'} (registryReadRoleArn), assumed with ${vaultRole.keys}`,
        fixKeys:
          "let that role list and read the registry bucket, and trust the function roles (the stack's RegistryReadRolePolicy and RegistryReadRoleTrustPolicy outputs)",
      };
    const own =
      access === Access.Source || access === Access.Target ? config.ownKeys?.[access] : undefined;
    if (own !== undefined) return own.role;
    const secretName = registrySecretOf(access);
    return secretName === undefined
      ? { keys: vaultRole.keys, fixKeys: vaultRole.fixKeys }
      : {
          keys: `the keys in Secret ${namespace ?? '?'}/${secretName}`,
          fixKeys: `put keys this S3 accepts into Secret ${namespace ?? '?'}/${secretName} (access-key-id and secret-access-key), or name another Secret`,
        };
  };
  const vaultClient = createS3Client(config.vault.location, config.vault.credentials, {
    maxSockets,
    role: vaultRole,
  });
  const deps: WorkflowDeps & { close(): void } = {
    vault: { location: config.vault.location, client: vaultClient },
    async s3(location) {
      const id = `${location.endpoint ?? 'aws'}|${location.region}|${location.access}`;
      let client = clients.get(id);
      if (client === undefined) {
        const credentials =
          location.access === Access.RegistryRole
            ? await registryRoleCredentials()
            : await keysFor(location.access);
        client = createS3Client(location, credentials, {
          maxSockets,
          role: roleOf(location.access),
        });
        clients.set(id, client);
      }
      return client;
    },
    async sameAccess(source, target) {
      if ((source.endpoint ?? '') !== (target.endpoint ?? '')) return false;
      if (source.access === target.access) return true;
      // The assumed role is its own identity: nothing else signs as it.
      if (source.access === Access.RegistryRole || target.access === Access.RegistryRole)
        return false;
      const [a, b] = await Promise.all([keysFor(source.access), keysFor(target.access)]);
      // No keys (the SDK's own chain) and a Secret's keys are different identities: stream between them.
      return (
        a !== undefined &&
        b !== undefined &&
        a.accessKeyId === b.accessKeyId &&
        a.secretAccessKey === b.secretAccessKey
      );
    },
    storageAccess(storage, use) {
      const vault = config.vault.location;
      const writable = config.vaultReaches?.write ?? [];
      const reachable =
        use === 'write' ? writable : [...writable, ...(config.vaultReaches?.read ?? [])];
      if (
        endpointIdentity(storage.endpoint) === endpointIdentity(vault.endpoint) &&
        reachable.includes(storage.bucket)
      ) {
        // A registry bucket behind the role is read with it: another account's, read only.
        const viaRole =
          config.registryRole !== undefined && use === 'read' && !writable.includes(storage.bucket);
        return {
          ...(vault.endpoint === undefined ? {} : { endpoint: vault.endpoint }),
          forcePathStyle: vault.forcePathStyle,
          access: viaRole ? Access.RegistryRole : Access.Vault,
        };
      }
      return {
        ...(storage.endpoint === undefined || storage.endpoint === ''
          ? {}
          : { endpoint: storage.endpoint }),
        forcePathStyle: deps.pathStyle(storage.endpoint),
        access: Access.registrySecret(storage.secretName),
      };
    },
    pathStyle(endpoint) {
      const vault = config.vault.location;
      if (endpointIdentity(endpoint) === endpointIdentity(vault.endpoint))
        return vault.forcePathStyle;
      return pathStyleFor(endpoint, config.storagePathStyle);
    },
    profile: getProfile,
    resources: getResources,
    registry: () =>
      config.registryUrl === undefined
        ? undefined
        : new RegistryClient(config.registryUrl, config.registryCredentials),
    now: config.now ?? (() => new Date()),
    log: config.logger ?? silentLogger,
    toolVersion: config.toolVersion ?? '0.1.0',
    lease: config.lease ?? { ttlMs: LOCAL_LEASE_TTL_MS, holder: localLeaseHolder() },
    ...(config.onProgress === undefined ? {} : { progress: throttled(config.onProgress) }),
    close() {
      for (const client of clients.values()) client.destroy();
      vaultClient.destroy();
    },
  };
  return deps;
}
