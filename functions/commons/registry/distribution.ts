/**
 * The `distribution` profile: Docker Distribution run as a plain Deployment
 * (the docker-registry Helm chart, or by hand). Its storage is the
 * `storage.s3` block of the `config.yml` the container mounts from a
 * ConfigMap or Secret, with the container's `REGISTRY_STORAGE_S3_*` env on
 * top, as the registry itself reads it. A switch rewrites that config (and
 * any env value that overrides it), then sets the pod template's checksum
 * annotation to the new config's sha256, which rolls the Deployment as a
 * `helm upgrade` would. The `harbor` profile is the same over Harbor's
 * registry component (./harbor.ts).
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';
import {
  AppsV1Api,
  CoreV1Api,
  type KubeConfig,
  type V1Container,
  type V1Deployment,
} from '@kubernetes/client-node';
import { isMap, parseDocument } from 'yaml';
import { KubeApiError, kubeCall } from '../cluster/kube.ts';
import { ClusterError, InputError } from '../errors.ts';
import type { DistributionSettings } from './distribution-settings.ts';
import {
  type ClaimRef,
  type RegistryProfile,
  type StorageRef,
  type SwitchResult,
  sameStorage,
} from './profile.ts';
import { keysFromSecretData } from './storage-keys.ts';
import {
  type CapturedObject,
  capturedFile,
  registryWorkload,
  retryOnConflict,
} from './workload.ts';

/** Where a registry image reads its config. */
const CONFIG_DIRECTORY = '/etc/docker/registry';
/** The secretName of a registry whose keys are written in its config.yml. */
export const KEYS_IN_CONFIG = '(config.yml)';
/** The secretName of a registry with no keys at all: it runs with an IAM role. */
export const IAM_ROLE = '(iam-role)';

/** The bucket fields of a registry on a claim. */
const NO_BUCKET = { bucket: '', regionEndpoint: '', region: '', secretName: '', rootDirectory: '' };

/** The fields of `storage.s3` regvault reads and switches, and the StorageRef field of each. */
const FIELDS = {
  bucket: 'bucket',
  region: 'region',
  regionendpoint: 'regionEndpoint',
  rootdirectory: 'rootDirectory',
} as const;
const envName = (field: string) => `REGISTRY_STORAGE_S3_${field.toUpperCase()}`;

/** The registry as found: its Deployment, container, config object and text, and storage. */
interface Found {
  readonly deployment: V1Deployment;
  readonly container: V1Container;
  readonly config: {
    kind: 'ConfigMap' | 'Secret';
    name: string;
    text: string;
    object: CapturedObject;
  };
  readonly storage: StorageRef;
  /** Secret data keys the container's env reads the keys from, tried first. */
  readonly keyNames: { accessKey?: string | undefined; secretKey?: string | undefined };
}

/** Creates the profile over a loaded kubeconfig; `name` is how it reports itself (`distribution`, `harbor`). */
export function distributionProfile(
  kc: KubeConfig,
  settings: DistributionSettings,
  name = 'distribution',
): RegistryProfile {
  const server = kc.getCurrentCluster()?.server ?? '(unknown server)';
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  const { namespace } = settings;
  const where = `${namespace}/${settings.deployment}`;
  const call = (verb: 'get' | 'update', resource: string, object: string) => ({
    verb,
    resource,
    group: resource === 'deployments' ? 'apps' : '',
    namespace,
    name: object,
  });

  const readDeployment = () =>
    kubeCall(server, call('get', 'deployments', settings.deployment), () =>
      apps.readNamespacedDeployment({ name: settings.deployment, namespace }),
    ).catch((err: unknown) => {
      if (!(err instanceof KubeApiError) || err.status !== 404) throw err;
      throw new InputError(`there is no Deployment ${where} at ${server}`, [
        `deployment: name the registry's Deployment in the ${name} profile's settings (namespace, deployment; kubectl -n ${namespace} get deployments), or check --context`,
      ]);
    });

  const readConfig = async (container: V1Container, deployment: V1Deployment) => {
    let kind: 'ConfigMap' | 'Secret' | undefined;
    let object = settings.configSecret ?? settings.configMap;
    kind =
      settings.configSecret !== undefined
        ? 'Secret'
        : object === undefined
          ? undefined
          : 'ConfigMap';
    if (kind === undefined) {
      const mount = container.volumeMounts?.find(
        (m) => m.mountPath.replace(/\/$/, '') === CONFIG_DIRECTORY,
      );
      const volume = deployment.spec?.template.spec?.volumes?.find((v) => v.name === mount?.name);
      if (volume?.configMap?.name !== undefined)
        [kind, object] = ['ConfigMap', volume.configMap.name];
      else if (volume?.secret?.secretName !== undefined)
        [kind, object] = ['Secret', volume.secret.secretName];
    }
    if (kind === undefined || object === undefined)
      throw new ClusterError(
        `Deployment ${where} mounts no config at ${CONFIG_DIRECTORY} from a ConfigMap or Secret; name it with configMap or configSecret in the ${name} profile's settings`,
      );
    const configName = object;
    const read =
      kind === 'ConfigMap'
        ? kubeCall(server, call('get', 'configmaps', configName), () =>
            core.readNamespacedConfigMap({ name: configName, namespace }),
          ).then((c) => ({ object: c, text: c.data?.[settings.configKey] }))
        : kubeCall(server, call('get', 'secrets', configName), () =>
            core.readNamespacedSecret({ name: configName, namespace }),
          ).then((s) => ({
            object: s,
            text:
              s.data?.[settings.configKey] === undefined
                ? undefined
                : Buffer.from(s.data[settings.configKey] ?? '', 'base64').toString('utf8'),
          }));
    const { object: found, text } = await read;
    if (text === undefined)
      throw new ClusterError(
        `${kind} ${namespace}/${configName} has no ${settings.configKey}; set configKey in the ${name} profile's settings`,
      );
    return { kind, name: configName, text, object: found as unknown as CapturedObject };
  };

  const find = async (): Promise<Found> => {
    const deployment = await readDeployment();
    const containers = deployment.spec?.template.spec?.containers ?? [];
    const container =
      settings.container === undefined
        ? containers[0]
        : containers.find((c) => c.name === settings.container);
    if (container === undefined)
      throw new ClusterError(
        `Deployment ${where} has no container ${settings.container ?? ''} (it has ${containers.map((c) => c.name).join(', ') || 'none'}); set container in the ${name} profile's settings`,
      );
    const config = await readConfig(container, deployment);
    const claim = claimOf(config.text, container, deployment);
    if (claim !== undefined)
      return {
        deployment,
        container,
        config,
        storage: { ...NO_BUCKET, claim },
        keyNames: {},
      };
    const s3 = parseDocument(config.text).getIn(['storage', 's3']);
    const block = isMap(s3) ? (s3.toJSON() as Record<string, unknown>) : {};
    const env = container.env ?? [];
    const value = (field: string): string => {
      const variable = env.find((e) => e.name === envName(field));
      if (variable?.value !== undefined) return variable.value;
      const inConfig = block[field];
      return typeof inConfig === 'string' ? inConfig : '';
    };
    const missing = ['bucket', 'region'].filter((field) => value(field) === '');
    if (missing.length > 0)
      throw new ClusterError(
        `the registry of Deployment ${where} has no S3 storage: ${config.kind} ${namespace}/${config.name} ${settings.configKey} storage.s3 lacks ${missing.join(', ')} (and the container's env sets none); this profile backs up registries on S3`,
      );
    const keyRef = (field: string) =>
      env.find((e) => e.name === envName(field))?.valueFrom?.secretKeyRef;
    const accessRef = keyRef('accesskey');
    const fromEnv = container.envFrom?.find((e) => e.secretRef?.name !== undefined)?.secretRef
      ?.name;
    const secretName =
      accessRef?.name ??
      (typeof block['accesskey'] === 'string' ? KEYS_IN_CONFIG : (fromEnv ?? IAM_ROLE));
    return {
      deployment,
      container,
      config,
      storage: {
        bucket: value('bucket'),
        region: value('region'),
        regionEndpoint: value('regionendpoint'),
        rootDirectory: value('rootdirectory'),
        secretName,
      },
      keyNames: {
        ...(accessRef?.key === undefined ? {} : { accessKey: accessRef.key }),
        ...(keyRef('secretkey')?.key === undefined ? {} : { secretKey: keyRef('secretkey')?.key }),
      },
    };
  };

  /**
   * The claim a filesystem-driver registry keeps its blobs on (the chart's
   * `persistence.enabled`): the PVC mounted at or above `storage.filesystem.rootdirectory`.
   */
  const claimOf = (
    text: string,
    container: V1Container,
    deployment: V1Deployment,
  ): ClaimRef | undefined => {
    const filesystem = parseDocument(text).getIn(['storage', 'filesystem']);
    if (filesystem === undefined) return undefined;
    const fs = isMap(filesystem) ? (filesystem.toJSON() as Record<string, unknown>) : {};
    const root =
      typeof fs['rootdirectory'] === 'string' ? fs['rootdirectory'] : '/var/lib/registry';
    const mount = container.volumeMounts?.find((m) => {
      const path = m.mountPath.replace(/\/$/, '');
      return root === path || root.startsWith(`${path}/`);
    });
    const claimName = deployment.spec?.template.spec?.volumes?.find((v) => v.name === mount?.name)
      ?.persistentVolumeClaim?.claimName;
    if (mount === undefined || claimName === undefined)
      throw new ClusterError(
        `the registry of Deployment ${where} stores on the filesystem at ${root}, and no PersistentVolumeClaim is mounted there; regvault backs up registries on S3 or on a claim`,
      );
    const below = posix.relative(mount.mountPath.replace(/\/$/, ''), root);
    return {
      claimName,
      namespace,
      subPath: posix.join(mount.subPath ?? '', below).replace(/^\.$/, ''),
    };
  };

  const workloadOf = (found: Found) =>
    registryWorkload(kc, {
      namespace,
      podSelector: Object.entries(found.deployment.spec?.selector.matchLabels ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(','),
      deployment: settings.deployment,
      container: found.container.name,
      storageErrorPatterns: settings.storageErrorPatterns,
    });

  /** The config text with `next` in storage.s3 (fields the env overrides are left to the env). */
  const configWith = (found: Found, next: StorageRef): string => {
    const doc = parseDocument(found.config.text);
    const env = found.container.env ?? [];
    for (const [field, key] of Object.entries(FIELDS)) {
      if (env.some((e) => e.name === envName(field) && e.value !== undefined)) continue;
      if (next[key] === '' && !doc.hasIn(['storage', 's3', field])) continue;
      doc.setIn(['storage', 's3', field], next[key]);
    }
    return doc.toString();
  };

  /** The Deployment with `next` in its env, its keys from `next`'s Secret, and the new checksum. */
  const deploymentWith = (found: Found, next: StorageRef, checksum: string): V1Deployment => {
    const deployment = structuredClone(found.deployment);
    const template = deployment.spec?.template;
    if (template === undefined) return deployment;
    template.metadata = {
      ...template.metadata,
      annotations: { ...template.metadata?.annotations, [settings.checksumAnnotation]: checksum },
    };
    const container = template.spec?.containers.find((c) => c.name === found.container.name);
    for (const variable of container?.env ?? []) {
      const field = Object.entries(FIELDS).find(([f]) => envName(f) === variable.name);
      if (field !== undefined && variable.value !== undefined) variable.value = next[field[1]];
      const ref = variable.valueFrom?.secretKeyRef;
      if (ref !== undefined && ref.name === found.storage.secretName) ref.name = next.secretName;
    }
    for (const from of container?.envFrom ?? [])
      if (from.secretRef?.name === found.storage.secretName) from.secretRef.name = next.secretName;
    return deployment;
  };

  /** Points the Deployment's data volume at `next`'s claim; the new checksum rolls the pods. */
  const switchClaim = async (
    found: Found,
    next: StorageRef,
    base: Omit<SwitchResult, 'changed'>,
  ): Promise<SwitchResult> => {
    const [from, to] = [found.storage.claim, next.claim];
    if (from === undefined || to === undefined || to.subPath !== from.subPath)
      throw new InputError(
        `the registry of Deployment ${where} cannot move between a bucket and a claim`,
        [
          from === undefined
            ? 'target: it stores in a bucket; restore into a bucket (--target-bucket)'
            : `target: it stores on claim ${from.claimName}${from.subPath === '' ? '' : ` at ${from.subPath}`}; restore into another claim (--target-claim) at the same path`,
        ],
      );
    const deployment = structuredClone(found.deployment);
    const template = deployment.spec?.template;
    const volume = template?.spec?.volumes?.find(
      (v) => v.persistentVolumeClaim?.claimName === from.claimName,
    );
    if (template === undefined || volume?.persistentVolumeClaim === undefined)
      throw new ClusterError(`Deployment ${where} no longer mounts claim ${from.claimName}`);
    volume.persistentVolumeClaim.claimName = to.claimName;
    const checksum = createHash('sha256')
      .update(`${found.config.text}\n${to.claimName}`)
      .digest('hex');
    template.metadata = {
      ...template.metadata,
      annotations: { ...template.metadata?.annotations, [settings.checksumAnnotation]: checksum },
    };
    await kubeCall(server, call('update', 'deployments', settings.deployment), () =>
      apps.replaceNamespacedDeployment({ name: settings.deployment, namespace, body: deployment }),
    );
    return { ...base, changed: true };
  };

  const writeConfig = (found: Found, text: string) => {
    const { kind, name: configName, object } = found.config;
    const data = (object['data'] ?? {}) as Record<string, string>;
    const body = {
      ...object,
      data: {
        ...data,
        [settings.configKey]: kind === 'Secret' ? Buffer.from(text).toString('base64') : text,
      },
    };
    return kind === 'ConfigMap'
      ? kubeCall(server, call('update', 'configmaps', configName), () =>
          core.replaceNamespacedConfigMap({ name: configName, namespace, body: body as never }),
        )
      : kubeCall(server, call('update', 'secrets', configName), () =>
          core.replaceNamespacedSecret({ name: configName, namespace, body: body as never }),
        );
  };

  return {
    name,

    async discover() {
      const found = await find();
      return {
        resourceName: where,
        resourceVersion: found.deployment.metadata?.resourceVersion ?? '',
        storage: found.storage,
      };
    },

    async readStorageKeys(secretName) {
      const found = await find();
      if (secretName === IAM_ROLE)
        throw new ClusterError(
          `the registry of Deployment ${where} has no S3 keys (an IAM role, or keys outside its config): regvault cannot read them; let the vault's identity read its bucket (the registryBucketNames stack setting), or put keys in a Secret the container reads`,
        );
      const names = {
        accessKey: [
          ...(found.keyNames.accessKey === undefined ? [] : [found.keyNames.accessKey]),
          ...settings.secretKeyNames.accessKey,
        ],
        secretKey: [
          ...(found.keyNames.secretKey === undefined ? [] : [found.keyNames.secretKey]),
          ...settings.secretKeyNames.secretKey,
        ],
      };
      if (secretName === KEYS_IN_CONFIG) {
        const block = parseDocument(found.config.text).getIn(['storage', 's3']);
        const s3 = isMap(block) ? (block.toJSON() as Record<string, unknown>) : {};
        const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : '').toString('base64');
        return keysFromSecretData(
          { accesskey: b64(s3['accesskey']), secretkey: b64(s3['secretkey']) },
          { accessKey: ['accesskey'], secretKey: ['secretkey'] },
          { namespace, secretName: `${found.config.name} (${settings.configKey})` },
        );
      }
      const secret = await workloadOf(found).readSecret(secretName);
      return keysFromSecretData(secret.data ?? {}, names, { namespace, secretName });
    },

    async captureConfig({ includeSecret }) {
      const found = await find();
      const files = [
        capturedFile(
          `deployment-${settings.deployment}.yaml`,
          'apps/v1',
          'Deployment',
          found.deployment,
        ),
      ];
      if (found.config.kind === 'ConfigMap' || includeSecret)
        files.push(
          capturedFile(
            `${found.config.kind.toLowerCase()}-${found.config.name}.yaml`,
            'v1',
            found.config.kind,
            found.config.object,
          ),
        );
      const secretName = found.storage.secretName;
      if (
        includeSecret &&
        secretName !== '' &&
        !secretName.startsWith('(') &&
        secretName !== found.config.name
      ) {
        const secret = await workloadOf(found).readSecret(secretName);
        files.push(capturedFile(`secret-${secretName}.yaml`, 'v1', 'Secret', secret));
      }
      return files;
    },

    async requiredObjects() {
      const found = await find();
      const { secretName, claim } = found.storage;
      return [
        { apiVersion: 'apps/v1', kind: 'Deployment', namespace, name: settings.deployment },
        { apiVersion: 'v1', kind: found.config.kind, namespace, name: found.config.name },
        ...(claim !== undefined
          ? [{ apiVersion: 'v1', kind: 'PersistentVolumeClaim', namespace, name: claim.claimName }]
          : secretName.startsWith('(')
            ? []
            : [{ apiVersion: 'v1', kind: 'Secret', namespace, name: secretName }]),
        {
          apiVersion: 'v1',
          kind: 'Service',
          namespace,
          name: settings.service ?? settings.deployment,
        },
      ];
    },

    async switchStorage(next) {
      const attempt = async (): Promise<SwitchResult> => {
        const found = await find();
        const podsBefore = (await workloadOf(found).listPods()).map((p) => p.metadata?.name ?? '');
        const base = {
          resourceName: where,
          previous: found.storage,
          current: next,
          podsBefore,
          switchedAt: new Date().toISOString(),
        };
        if (sameStorage(found.storage, next)) return { ...base, changed: false };
        if (found.storage.claim !== undefined || next.claim !== undefined)
          return switchClaim(found, next, base);
        if (
          next.secretName !== found.storage.secretName &&
          found.storage.secretName.startsWith('(')
        )
          throw new InputError(`the registry of Deployment ${where} takes no keys from a Secret`, [
            `target.secretName: its keys are ${found.storage.secretName === KEYS_IN_CONFIG ? `in ${found.config.name}'s ${settings.configKey}` : 'an IAM role'}; restore into a bucket those keys reach, without --target-secret`,
          ]);
        const text = configWith(found, next);
        // The config first: a Deployment rolled onto the old config would serve the old bucket.
        await writeConfig(found, text);
        const checksum = createHash('sha256').update(text).digest('hex');
        await kubeCall(server, call('update', 'deployments', settings.deployment), () =>
          apps.replaceNamespacedDeployment({
            name: settings.deployment,
            namespace,
            body: deploymentWith(found, next, checksum),
          }),
        );
        return { ...base, changed: true };
      };
      return retryOnConflict(attempt);
    },

    async rolloutStatus({ podsBefore }) {
      return workloadOf(await find()).rolloutStatus(podsBefore);
    },
  };
}
