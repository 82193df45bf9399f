/**
 * The `acp` profile: Alauda Container Platform's registry plugin, configured
 * by a cluster-scoped `ModuleInfo` labelled `cpaas.io/module-name=image-registry`
 * whose `spec.config.s3storage` names the bucket, endpoint, region and the
 * Secret (in `cpaas-system`) with the keys. This automates seeds 000/001.
 */
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { type CallDescription, KubeApiError, kubeCall } from '../cluster/kube.ts';
import { servedAt } from '../cluster/served.ts';
import { ClusterError, InputError } from '../errors.ts';
import { ACP_GROUP, type AcpSettings, acpSettingsSchema } from './acp-settings.ts';
import {
  type CapturedFile,
  type DiscoveredRegistry,
  type PodState,
  type RegistryProfile,
  type RolloutStatus,
  type StorageKeys,
  type StorageRef,
  type SwitchResult,
  sameStorage,
} from './profile.ts';
import { keysFromSecretData } from './storage-keys.ts';

export { type AcpSettings, acpSettingsSchema } from './acp-settings.ts';

/** Server-set fields removed before a resource is saved, so it can be applied to a new cluster. */
const SERVER_FIELDS = [
  'uid',
  'resourceVersion',
  'creationTimestamp',
  'generation',
  'managedFields',
  'finalizers',
  'ownerReferences',
  'selfLink',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
] as const;

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
  spec?: { config?: { s3storage?: Record<string, unknown> } };
  [k: string]: unknown;
}

/** A copy of `object` without status and server-set metadata. */
export function cleanForCapture(object: KubeObject): KubeObject {
  const { status: _status, ...rest } = object;
  const metadata = { ...(rest.metadata ?? {}) };
  for (const field of SERVER_FIELDS) delete metadata[field];
  if (metadata.annotations !== undefined) {
    const { 'kubectl.kubernetes.io/last-applied-configuration': _applied, ...annotations } =
      metadata.annotations;
    if (Object.keys(annotations).length === 0) delete metadata.annotations;
    else metadata.annotations = annotations;
  }
  return { ...rest, metadata };
}

function storageOf(name: string, object: KubeObject): StorageRef {
  const block = object.spec?.config?.s3storage;
  if (block === undefined || typeof block !== 'object') {
    throw new ClusterError(
      `ModuleInfo ${name} has no spec.config.s3storage block; this registry does not use S3 storage, or the resource is not the registry's`,
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
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
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

  /** The storage Secret; one that does not exist is bad input, with how to create it or find another. */
  const readSecret = (secretName: string) =>
    kubeCall(
      server,
      { verb: 'get', resource: 'secrets', group: '', namespace, name: secretName },
      () => core.readNamespacedSecret({ name: secretName, namespace }),
    ).catch((err: unknown) => {
      // The name came from the user (--target-secret) or the ModuleInfo: either way a fix, not a retry.
      if (!(err instanceof KubeApiError) || err.status !== 404) throw err;
      throw new InputError(`Secret ${namespace}/${secretName} does not exist at ${server}`, [
        `Secret ${namespace}/${secretName}: create it in namespace ${namespace} with the bucket's keys (kubectl -n ${namespace} create secret generic ${secretName} --from-literal=access-key-id=... --from-literal=secret-access-key=...), or name an existing one (kubectl -n ${namespace} get secrets)`,
      ]);
    });

  const listPods = async () => {
    const pods = await kubeCall(
      server,
      { verb: 'list', resource: 'pods', group: '', namespace },
      () => core.listNamespacedPod({ namespace, labelSelector: settings.podSelector }),
    );
    return pods.items.filter((p) => p.metadata?.deletionTimestamp === undefined);
  };

  const profile: RegistryProfile = {
    name: 'acp',

    async discover(): Promise<DiscoveredRegistry> {
      const object = await findModuleInfo();
      const name = object.metadata?.name ?? '';
      return {
        resourceName: name,
        resourceVersion: object.metadata?.resourceVersion ?? '',
        storage: storageOf(name, object),
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
        const secretName = storageOf(name, object).secretName;
        const secret = await readSecret(secretName);
        files.push({
          name: `secret-${secretName}.yaml`,
          yaml: stringify(
            cleanForCapture({
              apiVersion: 'v1',
              kind: 'Secret',
              ...(secret as unknown as KubeObject),
            }),
          ),
        });
      }
      return files;
    },

    async requiredObjects() {
      const object = await findModuleInfo();
      const name = object.metadata?.name ?? '';
      const secretName = storageOf(name, object).secretName;
      const { group, version } = await servedType();
      return [
        { apiVersion: `${group}/${version}`, kind: object.kind ?? 'ModuleInfo', name },
        { apiVersion: 'v1', kind: 'Secret', namespace, name: secretName },
        { apiVersion: 'apps/v1', kind: 'Deployment', namespace, name: settings.deployment },
        { apiVersion: 'v1', kind: 'Service', namespace, name: settings.service },
      ];
    },

    async switchStorage(next: StorageRef): Promise<SwitchResult> {
      const attempt = async (): Promise<SwitchResult> => {
        const object = await findModuleInfo();
        const name = object.metadata?.name ?? '';
        const previous = storageOf(name, object);
        const podsBefore = (await listPods()).map((p) => p.metadata?.name ?? '');
        const base = {
          resourceName: name,
          previous,
          current: next,
          podsBefore,
          switchedAt: new Date().toISOString(),
        };
        if (sameStorage(previous, next)) return { ...base, changed: false };
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
          spec: { config: { s3storage: block } },
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
      try {
        return await attempt();
      } catch (err) {
        if (err instanceof KubeApiError && err.status === 409) return attempt();
        throw err;
      }
    },

    async rolloutStatus({ podsBefore }): Promise<RolloutStatus> {
      const before = new Set(podsBefore);
      const pods = await listPods();
      let desired = 1;
      try {
        const deployment = await kubeCall(
          server,
          {
            verb: 'get',
            resource: 'deployments',
            group: 'apps',
            namespace,
            name: settings.deployment,
          },
          () => apps.readNamespacedDeployment({ name: settings.deployment, namespace }),
        );
        desired = deployment.spec?.replicas ?? 1;
      } catch (err) {
        if (!(err instanceof KubeApiError) || (err.status !== 404 && err.status !== 403)) throw err;
        desired = Math.max(1, podsBefore.length);
      }
      const newPods: PodState[] = pods
        .filter((p) => !before.has(p.metadata?.name ?? ''))
        .map((p) => {
          const ready =
            p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
          const waiting = p.status?.containerStatuses?.find((c) => c.name === settings.container)
            ?.state?.waiting?.reason;
          return {
            name: p.metadata?.name ?? '',
            ready,
            phase: p.status?.phase ?? 'Unknown',
            ...(waiting === undefined ? {} : { reason: waiting }),
            ...(p.metadata?.creationTimestamp === undefined
              ? {}
              : { createdAt: new Date(p.metadata.creationTimestamp).toISOString() }),
          };
        });
      const oldPods = pods.map((p) => p.metadata?.name ?? '').filter((n) => before.has(n));
      const storageErrors: Array<{ pod: string; line: string }> = [];
      for (const pod of newPods.filter((p) => !p.ready)) {
        let log = '';
        try {
          log = await kubeCall(
            server,
            {
              verb: 'get',
              resource: 'pods',
              subresource: 'log',
              group: '',
              namespace,
              name: pod.name,
            },
            () =>
              core.readNamespacedPodLog({
                name: pod.name,
                namespace,
                container: settings.container,
                tailLines: 200,
              }),
          );
        } catch (err) {
          // A pod whose container has not started has no log yet; that is not a failure.
          if (!(err instanceof KubeApiError) || (err.status !== 400 && err.status !== 404))
            throw err;
        }
        for (const line of log.split('\n')) {
          if (settings.storageErrorPatterns.some((pattern) => line.includes(pattern)))
            storageErrors.push({ pod: pod.name, line: line.trim() });
        }
      }
      const ready = newPods.filter((p) => p.ready).length;
      const done =
        oldPods.length === 0 &&
        newPods.length > 0 &&
        ready >= desired &&
        newPods.every((p) => p.ready);
      const waitingReasons = newPods
        .filter((p) => p.reason !== undefined)
        .map((p) => `${p.name}: ${p.reason}`);
      const message = done
        ? `${ready}/${desired} new registry pods ready, old pods gone`
        : `${ready}/${desired} new registry pods ready, ${oldPods.length} old pod(s) still running${waitingReasons.length === 0 ? '' : `; ${waitingReasons.join('; ')}`}`;
      return { done, ready, desired, newPods, oldPods, storageErrors, message };
    },
  };
  return profile;
}
