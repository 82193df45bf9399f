/**
 * The sandbox's Red Hat Quay Operator (issue 20's test bed). Quay itself
 * cannot run here, so this stands in for what regvault's `quay` profile
 * talks to, real where it can be:
 *
 * - the `QuayRegistry` type (quay.redhat.com/v1), served from a stored
 *   CustomResourceDefinition as the real apiserver serves it;
 * - per QuayRegistry, Deployments `<name>-quay-app`, `-quay-mirror`,
 *   `-clair-app` and `-quay-database` whose replicas follow
 *   `spec.components[].overrides.replicas` (ignored while the
 *   `horizontalpodautoscaler` component is managed: the HPA would scale the
 *   Deployment back to its minimum of 2, so the runbook unmanages it first);
 * - pods that follow the Deployments' replicas, whoever set them: quay-app
 *   pods serve the registry API with the sandbox's quay-app (../quay-app.ts:
 *   Quay's layout, manifests and tags as rows of the database pod's
 *   PostgreSQL, blobs at `<storage_path>/sha256/..` of the bucket of the
 *   config bundle's `DISTRIBUTED_STORAGE_CONFIG`), and their pods/exec
 *   `cat /conf/stack/config.yaml` prints the running config; the
 *   database pod (`quay-component=postgres`) is a real PostgreSQL whose
 *   pods/exec runs `pg_dump` and `psql` against it;
 * - `status.conditions` `Available=True` once every wanted pod is ready;
 * - Quay 3.7 and later: the `<name>-quay-registry-managed-secret-keys`
 *   Secret; earlier: no such Secret, no replica overrides (ignored), and the operator is a Deployment
 *   (`quay-operator.v3.6.x`) that reconciles only while it has replicas, so
 *   a scale to 0 of it, then of the components, sticks (the runbook's scale path).
 *
 * Simplifications: all quay-app pods of one registry share one quay-app
 * server (pods are what regvault counts; one server serves them), and
 * clair and mirror pods run nothing.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { parse as parseYaml, stringify } from 'yaml';
import { type PostgresHandle, startPostgres } from '../postgres.ts';
import { LOOPBACK, waitFor } from '../process.ts';
import { type QuayAppStarter, type QuayAppStorage, startQuayApp } from '../quay-app.ts';
import { type RegistryInstance, type RegistryStarter, terminating } from './controller.ts';
import type { PodExecHandler } from './exec.ts';
import { observeProbe, type Readiness, unready } from './readiness.ts';
import { BuiltIn, definitionsOfCrd, type ResourceDefinition } from './resources.ts';
import type { KubeApiServer } from './server.ts';
import { type ServiceProxy, startServiceProxy } from './service-proxy.ts';
import type { KubeObject } from './store.ts';

export const QUAY_GROUP = 'quay.redhat.com';
export const QUAY_REGISTRY_LABEL = 'quay-operator/quayregistry';

/** The CustomResourceDefinition the Quay Operator installs. */
export const QUAY_REGISTRY_CRD: KubeObject = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: `quayregistries.${QUAY_GROUP}` },
  spec: {
    group: QUAY_GROUP,
    names: {
      plural: 'quayregistries',
      singular: 'quayregistry',
      kind: 'QuayRegistry',
      shortNames: ['quay'],
    },
    scope: 'Namespaced',
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: {
          openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
        },
      },
    ],
  },
};

/** The QuayRegistry type as the store knows it. */
export const QUAY_REGISTRY = definitionsOfCrd(QUAY_REGISTRY_CRD)[0] as ResourceDefinition;

/** The components whose replicas the runbook overrides, and their Deployments' suffixes. */
const SCALED = { quay: 'quay-app', clair: 'clair-app', mirror: 'quay-mirror' } as const;
type ScaledKind = keyof typeof SCALED;
const POSTGRES_SUFFIX = 'quay-database';
/** The pod label each Deployment's pods carry (`quay-component`). */
const COMPONENT_LABEL = 'quay-component';
const HPA_MIN_REPLICAS = 2;
/**
 * The config bundle the operator last rolled into the component Deployments'
 * pod template (Quay mounts a config Secret the operator makes from it):
 * pods run this one, and a bundle changed while the operator is down waits
 * for it.
 */
const CONFIG_ANNOTATION = 'quay-operator/config-bundle';

export interface QuayOperatorOptions {
  readonly server: KubeApiServer;
  /** The operator's version: before 3.7 the scale path and no managed-secret-keys. */
  readonly version?: string;
  /** Where the operator's own Deployment lives (before 3.7 only). */
  readonly operatorNamespace?: string;
  /** What quay-app pods run (default: the sandbox's quay-app, ../quay-app.ts). */
  readonly startQuayApp?: QuayAppStarter;
  /**
   * @deprecated Ignored: quay-app pods no longer run a docker-registry (Quay
   * does not keep Distribution's layout); kept so that older callers compile.
   */
  readonly startRegistry?: RegistryStarter;
  readonly intervalMs?: number;
}

export interface QuayOperator {
  readonly version: string;
  readonly older: boolean;
  readonly operatorNamespace: string;
  /** The stable URL of `<name>-quay-app`'s Service (made on first ask, 503 until a pod is ready). */
  serviceUrl(namespace: string, name: string): Promise<string>;
  /** The PostgreSQL of a registry's database pod, once the operator has started it. */
  database(namespace: string, name: string, timeoutMs?: number): Promise<PostgresHandle>;
  /** Waits until the QuayRegistry reports `Available=True`. */
  waitForAvailable(namespace: string, name: string, timeoutMs?: number): Promise<void>;
  /** Replaces what a pod's exec runs (a test's failing pg_dump); undefined puts the operator's back. */
  overrideExec(
    namespace: string,
    pod: string,
    handler: ((fallback: PodExecHandler) => PodExecHandler) | undefined,
  ): void;
  sync(): Promise<void>;
  stop(): Promise<void>;
}

/** What seeding a Quay deployment takes: its bucket and keys, and where it lives. */
export interface QuaySeed {
  readonly namespace: string;
  readonly name: string;
  readonly bucket: string;
  readonly endpoint: string;
  readonly region: string;
  readonly accessKey: string;
  readonly secretKey: string;
  readonly configBundleSecret?: string;
  /** Managed object storage (ODF/NooBaa): the bucket in a claim's ConfigMap and Secret, none in the bundle. */
  readonly noobaa?: boolean;
}

const record = (value: unknown): Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
const text = (value: unknown): string | undefined =>
  typeof value === 'string' && value !== '' ? value : undefined;
const b64 = (value: string) => Buffer.from(value).toString('base64');
const randomName = () =>
  Array.from({ length: 5 }, () => 'bcdfghjklmnpqrstvwxz2456789'[randomInt(27)]).join('');

/** The storage_path the sandbox's configs give Quay (the operator's default for managed storage). */
export const QUAY_STORAGE_PATH = '/datastorage/registry';

/** True for versions before 3.7 (`3.6.4`, `v3.5.1`). */
export function olderThan37(version: string): boolean {
  const [major = 0, minor = 0] = version.replace(/^v/, '').split('.').map(Number);
  return major < 3 || (major === 3 && minor < 7);
}

/** A Quay config.yaml on S3-compatible storage (RadosGWStorage, as Quay names a non-AWS S3). */
export function quayConfigYaml(seed: QuaySeed): string {
  const url = new URL(seed.endpoint);
  return stringify({
    SERVER_HOSTNAME: `${seed.name}-quay-${seed.namespace}.apps.example.com`,
    FEATURE_USER_INITIALIZE: true,
    DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS: ['default'],
    DISTRIBUTED_STORAGE_PREFERENCE: ['default'],
    DISTRIBUTED_STORAGE_CONFIG: {
      default: [
        'RadosGWStorage',
        {
          hostname: url.hostname,
          port: Number(url.port || (url.protocol === 'https:' ? 443 : 80)),
          is_secure: url.protocol === 'https:',
          bucket_name: seed.bucket,
          access_key: seed.accessKey,
          secret_key: seed.secretKey,
          storage_path: QUAY_STORAGE_PATH,
        },
      ],
    },
  });
}

/** The storage a quay-app pod runs with, from its config.yaml; or why it cannot start. */
function storageConfigOf(config: Record<string, unknown>): QuayAppStorage | string {
  const storage = record(config['DISTRIBUTED_STORAGE_CONFIG']);
  const first = Object.values(storage)[0];
  if (!Array.isArray(first) || first.length < 2)
    return 'DISTRIBUTED_STORAGE_CONFIG has no storage location';
  const driver = String(first[0]);
  const s = record(first[1]);
  if (driver === 'S3Storage') {
    const host = text(s['host']);
    return {
      bucket: String(s['s3_bucket'] ?? ''),
      endpoint: host === undefined ? '' : `http://${host}:${String(s['port'] ?? 80)}`,
      region: text(s['s3_region']) ?? 'us-east-1',
      accessKey: String(s['s3_access_key'] ?? ''),
      secretKey: String(s['s3_secret_key'] ?? ''),
      storagePath: storagePathOf(s),
    };
  }
  if (driver === 'RadosGWStorage' || driver === 'RHOCSStorage') {
    const scheme = s['is_secure'] === true ? 'https' : 'http';
    return {
      bucket: String(s['bucket_name'] ?? ''),
      endpoint: `${scheme}://${String(s['hostname'] ?? '')}:${String(s['port'] ?? 80)}`,
      region: 'us-east-1',
      accessKey: String(s['access_key'] ?? ''),
      secretKey: String(s['secret_key'] ?? ''),
      storagePath: storagePathOf(s),
    };
  }
  return `storage driver ${driver} is not one the sandbox runs (S3Storage, RadosGWStorage, RHOCSStorage)`;
}

/** A storage entry's `storage_path`, as Quay uses it in keys: no leading or trailing slash. */
const storagePathOf = (s: Record<string, unknown>) =>
  (text(s['storage_path']) ?? '').replace(/^\/+/, '').replace(/\/+$/, '');

/** The database a config's `DB_URI` names (its path). */
const databaseOfUri = (uri: unknown) =>
  typeof uri === 'string' ? decodeURIComponent(new URL(uri).pathname.slice(1)) : '';

interface RegistryState extends Readiness {
  readonly namespace: string;
  readonly name: string;
  /** The running registry process and the config it was started from. */
  instance: RegistryInstance | undefined;
  configKey: string | undefined;
  crash: string | undefined;
  postgres?: Promise<PostgresHandle>;
  proxy?: Promise<ServiceProxy>;
  /** The config.yaml the quay-app pods run with. */
  running: string | undefined;
}

/** Starts the operator; it reconciles at once and then every `intervalMs`. */
export async function startQuayOperator(options: QuayOperatorOptions): Promise<QuayOperator> {
  const { server } = options;
  const { store } = server;
  const version = options.version ?? '3.9.1';
  const older = olderThan37(version);
  const operatorNamespace = options.operatorNamespace ?? 'openshift-operators';
  const operatorDeployment = `quay-operator.v${version}`;
  const states = new Map<string, RegistryState>();
  const execOverrides = new Map<string, (fallback: PodExecHandler) => PodExecHandler>();
  let stopped = false;

  if (
    store.get(BuiltIn.customresourcedefinitions, undefined, QUAY_REGISTRY_CRD.metadata.name) ===
    undefined
  )
    store.create(BuiltIn.customresourcedefinitions, structuredClone(QUAY_REGISTRY_CRD));
  if (older) {
    ensureNamespace(operatorNamespace);
    if (store.get(BuiltIn.deployments, operatorNamespace, operatorDeployment) === undefined)
      store.create(BuiltIn.deployments, {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: {
          name: operatorDeployment,
          namespace: operatorNamespace,
          labels: { name: 'quay-operator-alm-owned' },
        },
        spec: {
          replicas: 1,
          selector: { matchLabels: { name: 'quay-operator-alm-owned' } },
          template: {
            metadata: { labels: { name: 'quay-operator-alm-owned' } },
            spec: {
              containers: [
                { name: 'quay-operator', image: `quay.io/projectquay/quay-operator:v${version}` },
              ],
            },
          },
        },
      });
  }

  function ensureNamespace(name: string): void {
    if (store.get(BuiltIn.namespaces, undefined, name) === undefined)
      store.create(BuiltIn.namespaces, {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name, labels: { 'kubernetes.io/metadata.name': name } },
        status: { phase: 'Active' },
      });
  }

  const stateOf = (namespace: string, name: string): RegistryState => {
    const key = `${namespace}/${name}`;
    let state = states.get(key);
    if (state === undefined) {
      state = {
        namespace,
        name,
        ...unready(),
        instance: undefined,
        configKey: undefined,
        crash: undefined,
        running: undefined,
      };
      states.set(key, state);
    }
    return state;
  };

  /** Replicas the operator wants for a component, by the QuayRegistry's spec. */
  function wantedReplicas(quay: KubeObject, kind: ScaledKind | 'postgres'): number {
    const components = (record(quay['spec'])['components'] ?? []) as unknown[];
    const find = (k: string) => components.map(record).find((c) => c['kind'] === k);
    const component = find(kind);
    if (component !== undefined && component['managed'] === false) return 0;
    if (kind === 'postgres') return 1;
    const hpa = find('horizontalpodautoscaler');
    const hpaManaged = hpa === undefined || hpa['managed'] !== false;
    const override = record(component?.['overrides'])['replicas'];
    if (hpaManaged) return kind === 'quay' ? HPA_MIN_REPLICAS : 1;
    // Replica overrides came with 3.7: before, the runbook scales the Deployments instead.
    if (older) return 1;
    return typeof override === 'number' ? override : 1;
  }

  function deployment(
    quay: KubeObject,
    suffix: string,
    component: string,
    replicas: number,
  ): KubeObject {
    const name = quay.metadata.name;
    const labels = { [QUAY_REGISTRY_LABEL]: name, [COMPONENT_LABEL]: component };
    const bundle = text(record(quay['spec'])['configBundleSecret']);
    return {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: {
        name: `${name}-${suffix}`,
        namespace: quay.metadata.namespace as string,
        labels,
        ownerReferences: [ownerOf(quay)],
      },
      spec: {
        replicas,
        selector: { matchLabels: { [QUAY_REGISTRY_LABEL]: name, [COMPONENT_LABEL]: component } },
        template: {
          metadata: {
            labels,
            ...(bundle === undefined ? {} : { annotations: { [CONFIG_ANNOTATION]: bundle } }),
          },
          spec: {
            containers: [
              {
                name: component,
                image:
                  component === 'postgres'
                    ? 'registry.redhat.io/rhel8/postgresql-13'
                    : `quay.io/projectquay/${component}:v${version}`,
              },
            ],
          },
        },
      },
    };
  }

  /** The bundle a Deployment's pod template was rolled with. */
  const bundleOf = (deployment: KubeObject) =>
    text(
      record(record(record(record(deployment['spec'])['template'])['metadata'])['annotations'])[
        CONFIG_ANNOTATION
      ],
    );

  const ownerOf = (quay: KubeObject) => ({
    apiVersion: `${QUAY_GROUP}/v1`,
    kind: 'QuayRegistry',
    name: quay.metadata.name,
    uid: quay.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  });

  /** The operator's own pass over one QuayRegistry: Deployments and managed keys. */
  function reconcile(quay: KubeObject): void {
    const namespace = quay.metadata.namespace as string;
    const name = quay.metadata.name;
    const wanted: Array<[string, string, number]> = [
      ...(Object.entries(SCALED) as Array<[ScaledKind, string]>).map(
        ([kind, suffix]): [string, string, number] => [suffix, suffix, wantedReplicas(quay, kind)],
      ),
      [POSTGRES_SUFFIX, 'postgres', wantedReplicas(quay, 'postgres')],
    ];
    for (const [suffix, component, replicas] of wanted) {
      const existing = store.get(BuiltIn.deployments, namespace, `${name}-${suffix}`);
      const want = deployment(quay, suffix, component, replicas);
      const template = record(record(want['spec'])['template']);
      if (existing === undefined) store.create(BuiltIn.deployments, want);
      else if (
        record(existing['spec'])['replicas'] !== replicas ||
        bundleOf(existing) !== bundleOf(want)
      )
        store.replace(BuiltIn.deployments, {
          ...existing,
          spec: { ...record(existing['spec']), replicas, template },
        });
    }
    const keysName = `${name}-quay-registry-managed-secret-keys`;
    if (!older && store.get(BuiltIn.secrets, namespace, keysName) === undefined) {
      const password = randomBytes(12).toString('hex');
      store.create(BuiltIn.secrets, {
        apiVersion: 'v1',
        kind: 'Secret',
        type: 'Opaque',
        metadata: {
          name: keysName,
          namespace,
          labels: { [QUAY_REGISTRY_LABEL]: name },
          ownerReferences: [ownerOf(quay)],
        },
        data: {
          CONFIG_EDITOR_PW: b64(randomBytes(8).toString('hex')),
          DATABASE_SECRET_KEY: b64(randomBytes(24).toString('hex')),
          DB_ROOT_PW: b64(randomBytes(8).toString('hex')),
          DB_URI: b64(
            `postgresql://${name}-${POSTGRES_SUFFIX}:${password}@${name}-${POSTGRES_SUFFIX}:5432/${name}-${POSTGRES_SUFFIX}`,
          ),
          SECRET_KEY: b64(randomBytes(24).toString('hex')),
          SECURITY_SCANNER_V4_PSK: b64(randomBytes(16).toString('base64')),
        },
      });
    }
  }

  /**
   * The config.yaml quay-app runs with: that of the bundle the operator last
   * rolled into its Deployment, with the database the operator manages.
   */
  function runningConfig(
    quay: KubeObject,
  ): { yaml: string; parsed: Record<string, unknown> } | string {
    const namespace = quay.metadata.namespace as string;
    const rolled = store.get(
      BuiltIn.deployments,
      namespace,
      `${quay.metadata.name}-${SCALED.quay}`,
    );
    const bundleName =
      (rolled === undefined ? undefined : bundleOf(rolled)) ??
      text(record(quay['spec'])['configBundleSecret']);
    if (bundleName === undefined) return 'spec.configBundleSecret is not set';
    const bundle = store.get(BuiltIn.secrets, namespace, bundleName);
    const raw = text(record(bundle?.['data'])['config.yaml']);
    if (raw === undefined) return `Secret ${namespace}/${bundleName} has no config.yaml`;
    const parsed = record(parseYaml(Buffer.from(raw, 'base64').toString('utf8')));
    if (parsed['DISTRIBUTED_STORAGE_CONFIG'] === undefined) {
      const claim = noobaaStorage(namespace);
      if (claim !== undefined) parsed['DISTRIBUTED_STORAGE_CONFIG'] = { default: claim };
    }
    if (parsed['DB_URI'] === undefined) {
      const keys = store.get(
        BuiltIn.secrets,
        namespace,
        `${quay.metadata.name}-quay-registry-managed-secret-keys`,
      );
      const managed = text(record(keys?.['data'])['DB_URI']);
      const db = `${quay.metadata.name}-${POSTGRES_SUFFIX}`;
      parsed['DB_URI'] =
        managed === undefined
          ? `postgresql://${db}:quay@${db}:5432/${db}`
          : Buffer.from(managed, 'base64').toString('utf8');
    }
    return { yaml: stringify(parsed), parsed };
  }

  /**
   * Managed object storage: the bucket claim's ConfigMap and Secret
   * (labelled app=noobaa) as the operator writes them into the running
   * config. The sandbox's S3 is plain HTTP, so is_secure is false here.
   */
  function noobaaStorage(namespace: string): unknown[] | undefined {
    const labelled = (kind: typeof BuiltIn.secrets | typeof BuiltIn.configmaps) =>
      store.list(kind, namespace).find((o) => o.metadata.labels?.['app'] === 'noobaa');
    const claim = record(labelled(BuiltIn.configmaps)?.['data']);
    const keys = record(labelled(BuiltIn.secrets)?.['data']);
    const key = (name: string) => Buffer.from(String(keys[name] ?? ''), 'base64').toString('utf8');
    if (text(claim['BUCKET_NAME']) === undefined) return undefined;
    return [
      'RHOCSStorage',
      {
        hostname: claim['BUCKET_HOST'],
        port: Number(claim['BUCKET_PORT']),
        is_secure: false,
        bucket_name: claim['BUCKET_NAME'],
        access_key: key('AWS_ACCESS_KEY_ID'),
        secret_key: key('AWS_SECRET_ACCESS_KEY'),
        storage_path: QUAY_STORAGE_PATH,
      },
    ];
  }

  /** The kubelet's part: pods that follow each Deployment's replicas, and what runs in them. */
  async function runPods(quay: KubeObject): Promise<void> {
    const namespace = quay.metadata.namespace as string;
    const name = quay.metadata.name;
    const state = stateOf(namespace, name);
    const replicasOf = (suffix: string) =>
      Number(
        record(store.get(BuiltIn.deployments, namespace, `${name}-${suffix}`)?.['spec'])[
          'replicas'
        ] ?? 0,
      );
    // The database first: quay-app needs it.
    if (replicasOf(POSTGRES_SUFFIX) > 0) {
      state.postgres ??= startPostgres({ name: `${namespace}-${name}-postgres` });
      await state.postgres;
    }
    // The other components' pods follow their replicas at once, quay-app's as its process does.
    for (const [suffix, component] of [
      [SCALED.clair, 'clair-app'],
      [SCALED.mirror, 'quay-mirror'],
      [POSTGRES_SUFFIX, 'postgres'],
    ] as const)
      syncPods(quay, suffix, component, replicasOf(suffix), true);
    const config = runningConfig(quay);
    const quayReplicas = replicasOf(SCALED.quay);
    if (quayReplicas > 0 && typeof config !== 'string') {
      const storage = storageConfigOf(config.parsed);
      const database = databaseOfUri(config.parsed['DB_URI']);
      const key = JSON.stringify({ storage, database });
      if (state.configKey !== key) {
        // A new config is a new ReplicaSet: the quay-app pods are replaced,
        // each gone from the API only once its process has stopped.
        await retire(state);
        state.configKey = key;
        state.crash = undefined;
        if (typeof storage === 'string') state.crash = storage;
        else if (state.postgres === undefined)
          state.crash = 'the database pod is not running, and quay-app needs its database';
        else
          try {
            // The pods are in the API while their process starts (Pending), as a
            // ReplicaSet's are: a scale to 0 meanwhile sees them until they stop.
            syncPods(quay, SCALED.quay, 'quay-app', quayReplicas, false, 'Pending');
            state.instance = await (options.startQuayApp ?? startQuayApp)({
              storage,
              postgres: await state.postgres,
              database,
            });
          } catch (err) {
            // Quay's pod would crash-loop: the next round starts it again.
            state.crash = `quay-app could not start: ${err instanceof Error ? err.message : String(err)}`;
            state.configKey = undefined;
          }
      }
      state.running = config.yaml;
    } else if (state.instance !== undefined || state.configKey !== undefined) {
      await retire(state);
      state.configKey = undefined;
      state.running = undefined;
    }
    if (state.instance !== undefined) {
      const running = state.instance.running();
      observeProbe(state, running, running && (await answers(state.instance.url)));
    }
    // The replicas this round acted on: a scale to 0 since is the next round's, which stops
    // the process before its pods go.
    syncPods(quay, SCALED.quay, 'quay-app', quayReplicas, state.ready);
  }

  /** The pods of one component of QuayRegistry `namespace/name`. */
  const componentPods = (namespace: string, name: string, component: string) =>
    store
      .list(BuiltIn.pods, namespace)
      .filter(
        (pod) =>
          pod.metadata.labels?.[QUAY_REGISTRY_LABEL] === name &&
          pod.metadata.labels?.[COMPONENT_LABEL] === component,
      );

  /** A pod gone from the API, and what exec into it ran. */
  const removePod = (namespace: string, pod: string) => {
    if (store.get(BuiltIn.pods, namespace, pod) !== undefined)
      store.delete(BuiltIn.pods, namespace, pod);
    server.setPodExec(namespace, pod, undefined);
  };

  /**
   * Takes quay-app out of its Service and marks its pods terminating, lets
   * it finish what it took, stops it, and only then removes the pods: the
   * kubelet confirms a pod's deletion once its containers have stopped.
   */
  async function retire(state: RegistryState): Promise<void> {
    const instance = state.instance;
    Object.assign(state, unready());
    state.instance = undefined;
    const pods = componentPods(state.namespace, state.name, 'quay-app');
    for (const pod of pods) store.replace(BuiltIn.pods, terminating(pod));
    if (instance !== undefined) {
      if (state.proxy !== undefined) await (await state.proxy).drain(instance.url, 5_000);
      await instance.stop();
    }
    for (const pod of pods) removePod(state.namespace, pod.metadata.name);
  }

  async function answers(url: string): Promise<boolean> {
    try {
      const response = await fetch(`${url}/v2/_catalog?n=1`, {
        signal: AbortSignal.timeout(1_000),
      });
      await response.body?.cancel();
      return response.status === 200;
    } catch {
      return false;
    }
  }

  function syncPods(
    quay: KubeObject,
    suffix: string,
    component: string,
    replicas: number,
    ready: boolean,
    phase: 'Pending' | 'Running' = 'Running',
  ): void {
    const namespace = quay.metadata.namespace as string;
    const name = quay.metadata.name;
    const deploymentName = `${name}-${suffix}`;
    const pods = componentPods(namespace, name, component);
    for (const pod of pods.slice(replicas)) removePod(namespace, pod.metadata.name);
    for (let i = pods.length; i < replicas; i++) {
      const created = store.create(BuiltIn.pods, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name: `${deploymentName}-7c9f5d${randomName().slice(0, 3)}-${randomName()}`,
          namespace,
          labels: {
            [QUAY_REGISTRY_LABEL]: name,
            [COMPONENT_LABEL]: component,
            ...(component === 'quay-app' ? { app: 'quay' } : {}),
          },
        },
        spec: {
          containers: [{ name: component, image: `quay.io/projectquay/${component}:v${version}` }],
        },
      });
      server.setPodExec(namespace, created.metadata.name, (command, io, container) =>
        execIn(namespace, name, component, created.metadata.name)(command, io, container),
      );
    }
    for (const pod of componentPods(namespace, name, component)) {
      const status = {
        phase,
        ...(phase === 'Running' ? { podIP: LOOPBACK } : {}),
        conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }],
        containerStatuses: [
          {
            name: component,
            ready,
            restartCount: 0,
            state:
              phase === 'Running' ? { running: {} } : { waiting: { reason: 'ContainerCreating' } },
            image: '',
            imageID: '',
          },
        ],
      };
      if (JSON.stringify(pod['status']) !== JSON.stringify(status))
        store.replace(BuiltIn.pods, { ...pod, status });
    }
    writeDeploymentStatus(namespace, deploymentName, ready);
  }

  /** A Deployment's status as its controller writes it: every replica ready, or none. */
  function writeDeploymentStatus(namespace: string, name: string, ready: boolean): void {
    const existing = store.get(BuiltIn.deployments, namespace, name);
    if (existing === undefined) return;
    const replicas = Number(record(existing['spec'])['replicas'] ?? 0);
    const readyCount = ready ? replicas : 0;
    const status = {
      observedGeneration: existing.metadata.generation ?? 1,
      replicas,
      readyReplicas: readyCount,
      availableReplicas: readyCount,
      updatedReplicas: replicas,
    };
    if (JSON.stringify(existing['status']) !== JSON.stringify(status))
      store.replace(BuiltIn.deployments, { ...existing, status });
  }

  /** What a pod of `component` runs when exec'd into. */
  function execIn(namespace: string, name: string, component: string, pod: string): PodExecHandler {
    const own: PodExecHandler = async ([program, ...args], io) => {
      const state = stateOf(namespace, name);
      if (component === 'quay-app' && program === 'cat' && args[0] === '/conf/stack/config.yaml') {
        io.stdout(state.running ?? '');
        return 0;
      }
      if (
        component === 'postgres' &&
        (program === 'pg_dump' || program === 'psql' || program === '/usr/bin/pg_dump')
      ) {
        const postgres = await state.postgres;
        if (postgres === undefined) {
          io.stderr('the database is not running\n');
          return 1;
        }
        const child = postgres.spawn(program.endsWith('pg_dump') ? 'pg_dump' : 'psql', args);
        child.stdout?.on('data', (chunk: Buffer) => io.stdout(chunk));
        child.stderr?.on('data', (chunk: Buffer) => io.stderr(chunk));
        if (child.stdin !== null) io.stdin.pipe(child.stdin);
        return new Promise((resolve) => child.once('close', (code) => resolve(code ?? 1)));
      }
      io.stderr(`exec: "${program ?? ''}": executable file not found in $PATH\n`);
      return 127;
    };
    return (command, io, container) => {
      const override =
        execOverrides.get(`${namespace}/${pod}`) ?? execOverrides.get(`${namespace}/*${component}`);
      return (override === undefined ? own : override(own))(command, io, container);
    };
  }

  function writeStatus(quay: KubeObject): void {
    const namespace = quay.metadata.namespace as string;
    const name = quay.metadata.name;
    const state = stateOf(namespace, name);
    const config = runningConfig(quay);
    const down = (Object.keys(SCALED) as ScaledKind[]).filter(
      (kind) =>
        Number(
          record(store.get(BuiltIn.deployments, namespace, `${name}-${SCALED[kind]}`)?.['spec'])[
            'replicas'
          ] ?? 0,
        ) === 0 && wantedReplicas(quay, kind) > 0,
    );
    const available =
      typeof config !== 'string' &&
      state.ready &&
      wantedReplicas(quay, 'quay') > 0 &&
      down.length === 0;
    const message =
      typeof config === 'string'
        ? config
        : state.crash !== undefined
          ? state.crash
          : available
            ? 'All components reporting as healthy'
            : wantedReplicas(quay, 'quay') === 0
              ? 'quay has 0 replicas'
              : 'Waiting for components to become ready';
    const previous = (record(quay['status'])['conditions'] ?? []) as Array<Record<string, unknown>>;
    const was = previous.find((c) => c['type'] === 'Available');
    const status = {
      currentVersion: version,
      registryEndpoint: `https://${name}-quay-${namespace}.apps.example.com`,
      conditions: [
        {
          type: 'Available',
          status: available ? 'True' : 'False',
          reason: available ? 'HealthChecksPassing' : 'ComponentsNotReady',
          message,
          lastTransitionTime:
            was?.['status'] === (available ? 'True' : 'False')
              ? was?.['lastTransitionTime']
              : new Date().toISOString(),
        },
      ],
    };
    if (JSON.stringify(quay['status']) !== JSON.stringify(status))
      store.replace(QUAY_REGISTRY, { ...quay, status });
  }

  const operatorRunning = () =>
    !older ||
    Number(
      record(store.get(BuiltIn.deployments, operatorNamespace, operatorDeployment)?.['spec'])[
        'replicas'
      ] ?? 0,
    ) > 0;

  async function round(): Promise<void> {
    if (older) {
      writeDeploymentStatus(operatorNamespace, operatorDeployment, true);
    }
    const registries = store.list(QUAY_REGISTRY);
    for (const quay of registries) {
      if (operatorRunning()) reconcile(quay);
      await runPods(quay);
      const current = store.get(QUAY_REGISTRY, quay.metadata.namespace, quay.metadata.name);
      if (current !== undefined && operatorRunning()) writeStatus(current);
    }
    // A QuayRegistry deleted: its pods and processes go (its database too, as its PVC would).
    for (const [key, state] of states) {
      if (registries.some((q) => `${q.metadata.namespace}/${q.metadata.name}` === key)) continue;
      await retire(state);
      state.configKey = undefined;
    }
  }

  let queue: Promise<void> = Promise.resolve();
  const sync = (): Promise<void> => {
    const next = queue.then(() => (stopped ? undefined : round()));
    queue = next.catch(() => undefined);
    return next;
  };
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void sync().finally(() => {
      busy = false;
    });
  }, options.intervalMs ?? 200);
  await sync();

  const availableNow = (namespace: string, name: string) => {
    const quay = store.get(QUAY_REGISTRY, namespace, name);
    const conditions = (record(quay?.['status'])['conditions'] ?? []) as Array<
      Record<string, unknown>
    >;
    return conditions.some((c) => c['type'] === 'Available' && c['status'] === 'True');
  };

  return {
    version,
    older,
    operatorNamespace,
    async serviceUrl(namespace, name) {
      const state = stateOf(namespace, name);
      state.proxy ??= startServiceProxy(`${name}-quay-app`, () =>
        state.ready ? state.instance?.url : undefined,
      );
      return (await state.proxy).url;
    },
    async database(namespace, name, timeoutMs = 30_000) {
      await waitFor(
        `the database pod of ${namespace}/${name}`,
        async () => stateOf(namespace, name).postgres !== undefined,
        {
          timeoutMs,
          intervalMs: 100,
        },
      );
      return stateOf(namespace, name).postgres as Promise<PostgresHandle>;
    },
    async waitForAvailable(namespace, name, timeoutMs = 30_000) {
      await waitFor(
        `QuayRegistry ${namespace}/${name} Available`,
        async () => availableNow(namespace, name),
        {
          timeoutMs,
          intervalMs: 100,
        },
      );
    },
    overrideExec(namespace, pod, handler) {
      if (handler === undefined) execOverrides.delete(`${namespace}/${pod}`);
      else execOverrides.set(`${namespace}/${pod}`, handler);
    },
    sync,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await queue;
      for (const state of states.values()) {
        await state.instance?.stop();
        await (await state.proxy)?.stop();
        await (await state.postgres?.catch(() => undefined))?.stop();
      }
    },
  };
}

/** Creates what installing Quay leaves: the namespace, the config bundle Secret and the QuayRegistry. */
export function seedQuayRegistry(server: KubeApiServer, seed: QuaySeed): KubeObject {
  const { store } = server;
  const bundle = seed.configBundleSecret ?? `${seed.name}-config-bundle`;
  if (store.get(BuiltIn.namespaces, undefined, seed.namespace) === undefined)
    store.create(BuiltIn.namespaces, {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: seed.namespace, labels: { 'kubernetes.io/metadata.name': seed.namespace } },
      status: { phase: 'Active' },
    });
  store.create(BuiltIn.secrets, {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: { name: bundle, namespace: seed.namespace },
    data: {
      'config.yaml': b64(
        seed.noobaa === true
          ? stringify({ SERVER_HOSTNAME: `${seed.name}-quay-${seed.namespace}.apps.example.com` })
          : quayConfigYaml(seed),
      ),
    },
  });
  if (seed.noobaa === true) {
    // What the ObjectBucketClaim leaves: a ConfigMap and a Secret of one name, labelled app=noobaa.
    const claim = {
      name: `${seed.name}-quay-datastorage`,
      namespace: seed.namespace,
      labels: { app: 'noobaa' },
    };
    const url = new URL(seed.endpoint);
    store.create(BuiltIn.configmaps, {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: claim,
      data: {
        BUCKET_HOST: url.hostname,
        BUCKET_PORT: url.port,
        BUCKET_NAME: seed.bucket,
        BUCKET_REGION: seed.region,
      },
    });
    store.create(BuiltIn.secrets, {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: claim,
      data: { AWS_ACCESS_KEY_ID: b64(seed.accessKey), AWS_SECRET_ACCESS_KEY: b64(seed.secretKey) },
    });
  }
  return store.create(QUAY_REGISTRY, {
    apiVersion: `${QUAY_GROUP}/v1`,
    kind: 'QuayRegistry',
    metadata: { name: seed.name, namespace: seed.namespace },
    spec: {
      configBundleSecret: bundle,
      components: [
        { kind: 'quay', managed: true },
        { kind: 'postgres', managed: true },
        { kind: 'clair', managed: true },
        { kind: 'clairpostgres', managed: true },
        { kind: 'redis', managed: true },
        { kind: 'horizontalpodautoscaler', managed: true },
        { kind: 'objectstorage', managed: seed.noobaa === true },
        { kind: 'route', managed: true },
        { kind: 'mirror', managed: true },
        { kind: 'monitoring', managed: false },
        { kind: 'tls', managed: true },
      ],
    },
  });
}
