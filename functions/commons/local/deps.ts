/**
 * Workflow dependencies for one machine (the CLI, the demo, the tests): S3
 * clients from explicit keys, the cluster from a kubeconfig, the registry
 * from a URL. The registry bucket's keys are read from the cluster's Secret
 * when a step needs them, exactly as in AWS.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { loadKubeConfig } from '../cluster/kube.ts';
import type { Location } from '../copy/model.ts';
import { type AcpSettings, acpProfile, acpSettingsSchema } from '../registry/acp.ts';
import { RegistryClient, type RegistryCredentials } from '../registry/client.ts';
import type { RegistryProfile, StorageKeys } from '../registry/profile.ts';
import { createS3Client } from '../s3/client.ts';
import {
  Access,
  registrySecretOf,
  type StepLogger,
  type StepProgress,
  type WorkflowDeps,
} from '../workflows/deps.ts';

export interface LocalDepsOptions {
  readonly vault: { readonly location: Location; readonly credentials?: StorageKeys };
  /** Kubeconfig for the registry's cluster; without it only plain-bucket backups run. */
  readonly kube?: { readonly path?: string; readonly yaml?: string; readonly context?: string };
  readonly profileSettings?: Partial<AcpSettings>;
  readonly registryUrl?: string;
  readonly registryCredentials?: RegistryCredentials;
  readonly logger?: StepLogger;
  readonly now?: () => Date;
  readonly concurrency?: number;
  readonly toolVersion?: string;
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

export function createLocalDeps(options: LocalDepsOptions): WorkflowDeps & { close(): void } {
  const clients = new Map<string, S3Client>();
  const keyCache = new Map<string, StorageKeys | undefined>();
  let profile: RegistryProfile | undefined;
  const getProfile = (): RegistryProfile => {
    if (profile === undefined) {
      if (options.kube === undefined) {
        throw new Error(
          'this step needs the cluster, and no kubeconfig was given; pass --kubeconfig (or set KUBECONFIG)',
        );
      }
      const kc = loadKubeConfig(options.kube);
      profile = acpProfile(kc, acpSettingsSchema.parse(options.profileSettings ?? {}));
    }
    return profile;
  };
  const keysFor = async (access: string): Promise<StorageKeys | undefined> => {
    if (keyCache.has(access)) return keyCache.get(access);
    let keys: StorageKeys | undefined;
    const secretName = registrySecretOf(access);
    if (access === Access.Vault) keys = options.vault.credentials;
    else if (secretName !== undefined) keys = await getProfile().readStorageKeys(secretName);
    else
      throw new Error(
        `unknown access reference "${access}": expected "vault" or "registry-secret:<name>"`,
      );
    keyCache.set(access, keys);
    return keys;
  };
  const deps: WorkflowDeps & { close(): void } = {
    vault: {
      location: options.vault.location,
      client: createS3Client(options.vault.location, options.vault.credentials, {
        maxSockets: options.concurrency ?? 64,
      }),
    },
    async s3(location) {
      const id = `${location.endpoint ?? 'aws'}|${location.region}|${location.access}`;
      let client = clients.get(id);
      if (client === undefined) {
        client = createS3Client(location, await keysFor(location.access), {
          maxSockets: options.concurrency ?? 64,
        });
        clients.set(id, client);
      }
      return client;
    },
    async sameAccess(source, target) {
      if ((source.endpoint ?? '') !== (target.endpoint ?? '')) return false;
      if (source.access === target.access) return true;
      const [a, b] = await Promise.all([keysFor(source.access), keysFor(target.access)]);
      return (
        a !== undefined &&
        b !== undefined &&
        a.accessKeyId === b.accessKeyId &&
        a.secretAccessKey === b.secretAccessKey
      );
    },
    profile: getProfile,
    registry: () =>
      options.registryUrl === undefined
        ? undefined
        : new RegistryClient(options.registryUrl, options.registryCredentials),
    now: options.now ?? (() => new Date()),
    log: options.logger ?? { info() {}, warn() {} },
    toolVersion: options.toolVersion ?? '0.1.0',
    ...(options.onProgress === undefined ? {} : { progress: throttled(options.onProgress) }),
    close() {
      for (const client of clients.values()) client.destroy();
      deps.vault.client.destroy();
    },
  };
  return deps;
}
