/**
 * The `quay` profile: Red Hat Quay run by the Quay Operator (seed 003, the
 * runbook "Backing up and restoring Red Hat Quay managed by the Red Hat Quay
 * Operator"). The QuayRegistry's `spec.configBundleSecret` holds
 * config.yaml, whose `DISTRIBUTED_STORAGE_CONFIG` names the bucket and its
 * keys (on ODF/NooBaa managed storage, the ConfigMap and Secret labelled
 * `app=noobaa` do); Quay's database lives in the postgres pod. Quiescing,
 * the database dump and the restore of the registry itself are in
 * quay-state.ts; docs/quay.md maps each runbook step to this code.
 */
import { createHash } from 'node:crypto';
import type { KubeConfig, V1Pod, V1Secret } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { isNotFound } from '../cluster/kube.ts';
import { ClusterError, InputError } from '../errors.ts';
import {
  type CapturedFile,
  type DiscoveredRegistry,
  NO_STORAGE,
  type PodState,
  type RegistryProfile,
  type RolloutStatus,
  type StorageKeys,
  type StorageRef,
  type SwitchResult,
  sameStorage,
} from './profile.ts';
import {
  configOfPod,
  isAvailable,
  isReady,
  type QuayCluster,
  type QuayRegistryObject,
  quayCluster,
  readyPodConfig,
} from './quay-cluster.ts';
import { parseQuayConfig, quayStorageOf, withStorage } from './quay-config.ts';
import { type QuaySettings, quaySettingsSchema } from './quay-settings.ts';
import { quayStateHooks, withObjectStorage } from './quay-state.ts';
import { DEFAULT_ACCESS_KEY_NAMES, DEFAULT_SECRET_KEY_NAMES } from './storage-keys.ts';
import { cleanForCapture } from './workload.ts';

export { type QuaySettings, quaySettingsSchema } from './quay-settings.ts';

/**
 * The storage_path the Quay Operator gives managed object storage (its
 * generated config.yaml), without the leading slash: where Quay's blobs are
 * in a NooBaa bucket.
 */
const MANAGED_STORAGE_PATH = 'datastorage/registry';

/** The NooBaa (ODF) bucket claim's objects, as the runbook reads them. */
const NOOBAA_SELECTOR = 'app=noobaa';
/** The label of a config bundle regvault made: the bundle it was made from. */
const RESTORED_FROM = 'regvault.dev/restored-from';

const decode = (value: string | undefined) =>
  value === undefined ? undefined : Buffer.from(value, 'base64').toString('utf8');

/** The config.yaml a config bundle Secret holds. */
export function bundleConfigText(secret: V1Secret, where: string): string {
  const text = decode(secret.data?.['config.yaml']);
  if (text === undefined)
    throw new ClusterError(
      `${where} holds no config.yaml (it holds ${Object.keys(secret.data ?? {}).join(', ') || 'nothing'}); is spec.configBundleSecret the Quay config bundle?`,
    );
  return text;
}

/** The running config of a quay-app pod (`cat /conf/stack/config.yaml`, as the runbook does). */
export async function runningConfig(cluster: QuayCluster): Promise<string> {
  const read = await readyPodConfig(cluster);
  if (read === undefined)
    throw new ClusterError(
      `no ready quay-app pod (quay-component=quay-app) in namespace ${cluster.namespace} to read /conf/stack/config.yaml from; regvault backs up a healthy Quay (condition Available=True)`,
    );
  return read.text;
}

/** Creates the Quay profile over a loaded kubeconfig. */
export function quayProfile(
  kc: KubeConfig,
  settings: QuaySettings = quaySettingsSchema.parse({}),
): RegistryProfile {
  const cluster = quayCluster(kc, settings);
  const { namespace } = settings;

  /** The config bundle Secret, which must exist. */
  const bundleOf = async (name: string): Promise<V1Secret> => {
    const secret = await cluster.secret(name);
    if (secret === undefined)
      throw new InputError(`Secret ${namespace}/${name} does not exist at ${cluster.server}`, [
        `Secret ${namespace}/${name}: the QuayRegistry's spec.configBundleSecret names it; create it or point the QuayRegistry at the config bundle (kubectl -n ${namespace} get secrets)`,
      ]);
    return secret;
  };

  /** The bucket of the operator's NooBaa bucket claim in the namespace (managed storage), if any. */
  const claimBucket = async (): Promise<string | undefined> =>
    (await cluster.labelled('configmaps', NOOBAA_SELECTOR))?.['BUCKET_NAME'];

  /** Where the QuayRegistry's blobs are; undefined when its bundle names none and there is no claim. */
  const storageOf = async (
    registry: QuayRegistryObject,
  ): Promise<{ storage: StorageRef | undefined; where: string }> => {
    const name = registry.metadata?.name ?? '';
    const bundleName = registry.spec?.configBundleSecret;
    if (bundleName === undefined || bundleName === '')
      throw new ClusterError(`QuayRegistry ${namespace}/${name} has no spec.configBundleSecret`);
    const where = `Secret ${namespace}/${bundleName}`;
    const config = parseQuayConfig(bundleConfigText(await bundleOf(bundleName), where), where);
    const storage = quayStorageOf(config, where);
    if (storage !== undefined)
      return {
        where,
        storage: {
          bucket: storage.bucket,
          regionEndpoint: storage.endpoint,
          region: storage.region,
          secretName: bundleName,
          rootDirectory: storage.rootDirectory,
        },
      };
    // Managed object storage: the operator's bucket claim (ODF/NooBaa) holds bucket and keys.
    const claim = await cluster.labelled('configmaps', NOOBAA_SELECTOR);
    const keys = await cluster.labelled('secrets', NOOBAA_SELECTOR);
    if (claim?.['BUCKET_NAME'] === undefined || keys === undefined)
      return { where, storage: undefined };
    // The endpoint as the operator wrote it into the running config (scheme included); while
    // Quay is quiesced (a restore) there is none to read, and the claim's host stands in.
    const running = 'the running /conf/stack/config.yaml';
    const ready = (await cluster.pods('quay-app')).some(isReady);
    const live = ready
      ? quayStorageOf(parseQuayConfig(await runningConfig(cluster), running), running)
      : undefined;
    const host = claim['BUCKET_HOST'] ?? '';
    const port = claim['BUCKET_PORT'] ?? '';
    return {
      where,
      storage: {
        bucket: claim['BUCKET_NAME'],
        regionEndpoint:
          live?.endpoint ?? (host === '' ? '' : `https://${host}${port === '' ? '' : `:${port}`}`),
        region: claim['BUCKET_REGION'] ?? 'us-east-1',
        secretName: keys['.name'] ?? '',
        // Quiesced, the operator's path for managed object storage stands in, as the endpoint does.
        rootDirectory: live?.rootDirectory ?? MANAGED_STORAGE_PATH,
      },
    };
  };

  const discover = async (): Promise<DiscoveredRegistry> => {
    const registry = await cluster.registry();
    const { storage, where } = await storageOf(registry);
    if (storage === undefined)
      throw new ClusterError(
        `${where}'s config.yaml names no DISTRIBUTED_STORAGE_CONFIG, and namespace ${namespace} has no ConfigMap and Secret labelled ${NOOBAA_SELECTOR} (ODF managed storage); regvault backs up Quay on S3 storage`,
      );
    return {
      resourceName: registry.metadata?.name ?? '',
      resourceVersion: registry.metadata?.resourceVersion ?? '',
      storage,
    };
  };

  const readStorageKeys = async (secretName: string): Promise<StorageKeys> => {
    const where = `Secret ${namespace}/${secretName}`;
    const secret = await cluster.secret(secretName);
    if (secret === undefined)
      throw new InputError(`${where} does not exist at ${cluster.server}`, [
        `${where}: create it in namespace ${namespace} with the bucket's keys (kubectl -n ${namespace} create secret generic ${secretName} --from-literal=access-key-id=... --from-literal=secret-access-key=...), or name the config bundle`,
      ]);
    const data = secret.data ?? {};
    if (data['config.yaml'] !== undefined) {
      const storage = quayStorageOf(parseQuayConfig(bundleConfigText(secret, where), where), where);
      if (storage !== undefined && storage.keys.accessKeyId !== '') return storage.keys;
    }
    const access = DEFAULT_ACCESS_KEY_NAMES.find((k) => data[k] !== undefined);
    const secretKey = DEFAULT_SECRET_KEY_NAMES.find((k) => data[k] !== undefined);
    if (access === undefined || secretKey === undefined)
      throw new ClusterError(
        `${where} has no usable S3 keys: it holds ${Object.keys(data).join(', ') || 'nothing'}; expected a config.yaml whose storage has keys, or access-key-id and secret-access-key (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY on NooBaa)`,
      );
    return {
      accessKeyId: (decode(data[access]) ?? '').trim(),
      secretAccessKey: (decode(data[secretKey]) ?? '').trim(),
    };
  };

  const secretFile = (secret: V1Secret): CapturedFile => ({
    name: `secret-${secret.metadata?.name ?? ''}.yaml`,
    yaml: stringify(cleanForCapture({ apiVersion: 'v1', kind: 'Secret', ...(secret as object) })),
  });

  const podStateOf = (p: V1Pod): PodState => ({
    name: p.metadata?.name ?? '',
    ready: isReady(p),
    phase: p.status?.phase ?? 'Unknown',
    ...(p.metadata?.creationTimestamp === undefined
      ? {}
      : { createdAt: new Date(p.metadata.creationTimestamp).toISOString() }),
  });
  const quayAppPods = async (): Promise<PodState[]> =>
    (await cluster.pods('quay-app')).map(podStateOf);

  const switchStorage = async (next: StorageRef): Promise<SwitchResult> => {
    if (next.bucket === '')
      throw new ClusterError(
        `there was no QuayRegistry in namespace ${namespace} before the restore, so there is nothing to switch back to; the restored one is left for inspection (kubectl -n ${namespace} delete quayregistry ... removes it)`,
      );
    const registry = await cluster.registry();
    const name = registry.metadata?.name ?? '';
    const previous = (await storageOf(registry)).storage ?? NO_STORAGE;
    const podsBefore = (await quayAppPods()).map((p) => p.name);
    const base = { resourceName: name, previous, podsBefore, switchedAt: new Date().toISOString() };
    if (sameStorage(previous, next)) return { ...base, current: next, changed: false };
    const components = registry.spec?.components ?? [];
    const bundleNow = registry.spec?.configBundleSecret ?? '';
    if (next.bucket === (await claimBucket())) {
      // The claim's bucket: the operator points Quay at it while objectstorage is managed and the
      // bundle names no storage. A bundle regvault made (a restore that left managed storage) is
      // left for the one it was made from, on rollback.
      const origin = (await cluster.secret(bundleNow))?.metadata?.labels?.[RESTORED_FROM];
      if (origin === undefined) return { ...base, current: next, changed: false };
      await cluster.patchRegistry(name, {
        spec: { configBundleSecret: origin, components: withObjectStorage(components, true) },
      });
      return { ...base, current: next, changed: true };
    }
    // A bundle that already says `next` (the one before a restore, on rollback) is pointed at
    // as it is; otherwise a new bundle is made, and the old one stays for the rollback.
    const named = await cluster.secret(next.secretName);
    const namedWhere = `Secret ${namespace}/${next.secretName}`;
    const namedStorage =
      named?.data?.['config.yaml'] === undefined
        ? undefined
        : quayStorageOf(
            parseQuayConfig(bundleConfigText(named, namedWhere), namedWhere),
            namedWhere,
          );
    let bundle = next.secretName;
    if (
      namedStorage === undefined ||
      namedStorage.bucket !== next.bucket ||
      namedStorage.endpoint !== next.regionEndpoint
    ) {
      const from = `Secret ${namespace}/${bundleNow}`;
      const text = withStorage(
        bundleConfigText(await bundleOf(bundleNow), from),
        {
          bucket: next.bucket,
          endpoint: next.regionEndpoint,
          region: next.region,
          keys: await readStorageKeys(next.secretName),
          // Where the restored blobs are (the snapshot's storage_path; the copy keeps keys).
          rootDirectory: next.rootDirectory === '' ? previous.rootDirectory : next.rootDirectory,
        },
        from,
      );
      bundle = restoredBundleName(name, next);
      await cluster.putSecret({
        apiVersion: 'v1',
        kind: 'Secret',
        type: 'Opaque',
        metadata: { name: bundle, labels: { [RESTORED_FROM]: bundleNow } },
        data: { 'config.yaml': Buffer.from(text).toString('base64') },
      });
    }
    // Storage named in the bundle: the operator must not manage object storage any more.
    const managed = components.some((c) => c.kind === 'objectstorage' && c.managed !== false);
    await cluster.patchRegistry(name, {
      spec: {
        configBundleSecret: bundle,
        ...(managed ? { components: withObjectStorage(components, false) } : {}),
      },
    });
    return { ...base, current: { ...next, secretName: bundle }, changed: true };
  };

  /** Those of `pods` whose running config names other storage than `registry`'s bundle, as `pod (bucket)`. */
  const podsOnOtherStorage = async (registry: QuayRegistryObject, pods: readonly V1Pod[]) => {
    const wanted = (await storageOf(registry)).storage;
    if (wanted === undefined) return [];
    const stale: string[] = [];
    for (const pod of pods) {
      const name = pod.metadata?.name ?? '';
      const where = `/conf/stack/config.yaml of ${name}`;
      let text: string;
      try {
        text = await configOfPod(cluster.kc, pod);
      } catch (err) {
        // Replaced since the poll listed it: not done, the next poll lists again.
        if (isNotFound(err)) {
          stale.push(`${name} (gone since it was listed)`);
          continue;
        }
        throw err;
      }
      const running = quayStorageOf(parseQuayConfig(text, where), where);
      if (running?.bucket !== wanted.bucket || running.endpoint !== wanted.regionEndpoint)
        stale.push(`${name} (s3://${running?.bucket ?? '?'})`);
    }
    return stale;
  };

  const rolloutStatus = async ({
    podsBefore,
  }: {
    podsBefore: readonly string[];
  }): Promise<RolloutStatus> => {
    const before = new Set(podsBefore);
    const registry = await cluster.registry();
    const listed = await cluster.pods('quay-app');
    const pods = listed.map(podStateOf);
    const newPods = pods.filter((p) => !before.has(p.name));
    const oldPods = pods.filter((p) => before.has(p.name)).map((p) => p.name);
    const ready = newPods.filter((p) => p.ready).length;
    const storageErrors: Array<{ pod: string; line: string }> = [];
    for (const pod of newPods.filter((p) => !p.ready))
      for (const line of (await cluster.podLog(pod.name)).split('\n'))
        if (settings.storageErrorPatterns.some((pattern) => line.includes(pattern)))
          storageErrors.push({ pod: pod.name, line: line.trim() });
    const available = isAvailable(registry);
    const settled = available && oldPods.length === 0 && ready > 0 && newPods.every((p) => p.ready);
    // A pod can start on the config from before the switch (before 3.7 the components are
    // scaled back before the operator that rolls the new config): done only when every ready
    // new pod runs the storage the QuayRegistry names now.
    const stale = settled
      ? await podsOnOtherStorage(
          registry,
          listed.filter((p) => !before.has(p.metadata?.name ?? '') && isReady(p)),
        )
      : [];
    const done = settled && stale.length === 0;
    const condition = registry.status?.conditions?.find((c) => c.type === 'Available');
    return {
      done,
      ready,
      desired: Math.max(1, newPods.length),
      newPods,
      oldPods,
      storageErrors,
      message: `QuayRegistry ${registry.metadata?.name ?? ''} Available=${condition?.status ?? 'unknown'}${condition?.message === undefined ? '' : ` (${condition.message})`}; ${ready} new quay-app pod(s) ready, ${oldPods.length} old still running${stale.length === 0 ? '' : `; ${stale.join(', ')} still on the storage from before, until the operator rolls the new config`}`,
    };
  };

  const profile: RegistryProfile = {
    name: 'quay',
    discover,
    readStorageKeys,
    async captureConfig(): Promise<CapturedFile[]> {
      // Quay's Secrets are always captured: a restore cannot work without them
      // (DATABASE_SECRET_KEY decrypts the database's fields).
      const registry = await cluster.registry();
      const name = registry.metadata?.name ?? '';
      const files: CapturedFile[] = [
        {
          name: `quayregistry-${name}.yaml`,
          yaml: stringify(cleanForCapture(registry as Parameters<typeof cleanForCapture>[0])),
        },
      ];
      const notes: string[] = [];
      const keys = await cluster.secret(`${name}-quay-registry-managed-secret-keys`);
      if (keys === undefined)
        notes.push(
          `no ${name}-quay-registry-managed-secret-keys Secret: Quay before 3.7 makes none, so it was skipped (the runbook's note)`,
        );
      else files.push(secretFile(keys));
      const bundleName = registry.spec?.configBundleSecret ?? '';
      files.push(secretFile(await bundleOf(bundleName)));
      files.push({ name: 'quay-config.yaml', yaml: await runningConfig(cluster) });
      files.push({
        name: 'quay-notes.yaml',
        yaml: stringify({ version: registry.status?.currentVersion ?? 'unknown', notes }),
      });
      return files;
    },
    async requiredObjects() {
      const registry = await cluster.registry();
      const name = registry.metadata?.name ?? '';
      return [
        { apiVersion: 'quay.redhat.com/v1', kind: 'QuayRegistry', namespace, name },
        {
          apiVersion: 'v1',
          kind: 'Secret',
          namespace,
          name: registry.spec?.configBundleSecret ?? '',
        },
      ];
    },
    switchStorage,
    rolloutStatus,
    // Quay's bucket holds its blobs by digest; its tags and manifests are in its database.
    bucketLayout: 'quay',
    ...quayStateHooks(cluster, {
      discover,
      readStorageKeys,
      switchStorage,
      quayAppPods,
      claimBucket,
    }),
  };
  return profile;
}

/** The name of a config bundle made for `storage` (stable, so a retried switch reuses it). */
export function restoredBundleName(registry: string, storage: StorageRef): string {
  const tag = createHash('sha256')
    .update(`${storage.bucket}|${storage.regionEndpoint}|${storage.secretName}`)
    .digest('hex')
    .slice(0, 8);
  return `${registry}-config-bundle-${tag}`;
}
