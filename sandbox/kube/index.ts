/**
 * A fake ACP cluster for tests and demos: the fake apiserver, the registry
 * controller with its Service URL, a kubeconfig on disk and a seeding helper
 * that creates what ACP's image-registry plugin leaves in a real cluster.
 */
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { waitFor } from '../process.ts';
import { type S3Storage, startRegistry } from '../registry/index.ts';
import {
  MODULE_LABEL,
  REGISTRY_APP,
  REGISTRY_NAMESPACE,
  type RegistryController,
  type RegistryStarter,
  registryDeployment,
  registryService,
  startRegistryController,
} from './controller.ts';
import { CONFIG_DIRECTORY, distributionWorkload } from './distribution.ts';
import { type JobController, startJobController } from './jobs.ts';
import { type KubeconfigOptions, writeKubeconfig } from './kubeconfig.ts';
import { BuiltIn, type ModuleInfoResource } from './resources.ts';
import { type KubeApiServer, startKubeApiServer } from './server.ts';
import type { KubeObject } from './store.ts';
import { type ImageCheck, startWorkloadController, type WorkloadController } from './workloads.ts';

export type { RegistryConfig, RegistryInstance, RegistryStarter } from './controller.ts';
export { kubeconfigYaml, writeKubeconfig, writeKubeconfigContexts } from './kubeconfig.ts';
export type { ForbidRule, KubeApiServer } from './server.ts';
export { startKubeApiServer } from './server.ts';
export type { ImageCheck, WorkloadController } from './workloads.ts';

/** Runs the real registry (`sandbox/registry`) on S3 for each pod the controller creates. */
export const realRegistryStarter: RegistryStarter = async (config) => {
  const handle = await startRegistry({
    storage:
      config.directory === undefined
        ? { kind: 's3', ...config }
        : { kind: 'filesystem', directory: config.directory },
    waitReady: false,
  });
  return {
    url: handle.url,
    logs: () => handle.process.logs.lines(),
    running: () => handle.process.running(),
    stop: () => handle.stop(),
  };
};

export interface FakeClusterOptions {
  /** Bearer token the apiserver demands; turns on HTTPS (kubectl sends tokens over TLS only). */
  readonly token?: string;
  /** Serve HTTPS even without a token. */
  readonly tls?: boolean;
  readonly moduleInfo?: ModuleInfoResource;
  /** Defaults to the real registry process. */
  readonly startRegistry?: RegistryStarter;
  /** Whether a workload's images can be pulled; defaults to registries on 127.0.0.1 serving them. */
  readonly imageCheck?: ImageCheck;
}

export interface SeedOptions extends S3Storage {
  /** ModuleInfo name. */
  readonly name?: string;
  readonly secretName?: string;
  /** Data keys of the Secret; the operator reads `access-key-id` and `secret-access-key`. */
  readonly secretKeyNames?: { readonly accessKey: string; readonly secretKey: string };
}

export interface DistributionSeed extends S3Storage {
  /** Namespace of the registry (made if missing); `registry` unless given. */
  readonly namespace?: string;
  /** The Deployment's name (the chart's fullname); the ConfigMap is `<name>-config`, the Secret `<name>-secret`. */
  readonly name?: string;
  /** Put config.yml in a Secret instead of a ConfigMap. */
  readonly configInSecret?: boolean;
  /**
   * `harbor`: lay it out as the Harbor chart's registry component does
   * (Deployment, ConfigMap and Secret all `<name>`, config.yml mounted at
   * /etc/registry/config.yml, the S3 keys as REGISTRY_STORAGE_S3_* in the
   * Secret the container takes whole through envFrom, a registryctl
   * container beside it); the docker-registry chart's otherwise.
   */
  readonly layout?: 'chart' | 'harbor';
  /** Data keys of the keys Secret; the chart's `s3AccessKey` / `s3SecretKey` unless given. */
  readonly secretKeyNames?: { readonly accessKey: string; readonly secretKey: string };
  /**
   * The chart's `persistence.enabled`: this claim (made if missing) mounted at
   * /var/lib/registry and the filesystem driver on it; the S3 fields are then unused.
   */
  readonly claim?: string;
}

/** A Distribution registry the cluster runs as a plain Deployment. */
export interface DistributionRegistry {
  /** Its Service URL: a proxy to whichever of its pods is ready. */
  readonly registryUrl: string;
  readonly controller: RegistryController;
  /** Waits until one pod of the current template runs, Ready; returns its name. */
  waitForReadyPod(timeoutMs?: number): Promise<string>;
}

export interface FakeCluster {
  /** The apiserver URL (`http://` or, with a token, `https://127.0.0.1:PORT`). */
  readonly api: string;
  /** The registry's Service URL: a proxy to whichever registry pod is ready. */
  readonly registryUrl: string;
  /** A kubeconfig for this cluster (with the token and CA, if any). */
  readonly kubeconfigPath: string;
  readonly server: KubeApiServer;
  readonly controller: RegistryController;
  /** Keeps the status of Deployments and StatefulSets (other than the registry's own). */
  readonly workloads: WorkloadController;
  /** Runs each Job as a local process with its claims' directories (jobs.ts). */
  readonly jobs: JobController;
  /** Writes another kubeconfig for this cluster, e.g. with a wrong token. */
  writeKubeconfig(path: string, options?: Partial<KubeconfigOptions>): Promise<string>;
  /** Creates the namespace, Secret, ModuleInfo, Deployment and Service ACP would have; returns the ModuleInfo. */
  seedAcpRegistry(options: SeedOptions): Promise<KubeObject>;
  /** Waits until the rollout is complete: one pod, from the current config, Ready. Returns its name. */
  waitForReadyPod(timeoutMs?: number): Promise<string>;
  /**
   * Creates a Bound PersistentVolumeClaim in the registry's namespace and
   * the empty directory that is its volume; returns the directory (a pod that
   * mounts the claim reads and writes there).
   */
  createClaim(name: string): Promise<string>;
  /**
   * Creates what the docker-registry Helm chart installs (a ConfigMap with
   * config.yml, a Secret with the S3 keys, a Deployment mounting the one and
   * reading the other through env, a Service) and runs its pods.
   */
  seedDistributionRegistry(seed: DistributionSeed): Promise<DistributionRegistry>;
  stop(): Promise<void>;
}

/** Waits until `controller` runs one pod, from its current revision, Ready; returns its name. */
async function readyPodOf(controller: RegistryController, timeoutMs: number): Promise<string> {
  let name = '';
  await waitFor(
    'registry rollout',
    async () => {
      await controller.sync();
      const pods = controller.pods();
      const only = pods[0];
      if (
        pods.length !== 1 ||
        only === undefined ||
        !only.ready ||
        only.hash !== controller.desiredHash()
      )
        return false;
      name = only.name;
      return true;
    },
    { timeoutMs, intervalMs: 100 },
  );
  return name;
}

/** Starts the apiserver and the registry controller; nothing is seeded yet. */
export async function startFakeCluster(options: FakeClusterOptions = {}): Promise<FakeCluster> {
  const server = await startKubeApiServer({
    ...(options.token === undefined ? {} : { token: options.token }),
    ...(options.tls === undefined ? {} : { tls: options.tls }),
    ...(options.moduleInfo === undefined ? {} : { moduleInfo: options.moduleInfo }),
  });
  const dir = await mkdtemp(join(tmpdir(), 'regvault-kube-'));
  let controller: RegistryController | undefined;
  let jobs: JobController | undefined;
  /** `namespace/name` of the Deployments a registry controller keeps, and those controllers. */
  const registryDeployments = new Set([`${REGISTRY_NAMESPACE}/${REGISTRY_APP}`]);
  const others: RegistryController[] = [];
  const workloads = startWorkloadController({
    server,
    ...(options.imageCheck === undefined ? {} : { imageCheck: options.imageCheck }),
    skip: (object) =>
      registryDeployments.has(`${object.metadata.namespace ?? ''}/${object.metadata.name}`),
  });
  try {
    // A PersistentVolumeClaim of the sandbox is a directory it owns, made when first mounted.
    const claimPath = (namespace: string, claimName: string) =>
      join(dir, 'volumes', namespace, claimName);
    const claimDirectory = (namespace: string, claimName: string) => {
      if (server.store.get(BuiltIn.persistentvolumeclaims, namespace, claimName) === undefined)
        return undefined;
      const path = claimPath(namespace, claimName);
      mkdirSync(path, { recursive: true });
      return path;
    };
    jobs = startJobController({ server, claimDirectory });
    controller = await startRegistryController({
      server,
      startRegistry: options.startRegistry ?? realRegistryStarter,
      claimDirectory,
    });
    const base: KubeconfigOptions = {
      server: server.url,
      ...(options.token === undefined ? {} : { token: options.token }),
      ...(server.caCert === undefined ? {} : { certificateAuthority: server.caCert }),
    };
    const kubeconfigPath = await writeKubeconfig(join(dir, 'kubeconfig'), base);
    const started = controller;
    const { store } = server;

    const createOrReplace = (kind: (typeof BuiltIn)[keyof typeof BuiltIn], object: KubeObject) => {
      const existing = store.get(kind, object.metadata.namespace, object.metadata.name);
      return existing === undefined
        ? store.create(kind, object)
        : store.replace(kind, { ...object, metadata: { ...object.metadata, resourceVersion: '' } });
    };

    return {
      api: server.url,
      registryUrl: controller.registryUrl,
      kubeconfigPath,
      server,
      controller,
      workloads,
      jobs,
      writeKubeconfig: (path, overrides = {}) => writeKubeconfig(path, { ...base, ...overrides }),

      async seedAcpRegistry(seed) {
        const secretName = seed.secretName ?? 'registry-s3-secret';
        const keys = seed.secretKeyNames ?? {
          accessKey: 'access-key-id',
          secretKey: 'secret-access-key',
        };
        const b64 = (value: string) => Buffer.from(value).toString('base64');
        if (store.get(BuiltIn.namespaces, undefined, REGISTRY_NAMESPACE) === undefined) {
          store.create(BuiltIn.namespaces, {
            apiVersion: 'v1',
            kind: 'Namespace',
            metadata: {
              name: REGISTRY_NAMESPACE,
              labels: { 'kubernetes.io/metadata.name': REGISTRY_NAMESPACE },
            },
            spec: { finalizers: ['kubernetes'] },
            status: { phase: 'Active' },
          });
        }
        createOrReplace(BuiltIn.secrets, {
          apiVersion: 'v1',
          kind: 'Secret',
          metadata: {
            name: secretName,
            namespace: REGISTRY_NAMESPACE,
            labels: { [MODULE_LABEL]: REGISTRY_APP },
          },
          type: 'Opaque',
          data: { [keys.accessKey]: b64(seed.accessKey), [keys.secretKey]: b64(seed.secretKey) },
        });
        createOrReplace(
          BuiltIn.deployments,
          registryDeployment(REGISTRY_NAMESPACE, 'build-harbor.alauda.cn/3rdparty/registry:v2.8.3'),
        );
        createOrReplace(BuiltIn.services, registryService(REGISTRY_NAMESPACE, started.registryUrl));
        const name = seed.name ?? REGISTRY_APP;
        const moduleInfo: KubeObject = {
          apiVersion: `${server.moduleInfo.group}/${server.moduleInfo.version}`,
          kind: server.moduleInfo.kind,
          metadata: {
            name,
            labels: {
              [MODULE_LABEL]: REGISTRY_APP,
              'cpaas.io/cluster-name': 'global',
              'cpaas.io/module-type': 'plugin',
              'cpaas.io/product': 'Platform-Center',
            },
            annotations: { 'cpaas.io/display-name': '{"en": "Image Registry", "zh": "镜像仓库"}' },
          },
          spec: {
            version: 'v4.0.3',
            config: {
              image: 'build-harbor.alauda.cn/3rdparty/registry:v2.8.3',
              replicas: 1,
              storageType: 's3',
              s3storage: {
                bucket: seed.bucket,
                regionEndpoint: seed.endpoint,
                region: seed.region,
                secretName,
                ...(seed.rootDirectory === undefined ? {} : { rootdirectory: seed.rootDirectory }),
              },
              service: { type: 'ClusterIP', port: 5000 },
            },
          },
          status: {
            phase: 'Running',
            version: 'v4.0.3',
            installedVersion: 'v4.0.3',
            conditions: [
              {
                type: 'Ready',
                status: 'True',
                reason: 'Installed',
                lastTransitionTime: new Date().toISOString(),
              },
            ],
          },
        };
        const created = createOrReplace(server.moduleInfo, moduleInfo);
        await started.sync();
        return created;
      },

      async createClaim(name) {
        const path = claimPath(REGISTRY_NAMESPACE, name);
        await mkdir(path, { recursive: true });
        createOrReplace(BuiltIn.persistentvolumeclaims, {
          apiVersion: 'v1',
          kind: 'PersistentVolumeClaim',
          metadata: { name, namespace: REGISTRY_NAMESPACE },
          spec: {
            accessModes: ['ReadWriteOnce'],
            resources: { requests: { storage: '10Gi' } },
            volumeName: `pvc-${name}`,
          },
          status: { phase: 'Bound', accessModes: ['ReadWriteOnce'], capacity: { storage: '10Gi' } },
        });
        await started.sync();
        return path;
      },

      waitForReadyPod: (timeoutMs = 30_000) => readyPodOf(started, timeoutMs),

      async seedDistributionRegistry(seed) {
        const harbor = seed.layout === 'harbor';
        const namespace = seed.namespace ?? (harbor ? 'harbor' : 'registry');
        const name = seed.name ?? (harbor ? 'harbor-registry' : 'docker-registry');
        const keys =
          seed.secretKeyNames ??
          (harbor
            ? {
                accessKey: 'REGISTRY_STORAGE_S3_ACCESSKEY',
                secretKey: 'REGISTRY_STORAGE_S3_SECRETKEY',
              }
            : { accessKey: 's3AccessKey', secretKey: 's3SecretKey' });
        const b64 = (value: string) => Buffer.from(value).toString('base64');
        const labels = { app: name, release: name };
        if (store.get(BuiltIn.namespaces, undefined, namespace) === undefined)
          store.create(BuiltIn.namespaces, {
            apiVersion: 'v1',
            kind: 'Namespace',
            metadata: { name: namespace, labels: { 'kubernetes.io/metadata.name': namespace } },
            spec: { finalizers: ['kubernetes'] },
            status: { phase: 'Active' },
          });
        const onClaim = seed.claim !== undefined && !harbor;
        if (
          onClaim &&
          store.get(BuiltIn.persistentvolumeclaims, namespace, seed.claim ?? '') === undefined
        )
          createOrReplace(BuiltIn.persistentvolumeclaims, {
            apiVersion: 'v1',
            kind: 'PersistentVolumeClaim',
            metadata: { name: seed.claim ?? '', namespace, labels },
            spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '10Gi' } } },
            status: {
              phase: 'Bound',
              accessModes: ['ReadWriteOnce'],
              capacity: { storage: '10Gi' },
            },
          });
        const configYml = stringify({
          version: 0.1,
          log: { fields: { service: 'registry' } },
          storage: onClaim
            ? { filesystem: { rootdirectory: '/var/lib/registry' } }
            : {
                s3: {
                  bucket: seed.bucket,
                  region: seed.region,
                  regionendpoint: seed.endpoint,
                  ...(seed.rootDirectory === undefined
                    ? {}
                    : { rootdirectory: seed.rootDirectory }),
                  secure: false,
                  v4auth: true,
                },
                redirect: { disable: true },
              },
          http: { addr: ':5000', headers: { 'X-Content-Type-Options': ['nosniff'] } },
        });
        const configName = harbor ? name : `${name}-config`;
        createOrReplace(
          seed.configInSecret === true ? BuiltIn.secrets : BuiltIn.configmaps,
          seed.configInSecret === true
            ? {
                apiVersion: 'v1',
                kind: 'Secret',
                metadata: { name: configName, namespace, labels },
                type: 'Opaque',
                data: { 'config.yml': b64(configYml) },
              }
            : {
                apiVersion: 'v1',
                kind: 'ConfigMap',
                metadata: { name: configName, namespace, labels },
                data: { 'config.yml': configYml },
              },
        );
        const secretName = harbor ? name : `${name}-secret`;
        createOrReplace(BuiltIn.secrets, {
          apiVersion: 'v1',
          kind: 'Secret',
          metadata: { name: secretName, namespace, labels },
          type: 'Opaque',
          data: {
            [harbor ? 'REGISTRY_HTTP_SECRET' : 'haSharedSecret']: b64('sandbox-shared-secret'),
            [keys.accessKey]: b64(seed.accessKey),
            [keys.secretKey]: b64(seed.secretKey),
          },
        });
        const fromSecret = (variable: string, key: string) => ({
          name: variable,
          valueFrom: { secretKeyRef: { name: secretName, key } },
        });
        const configVolume =
          seed.configInSecret === true
            ? { name: `${name}-config`, secret: { secretName: configName } }
            : { name: `${name}-config`, configMap: { name: configName } };
        registryDeployments.add(`${namespace}/${name}`);
        createOrReplace(BuiltIn.deployments, {
          apiVersion: 'apps/v1',
          kind: 'Deployment',
          metadata: { name, namespace, labels: { ...labels, chart: 'docker-registry-2.2.3' } },
          spec: {
            replicas: 1,
            selector: { matchLabels: labels },
            strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
            template: {
              metadata: {
                labels,
                annotations: {
                  [harbor ? 'checksum/configmap' : 'checksum/config']: createHash('sha256')
                    .update(configYml)
                    .digest('hex'),
                },
              },
              spec: {
                containers: harbor
                  ? [
                      {
                        name: 'registry',
                        image: 'goharbor/registry-photon:v2.10.0',
                        ports: [{ containerPort: 5000 }],
                        envFrom: [{ secretRef: { name: secretName } }],
                        volumeMounts: [
                          {
                            name: 'registry-config',
                            mountPath: '/etc/registry/config.yml',
                            subPath: 'config.yml',
                          },
                        ],
                      },
                      { name: 'registryctl', image: 'goharbor/harbor-registryctl:v2.10.0' },
                    ]
                  : [
                      {
                        name: 'docker-registry',
                        image: 'registry:2.8.1',
                        command: ['/bin/registry', 'serve', `${CONFIG_DIRECTORY}/config.yml`],
                        ports: [{ containerPort: 5000 }],
                        env: [
                          fromSecret('REGISTRY_HTTP_SECRET', 'haSharedSecret'),
                          ...(onClaim
                            ? []
                            : [
                                fromSecret('REGISTRY_STORAGE_S3_ACCESSKEY', keys.accessKey),
                                fromSecret('REGISTRY_STORAGE_S3_SECRETKEY', keys.secretKey),
                              ]),
                        ],
                        volumeMounts: [
                          { name: `${name}-config`, mountPath: CONFIG_DIRECTORY },
                          ...(onClaim ? [{ name: 'data', mountPath: '/var/lib/registry' }] : []),
                        ],
                      },
                    ],
                volumes: [
                  harbor ? { ...configVolume, name: 'registry-config' } : configVolume,
                  ...(onClaim
                    ? [{ name: 'data', persistentVolumeClaim: { claimName: seed.claim } }]
                    : []),
                ],
              },
            },
          },
        });
        const controller = await startRegistryController({
          server,
          startRegistry: options.startRegistry ?? realRegistryStarter,
          workload: distributionWorkload(server, namespace, name, claimDirectory),
        });
        others.push(controller);
        createOrReplace(BuiltIn.services, {
          ...registryService(namespace, controller.registryUrl),
          metadata: {
            name,
            namespace,
            labels,
            annotations: { 'sandbox.regvault.dev/url': controller.registryUrl },
          },
          spec: {
            type: 'ClusterIP',
            clusterIP: '127.0.0.1',
            selector: labels,
            ports: [{ name: 'http', port: 5000, targetPort: 5000, protocol: 'TCP' }],
          },
        });
        return {
          registryUrl: controller.registryUrl,
          controller,
          waitForReadyPod: (timeoutMs = 30_000) => readyPodOf(controller, timeoutMs),
        };
      },

      /** Stops the controller (and every registry process), the proxy and the apiserver; safe to call twice. */
      async stop() {
        workloads.stop();
        await jobs?.stop();
        await Promise.all(others.map((other) => other.stop()));
        await started.stop();
        await server.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    workloads.stop();
    await jobs?.stop();
    await controller?.stop();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
