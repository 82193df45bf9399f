/**
 * The `acp` profile: Alauda Container Platform's registry plugin, configured
 * by a cluster-scoped `ModuleInfo` labelled `cpaas.io/module-name=image-registry`
 * whose `spec.config.s3storage` names the bucket, endpoint, region and the
 * Secret (in `cpaas-system`) with the keys. This automates seeds 000/001.
 */
import {
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { type CallDescription, KubeApiError, kubeCall } from '../cluster/kube.ts';
import { servedAt } from '../cluster/served.ts';
import { ClusterError, InputError } from '../errors.ts';
import { claimOfPersistence, persistencePatch } from './acp-persistence.ts';
import { ACP_GROUP, type AcpSettings, acpSettingsSchema } from './acp-settings.ts';
import {
  type CapturedFile,
  type DiscoveredRegistry,
  type RegistryProfile,
  type StorageKeys,
  type StorageRef,
  type SwitchResult,
  sameStorage,
} from './profile.ts';
import { keysFromSecretData } from './storage-keys.ts';
import { capturedFile, cleanForCapture, registryWorkload, retryOnConflict } from './workload.ts';

export { type AcpSettings, acpSettingsSchema } from './acp-settings.ts';

interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  spec?: {
    config?: { s3storage?: Record<string, unknown>; persistence?: unknown; storageType?: unknown };
  };
  [k: string]: unknown;
}

function storageOf(name: string, object: KubeObject, namespace: string): StorageRef {
  // An enabled persistence block puts the registry on a PVC (acp-persistence.ts).
  const claim = claimOfPersistence(name, object.spec?.config, namespace);
  if (claim !== undefined)
    return { bucket: '', regionEndpoint: '', region: '', secretName: '', rootDirectory: '', claim };
  const block = object.spec?.config?.s3storage;
  if (block === undefined || typeof block !== 'object') {
    throw new ClusterError(
      `ModuleInfo ${name} has no spec.config.s3storage block and no enabled spec.config.persistence; this registry uses a storage regvault does not know, or the resource is not the registry's`,
    );
  }
  const text = (key: string) =>
    typeof block[key] === 'string' ? (block[key] as string) : undefined;
  const missing = ['bucket', 'region', 'secretName'].filter(
    (k) => text(k) === undefined || text(k) === '',
  );
  if (missing.length > 0) {
    throw new ClusterError(
      `ModuleInfo ${name} spec.config.s3storage lacks ${missing.map((m) => `"${m}"`).join(', ')}; set them on the resource (kubectl edit moduleinfo ${name})`,
    );
  }
  return {
    bucket: text('bucket') ?? '',
    regionEndpoint: text('regionEndpoint') ?? '',
    region: text('region') ?? '',
    secretName: text('secretName') ?? '',
    rootDirectory: text('rootDirectory') ?? text('rootdirectory') ?? '',
  };
}

/** Creates the ACP profile over a loaded kubeconfig. */
export function acpProfile(
  kc: KubeConfig,
  settings: AcpSettings = acpSettingsSchema.parse({}),
): RegistryProfile {
  const server = kc.getCurrentCluster()?.server ?? '(unknown server)';
  const custom = kc.makeApiClient(CustomObjectsApi);
  const { plural, namespace } = settings;
  const mi = (verb: CallDescription['verb'], group: string, name?: string): CallDescription => ({
    verb,
    resource: plural,
    group,
    ...(name === undefined ? {} : { name }),
  });

  /** The ModuleInfo's group and version as the cluster serves them, found once (a failure is asked again). */
  let served: Promise<{ group: string; version: string }> | undefined;
  const servedType = () => {
    served ??= servedAt(kc, plural, {
      group: settings.group,
      version: settings.version,
      prefer: [ACP_GROUP],
    }).then((type) => {
      if (type === undefined) {
        const where =
          settings.group === undefined
            ? 'in any API group'
            : `in group ${settings.group}${settings.version === undefined ? '' : ` at version ${settings.version}`}`;
        throw new ClusterError(
          `the cluster at ${server} serves no ${plural} resource ${where} (kubectl api-resources | grep -i ${plural}); is ACP's registry plugin installed, and is this the registry's cluster (--context)? If ACP serves it under another group or version, set group and version in the acp profile's settings`,
        );
      }
      return { group: type.group, version: type.version };
    });
    served.catch(() => {
      served = undefined;
    });
    return served;
  };

  const listModuleInfos = async (labelSelector?: string): Promise<KubeObject[]> => {
    const { group, version } = await servedType();
    const list = (await kubeCall(server, mi('list', group), () =>
      custom.listClusterCustomObject({
        group,
        version,
        plural,
        ...(labelSelector === undefined ? {} : { labelSelector }),
      }),
    )) as { items?: KubeObject[] };
    return list.items ?? [];
  };
  const namesOf = (items: readonly KubeObject[]) =>
    items.length === 0 ? 'none' : items.map((i) => i.metadata?.name ?? '?').join(', ');

  /** The ModuleInfo the settings name; one that does not exist is bad input, naming those that do. */
  const getModuleInfo = async (name: string): Promise<KubeObject> => {
    const { group, version } = await servedType();
    try {
      return (await kubeCall(server, mi('get', group, name), () =>
        custom.getClusterCustomObject({ group, version, plural, name }),
      )) as KubeObject;
    } catch (err) {
      if (!(err instanceof KubeApiError) || err.status !== 404) throw err;
      const labelled = await listModuleInfos(settings.labelSelector);
      throw new InputError(`there is no ModuleInfo "${name}" at ${server}`, [
        `--module-info: name the registry's ModuleInfo (labelled ${settings.labelSelector}: ${namesOf(labelled)}), or leave it out to find it by that label; check --context if this is not the registry's cluster`,
      ]);
    }
  };

  const findModuleInfo = async (): Promise<KubeObject> => {
    if (settings.moduleInfoName !== undefined) return getModuleInfo(settings.moduleInfoName);
    const items = await listModuleInfos(settings.labelSelector);
    if (items.length === 1 && items[0] !== undefined) return items[0];
    if (items.length === 0) {
      throw new ClusterError(
        `no ModuleInfo is labelled ${settings.labelSelector}; ModuleInfos found: ${namesOf(await listModuleInfos())} (at ${server}). Is the registry plugin installed, and is this the registry's cluster (--context)? Name its ModuleInfo with --module-info NAME.`,
      );
    }
    const names = items.map((i) => i.metadata?.name ?? '?');
    throw new ClusterError(
      `${items.length} ModuleInfos are labelled ${settings.labelSelector} (${names.join(', ')}); name the registry's with --module-info NAME`,
    );
  };

  const workload = registryWorkload(kc, {
    namespace,
    podSelector: settings.podSelector,
    deployment: settings.deployment,
    container: settings.container,
    storageErrorPatterns: settings.storageErrorPatterns,
  });
  const { readSecret, listPods } = workload;

  const profile: RegistryProfile = {
    name: 'acp',

    async discover(): Promise<DiscoveredRegistry> {
      const object = await findModuleInfo();
      const name = object.metadata?.name ?? '';
      return {
        resourceName: name,
        resourceVersion: object.metadata?.resourceVersion ?? '',
        storage: storageOf(name, object, namespace),
      };
    },

    async readStorageKeys(secretName: string): Promise<StorageKeys> {
      const secret = await readSecret(secretName);
      return keysFromSecretData(secret.data ?? {}, settings.secretKeyNames, {
        namespace,
        secretName,
      });
    },

    async captureConfig({ includeSecret }): Promise<CapturedFile[]> {
      const object = await findModuleInfo();
      const name = object.metadata?.name ?? 'moduleinfo';
      const files: CapturedFile[] = [
        { name: `moduleinfo-${name}.yaml`, yaml: stringify(cleanForCapture(object)) },
      ];
      if (includeSecret) {
        const secretName = storageOf(name, object, namespace).secretName;
        // A registry on a PVC has no storage Secret to capture.
        if (secretName !== '')
          files.push(
            capturedFile(`secret-${secretName}.yaml`, 'v1', 'Secret', await readSecret(secretName)),
          );
      }
      return files;
    },

    async requiredObjects() {
      const object = await findModuleInfo();
      const name = object.metadata?.name ?? '';
      const storage = storageOf(name, object, namespace);
      const { group, version } = await servedType();
      return [
        { apiVersion: `${group}/${version}`, kind: object.kind ?? 'ModuleInfo', name },
        storage.claim === undefined
          ? { apiVersion: 'v1', kind: 'Secret', namespace, name: storage.secretName }
          : {
              apiVersion: 'v1',
              kind: 'PersistentVolumeClaim',
              namespace,
              name: storage.claim.claimName,
            },
        { apiVersion: 'apps/v1', kind: 'Deployment', namespace, name: settings.deployment },
        { apiVersion: 'v1', kind: 'Service', namespace, name: settings.service },
      ];
    },

    async switchStorage(next: StorageRef): Promise<SwitchResult> {
      const attempt = async (): Promise<SwitchResult> => {
        const object = await findModuleInfo();
        const name = object.metadata?.name ?? '';
        const previous = storageOf(name, object, namespace);
        const podsBefore = (await listPods()).map((p) => p.metadata?.name ?? '');
        const base = {
          resourceName: name,
          previous,
          current: next,
          podsBefore,
          switchedAt: new Date().toISOString(),
        };
        if (sameStorage(previous, next)) return { ...base, changed: false };
        const volume = persistencePatch(object.spec?.config, next.claim);
        const block: Record<string, string> = {
          bucket: next.bucket,
          regionEndpoint: next.regionEndpoint,
          region: next.region,
          secretName: next.secretName,
        };
        const rootKey =
          'rootdirectory' in (object.spec?.config?.s3storage ?? {})
            ? 'rootdirectory'
            : 'rootDirectory';
        if (next.rootDirectory !== '' || previous.rootDirectory !== '')
          block[rootKey] = next.rootDirectory;
        // The resourceVersion in a merge patch is a precondition: a concurrent change gives 409.
        const body = {
          metadata: { resourceVersion: object.metadata?.resourceVersion },
          // A claim changes only the persistence block; a bucket, s3storage (and turns persistence off).
          spec: {
            config: {
              ...(next.claim === undefined ? { s3storage: block } : {}),
              ...volume,
            },
          },
        };
        const { group, version } = await servedType();
        await kubeCall(server, mi('patch', group, name), () =>
          custom.patchClusterCustomObject(
            { group, version, plural, name, body },
            setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
          ),
        );
        return { ...base, changed: true };
      };
      return retryOnConflict(attempt);
    },

    rolloutStatus: ({ podsBefore }) => workload.rolloutStatus(podsBefore),
  };
  return profile;
}
