/**
 * The sandbox's "registry operator": turns the image-registry ModuleInfo and
 * its S3 Secret into registry processes shown as pods, rolls them like a
 * Deployment (new pod first, old one removed once the new one is Ready) and
 * keeps a stable reverse proxy, the "Service URL", pointed at the ready one.
 */
import { createHash, randomInt } from 'node:crypto';
import { join } from 'node:path';
import { LOOPBACK } from '../process.ts';
import { observeProbe, type Readiness, unready } from './readiness.ts';
import { BuiltIn } from './resources.ts';
import type { KubeApiServer } from './server.ts';
import { startServiceProxy } from './service-proxy.ts';
import type { KubeObject, StoreEvent } from './store.ts';

/** What the registry needs to serve from S3. */
export interface RegistryConfig {
  bucket: string;
  endpoint: string;
  region: string;
  accessKey: string;
  secretKey: string;
  rootDirectory?: string;
  /**
   * Set for a registry on a PVC (the ModuleInfo's enabled `persistence`):
   * the claim's directory, served with the filesystem driver; the S3 fields
   * are then ''.
   */
  directory?: string;
}

/** A registry on a directory (a claim's): the filesystem driver, no bucket, no keys. */
export const directoryConfig = (directory: string): RegistryConfig => ({
  bucket: '',
  endpoint: '',
  region: '',
  accessKey: '',
  secretKey: '',
  directory,
});

/** One running registry process, as the controller sees it. */
export interface RegistryInstance {
  url: string;
  logs: () => string[];
  running: () => boolean;
  stop: () => Promise<void>;
}

/** Starts a registry process; resolves once spawned, not necessarily serving yet. */
export type RegistryStarter = (config: RegistryConfig) => Promise<RegistryInstance>;

export const REGISTRY_NAMESPACE = 'cpaas-system';
export const REGISTRY_APP = 'image-registry';
export const MODULE_LABEL = 'cpaas.io/module-name';

/**
 * A registry workload the controller runs: where its pods live, what they
 * are labelled, and what the cluster's objects say they should run. ACP's
 * (a ModuleInfo and its Secret) is the default; the Distribution chart's
 * (a Deployment and its config.yml) is in ./distribution.ts.
 */
export interface RegistryWorkload {
  readonly namespace: string;
  /** The pods' name prefix and `app` label. */
  readonly app: string;
  /** The registry container's name in the pods. */
  readonly container: string;
  /** The Deployment whose status the controller writes. */
  readonly deployment: string;
  /** Labels every pod carries (the Deployment's selector matches them). */
  readonly podLabels: Readonly<Record<string, string>>;
  /** True when a change to this object may change what the pods should run. */
  relevant(event: StoreEvent): boolean;
  /** What the pods should run now, or undefined when nothing asks for a registry. */
  desired(): Desired | undefined;
  /** Objects the controller creates when they are missing (ACP's Deployment and Service). */
  ensure?(
    registryUrl: string,
  ): ReadonlyArray<readonly [typeof BuiltIn.deployments | typeof BuiltIn.services, KubeObject]>;
}

export interface RegistryControllerOptions {
  readonly server: KubeApiServer;
  readonly startRegistry: RegistryStarter;
  readonly namespace?: string;
  /** The workload to run; ACP's by default. */
  readonly workload?: RegistryWorkload;
  /** The directory a PersistentVolumeClaim stands for (the sandbox's volumes); without it, ACP's claims are not served. */
  readonly claimDirectory?: (namespace: string, claimName: string) => string | undefined;
  /** How often pods are probed and status written. */
  readonly intervalMs?: number;
}

export interface ControllerPod {
  readonly name: string;
  readonly hash: string;
  readonly ready: boolean;
  readonly url: string | undefined;
}

export interface RegistryController {
  /** The stable proxy in front of whichever registry pod is ready. */
  readonly registryUrl: string;
  /** Pods the controller owns, oldest first. */
  pods(): readonly ControllerPod[];
  /** The config hash the newest pod was made from (undefined before any ModuleInfo). */
  desiredHash(): string | undefined;
  /** Runs one reconcile-and-probe round now. */
  sync(): Promise<void>;
  stop(): Promise<void>;
}

interface PodState extends Readiness {
  name: string;
  hash: string;
  instance: RegistryInstance | undefined;
  /** Why the container cannot start (crash loop); its log. */
  crash: string[] | undefined;
  startedAt: number;
}

const ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';
const randomSuffix = (length: number) =>
  Array.from({ length }, () => ALPHABET[randomInt(ALPHABET.length)]).join('');
const hashOf = (value: unknown) =>
  [...createHash('sha256').update(JSON.stringify(value)).digest()]
    .slice(0, 10)
    .map((byte) => ALPHABET[byte % ALPHABET.length])
    .join('');

const record = (value: unknown): Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
const text = (value: unknown): string | undefined =>
  typeof value === 'string' && value !== '' ? value : undefined;
const timestamp = (ms = Date.now()) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/**
 * A pod as the API shows it once its deletion began: still listed, with a
 * deletion time and grace period, until its containers have stopped.
 */
export function terminating(pod: KubeObject): KubeObject {
  return {
    ...pod,
    metadata: { ...pod.metadata, deletionTimestamp: timestamp(), deletionGracePeriodSeconds: 30 },
  };
}
const logLine = (level: string, msg: string) =>
  `time="${new Date().toISOString()}" level=${level} msg="${msg}"`;

/** What a registry's pods should run: the config hash that names the revision, and the pod's container. */
export interface Desired {
  readonly hash: string;
  readonly image: string;
  /** The container's env as the pod shows it (values and secretKeyRefs, never key values). */
  readonly env: ReadonlyArray<Record<string, unknown>>;
  readonly config: RegistryConfig | undefined;
  readonly problem: string | undefined;
  /** The PersistentVolumeClaim the registry is on, when it is on one: the pod mounts it. */
  readonly claim?: string;
}

/** The claim an enabled persistence block names (the chart's `existingClaim`, or `claimName`/`pvcName`). */
const claimNameOf = (persistence: Record<string, unknown>) =>
  text(persistence['existingClaim']) ??
  text(persistence['claimName']) ??
  text(persistence['pvcName']);

/** Where the registry container keeps its data on a claim. */
const CLAIM_MOUNT = '/var/lib/registry';

export const hashOfConfig = (value: unknown) => hashOf(value);

/** What pods of `base` run when their config is wrong: a crash that logs `problem`. */
export const failingWith =
  (base: Pick<Desired, 'hash' | 'image' | 'env'>) =>
  (problem: string): Desired => ({ ...base, config: undefined, problem });
export { record as recordOf, text as textOf };

/** ACP's workload: the image-registry ModuleInfo's s3storage and the Secret it names. */
export function acpWorkload(
  server: KubeApiServer,
  namespace = REGISTRY_NAMESPACE,
  claimDirectory?: RegistryControllerOptions['claimDirectory'],
): RegistryWorkload {
  const { store } = server;
  return {
    namespace,
    app: REGISTRY_APP,
    container: 'registry',
    deployment: REGISTRY_APP,
    podLabels: { app: REGISTRY_APP },
    relevant: ({ ref, object }) =>
      (ref.group === server.moduleInfo.group && ref.resource === server.moduleInfo.resource) ||
      (ref.resource === 'secrets' && object.metadata.namespace === namespace) ||
      (ref.resource === 'persistentvolumeclaims' && object.metadata.namespace === namespace),
    ensure: (registryUrl) => [
      [BuiltIn.deployments, registryDeployment(namespace)],
      [BuiltIn.services, registryService(namespace, registryUrl)],
    ],
    desired() {
      const module = store
        .list(server.moduleInfo)
        .find((object) => object.metadata.labels?.[MODULE_LABEL] === REGISTRY_APP);
      if (module === undefined) return undefined;
      const spec = record(module['spec']);
      const s3 = record(record(spec['config'])['s3storage']);
      const image = text(record(spec['config'])['image']) ?? 'registry:2';
      const persistence = record(record(spec['config'])['persistence']);
      const storageType = text(record(spec['config'])['storageType']);
      if (storageType === undefined ? persistence['enabled'] === true : storageType !== 's3')
        return onClaim(persistence, image);
      const secretName = text(s3['secretName']);
      const secret =
        secretName === undefined ? undefined : store.get(BuiltIn.secrets, namespace, secretName);
      const data = record(secret?.['data']);
      const decode = (key: string) => {
        const value = text(data[key]);
        return value === undefined ? undefined : Buffer.from(value, 'base64').toString('utf8');
      };
      const hash = hashOf({ s3, data, image });
      const env = acpEnv(s3);
      const failed = failingWith({ hash, image, env });

      const missing = ['bucket', 'regionEndpoint', 'region', 'secretName'].filter(
        (key) => text(s3[key]) === undefined,
      );
      if (missing.length > 0)
        return failed(`s3storage is incomplete: missing ${missing.join(', ')}`);
      if (secret === undefined)
        return failed(`secret "${secretName}" not found in namespace ${namespace}`);
      const accessKey = decode('access-key-id');
      const secretKey = decode('secret-access-key');
      if (accessKey === undefined || secretKey === undefined)
        return failed(`secret "${secretName}" lacks access-key-id or secret-access-key`);
      const rootDirectory = text(s3['rootdirectory']) ?? text(s3['rootDirectory']);
      const config: RegistryConfig = {
        bucket: s3['bucket'] as string,
        endpoint: s3['regionEndpoint'] as string,
        region: s3['region'] as string,
        accessKey,
        secretKey,
        ...(rootDirectory === undefined ? {} : { rootDirectory }),
      };
      return { hash, image, env, config, problem: undefined };
    },
  };

  /** A registry on the claim the persistence block names, served from the claim's directory. */
  function onClaim(persistence: Record<string, unknown>, image: string): Desired {
    const claim = claimNameOf(persistence);
    const hash = hashOf({ persistence, image });
    const env = [
      { name: 'REGISTRY_STORAGE', value: 'filesystem' },
      { name: 'REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY', value: CLAIM_MOUNT },
    ];
    const failed = failingWith({ hash, image, env });
    if (claim === undefined) return failed('persistence is enabled and names no existingClaim');
    const directory = claimDirectory?.(namespace, claim);
    if (directory === undefined)
      return failed(`persistentvolumeclaim "${claim}" not found in namespace ${namespace}`);
    const config = directoryConfig(join(directory, text(persistence['subPath']) ?? ''));
    return { hash, image, env, config, problem: undefined, claim };
  }
}

/** The env ACP's operator gives the registry container: the s3storage fields, the keys by reference. */
function acpEnv(s3: Record<string, unknown>): Array<Record<string, unknown>> {
  const env = Object.entries({
    REGISTRY_STORAGE: 's3',
    REGISTRY_STORAGE_S3_BUCKET: s3['bucket'],
    REGISTRY_STORAGE_S3_REGION: s3['region'],
    REGISTRY_STORAGE_S3_REGIONENDPOINT: s3['regionEndpoint'],
    REGISTRY_STORAGE_S3_ROOTDIRECTORY: s3['rootdirectory'],
  })
    .filter(([, value]) => typeof value === 'string')
    .map(([name, value]) => ({ name, value }));
  const secretName = text(s3['secretName']) ?? '';
  const fromSecret = (name: string, key: string) => ({
    name,
    valueFrom: { secretKeyRef: { name: secretName, key } },
  });
  return [
    ...env,
    fromSecret('REGISTRY_STORAGE_S3_ACCESSKEY', 'access-key-id'),
    fromSecret('REGISTRY_STORAGE_S3_SECRETKEY', 'secret-access-key'),
  ];
}

/** Starts the controller and its proxy; it reconciles at once and on every relevant change. */
export async function startRegistryController(
  options: RegistryControllerOptions,
): Promise<RegistryController> {
  const { server, startRegistry } = options;
  const { store } = server;
  const workload =
    options.workload ?? acpWorkload(server, options.namespace, options.claimDirectory);
  const { namespace, app } = workload;
  const pods: PodState[] = [];
  let dirty = true;
  let stopped = false;
  let currentHash: string | undefined;

  const unsubscribe = store.watch((event: StoreEvent) => {
    if (workload.relevant(event) || (event.ref.resource === 'pods' && event.type === 'DELETED'))
      dirty = true;
  });

  function podObject(state: PodState, want: Desired): KubeObject {
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: state.name,
        namespace,
        generateName: `${app}-${state.hash}-`,
        labels: { ...workload.podLabels, app, 'pod-template-hash': state.hash },
        ownerReferences: [
          {
            apiVersion: 'apps/v1',
            kind: 'ReplicaSet',
            name: `${app}-${state.hash}`,
            controller: true,
          },
        ],
      },
      spec: {
        containers: [
          {
            name: workload.container,
            image: want.image,
            ports: [{ name: 'http', containerPort: 5000, protocol: 'TCP' }],
            env: want.env,
            ...(want.claim === undefined
              ? {}
              : { volumeMounts: [{ name: 'registry-data', mountPath: CLAIM_MOUNT }] }),
            readinessProbe: { httpGet: { path: '/v2/', port: 5000 }, periodSeconds: 1 },
          },
        ],
        ...(want.claim === undefined
          ? {}
          : {
              volumes: [
                { name: 'registry-data', persistentVolumeClaim: { claimName: want.claim } },
              ],
            }),
        restartPolicy: 'Always',
        nodeName: 'sandbox-node',
      },
      status: podStatus(state),
    };
  }

  function podStatus(state: PodState): Record<string, unknown> {
    const exited = state.instance !== undefined && !state.instance.running();
    const startedAt = timestamp(state.startedAt);
    const condition = (type: string, ok: boolean) => ({
      type,
      status: ok ? 'True' : 'False',
      lastProbeTime: null,
    });
    const crashing = state.crash !== undefined;
    const starting = state.instance === undefined && !crashing;
    const containerState = starting
      ? { waiting: { reason: 'ContainerCreating' } }
      : crashing
        ? {
            waiting: {
              reason: 'CrashLoopBackOff',
              message: `back-off restarting failed container ${workload.container} in pod ${state.name}_${namespace}`,
            },
          }
        : exited
          ? { terminated: { exitCode: 1, reason: 'Error', startedAt, finishedAt: timestamp() } }
          : { running: { startedAt } };
    return {
      phase: starting ? 'Pending' : exited ? 'Failed' : 'Running',
      podIP: LOOPBACK,
      hostIP: LOOPBACK,
      startTime: startedAt,
      conditions: [
        condition('Initialized', true),
        condition('Ready', state.ready),
        condition('ContainersReady', state.ready),
        condition('PodScheduled', true),
      ],
      containerStatuses: [
        {
          name: workload.container,
          ready: state.ready,
          started: !starting && !crashing && !exited,
          // A crash loop restarts about every ten seconds here; real back-off grows to five minutes.
          restartCount: crashing ? 1 + Math.floor((Date.now() - state.startedAt) / 10_000) : 0,
          state: containerState,
          image: 'registry:2',
          imageID: '',
        },
      ],
    };
  }

  async function probe(url: string): Promise<boolean> {
    // The readiness probe reads the catalog, not just `/v2/`: that touches the
    // storage, so a registry on a bucket it cannot use stays unready and logs
    // the S3 error (NoSuchBucket, AccessDenied...), which is what regvault's
    // rollout check reads. 401 means auth is on: the process serves.
    try {
      const response = await fetch(`${url}/v2/_catalog?n=1`, {
        signal: AbortSignal.timeout(1_000),
      });
      await response.body?.cancel();
      return response.status === 200 || response.status === 401;
    } catch {
      return false;
    }
  }

  async function createPod(want: Desired): Promise<void> {
    const state: PodState = {
      name: `${app}-${want.hash}-${randomSuffix(5)}`,
      hash: want.hash,
      instance: undefined,
      crash: undefined,
      ...unready(),
      startedAt: Date.now(),
    };
    if (want.config === undefined)
      state.crash = [logLine('fatal', `configuration error: ${want.problem ?? 'unknown'}`)];
    // In the API while its process starts (Pending), as a ReplicaSet's pod is.
    pods.push(state);
    store.create(BuiltIn.pods, podObject(state, want));
    server.setPodLogs(namespace, state.name, () => state.instance?.logs() ?? state.crash ?? []);
    if (want.config === undefined) return;
    try {
      state.instance = await startRegistry(want.config);
    } catch (err) {
      state.crash = (err instanceof Error ? err.message : String(err)).split('\n');
    }
    writeStatus(BuiltIn.pods, state.name, podStatus(state));
  }

  async function removePod(state: PodState): Promise<void> {
    pods.splice(pods.indexOf(state), 1);
    const existing = store.get(BuiltIn.pods, namespace, state.name);
    if (existing !== undefined) store.replace(BuiltIn.pods, terminating(existing));
    // Out of `pods`, the Service sends it nothing new; it finishes what it took.
    if (state.instance !== undefined) await proxy.drain(state.instance.url, 5_000);
    await state.instance?.stop();
    if (existing !== undefined) store.delete(BuiltIn.pods, namespace, state.name);
    server.setPodLogs(namespace, state.name, undefined);
  }

  /** Writes `object` only when it differs, so resourceVersions move on real changes only. */
  function writeStatus(
    kind: typeof BuiltIn.pods | typeof BuiltIn.deployments,
    name: string,
    status: unknown,
  ): void {
    const current = store.get(kind, namespace, name);
    if (current === undefined || JSON.stringify(current['status']) === JSON.stringify(status))
      return;
    store.replace(kind, { ...current, status });
  }

  function ensure(
    kind: typeof BuiltIn.deployments | typeof BuiltIn.services,
    object: KubeObject,
  ): void {
    if (store.get(BuiltIn.namespaces, undefined, namespace) === undefined) return;
    if (store.get(kind, namespace, object.metadata.name) === undefined) store.create(kind, object);
  }

  async function round(): Promise<void> {
    if (dirty) {
      dirty = false;
      // Pods deleted by someone else: stop their processes, as the kubelet would.
      for (const state of [...pods]) {
        if (store.get(BuiltIn.pods, namespace, state.name) === undefined) await removePod(state);
      }
      const want = workload.desired();
      if (want !== undefined && store.get(BuiltIn.namespaces, undefined, namespace) !== undefined) {
        currentHash = want.hash;
        const newest = pods.at(-1);
        for (const [kind, object] of workload.ensure?.(registryUrl) ?? []) ensure(kind, object);
        if (newest === undefined || newest.hash !== want.hash) {
          // A new revision supersedes pods that never became ready; going back to the
          // config of a pod still running keeps that pod, as a Deployment rollback does.
          for (const stale of pods.filter((state) => !state.ready && state.hash !== want.hash)) {
            await removePod(stale);
          }
          if (!pods.some((state) => state.hash === want.hash)) await createPod(want);
        }
      }
    }
    for (const state of pods) {
      const running = state.instance?.running() === true;
      const answered = running && state.instance !== undefined && (await probe(state.instance.url));
      observeProbe(state, running, answered);
    }
    for (const state of pods) writeStatus(BuiltIn.pods, state.name, podStatus(state));
    const latest = pods.at(-1);
    if (latest?.ready === true) {
      for (const old of pods.slice(0, -1)) await removePod(old);
    }
    const ready = pods.filter((state) => state.ready).length;
    const updated = pods.filter((state) => state.hash === currentHash).length;
    const deployment = store.get(BuiltIn.deployments, namespace, workload.deployment);
    if (deployment !== undefined) {
      writeStatus(BuiltIn.deployments, workload.deployment, {
        observedGeneration: deployment.metadata.generation ?? 1,
        replicas: pods.length,
        updatedReplicas: updated,
        readyReplicas: ready,
        availableReplicas: ready,
        ...(pods.length - ready > 0 ? { unavailableReplicas: pods.length - ready } : {}),
        conditions: [
          {
            type: 'Available',
            status: ready > 0 ? 'True' : 'False',
            reason: ready > 0 ? 'MinimumReplicasAvailable' : 'MinimumReplicasUnavailable',
          },
          {
            type: 'Progressing',
            status: 'True',
            reason: latest?.ready === true ? 'NewReplicaSetAvailable' : 'ReplicaSetUpdated',
            message: `ReplicaSet "${app}-${latest?.hash ?? ''}" ${latest?.ready === true ? 'has successfully progressed' : 'is progressing'}.`,
          },
        ],
      });
    }
  }

  /** The newest ready pod's registry: where the Service sends traffic. */
  const target = () => [...pods].reverse().find((state) => state.ready)?.instance?.url;
  const proxy = await startServiceProxy(app, target);
  const registryUrl = proxy.url;

  /** Rounds run one at a time; a caller waits for a round that starts after its call. */
  let queue: Promise<void> = Promise.resolve();
  let queued = 0;
  function sync(): Promise<void> {
    queued++;
    const next = queue.then(async () => {
      queued--;
      if (!stopped) await round();
    });
    queue = next.catch(() => undefined);
    return next;
  }

  // The timer only adds a round when none is waiting, so slow probes never pile up.
  let stopping: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (queued === 0) sync().catch(() => undefined);
  }, options.intervalMs ?? 250);
  await sync();

  return {
    registryUrl,
    pods: () =>
      pods.map((state) => ({
        name: state.name,
        hash: state.hash,
        ready: state.ready,
        url: state.instance?.url,
      })),
    desiredHash: () => currentHash,
    sync,
    stop() {
      stopping ??= (async () => {
        stopped = true;
        clearInterval(timer);
        unsubscribe();
        await queue;
        await Promise.all(pods.map((state) => state.instance?.stop()));
        await proxy.stop();
      })();
      return stopping;
    },
  };
}

/** The Deployment ACP runs the registry as; the controller keeps its status. */
export function registryDeployment(
  namespace = REGISTRY_NAMESPACE,
  image = 'registry:2',
): KubeObject {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: {
      name: REGISTRY_APP,
      namespace,
      labels: { app: REGISTRY_APP, [MODULE_LABEL]: REGISTRY_APP },
    },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: REGISTRY_APP } },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
      template: {
        metadata: { labels: { app: REGISTRY_APP } },
        spec: { containers: [{ name: 'registry', image, ports: [{ containerPort: 5000 }] }] },
      },
    },
  };
}

/** The Service in front of the registry pods; `registryUrl` is where it really answers here. */
export function registryService(namespace: string, registryUrl: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: REGISTRY_APP,
      namespace,
      labels: { app: REGISTRY_APP },
      annotations: { 'sandbox.regvault.dev/url': registryUrl },
    },
    spec: {
      type: 'ClusterIP',
      clusterIP: LOOPBACK,
      selector: { app: REGISTRY_APP },
      ports: [{ name: 'http', port: 5000, targetPort: 5000, protocol: 'TCP' }],
    },
  };
}
