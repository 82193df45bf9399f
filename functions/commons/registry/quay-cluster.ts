/**
 * The `quay` profile's cluster calls: the QuayRegistry, its Secrets, pods and
 * Deployments, each call described for errors (kube.ts), and the polls the
 * profile waits with. quay.ts and quay-state.ts build on these.
 */
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Pod,
  type V1Secret,
} from '@kubernetes/client-node';
import { type PodTarget, podText } from '../cluster/exec.ts';
import { isNotFound, KubeApiError, kubeCall } from '../cluster/kube.ts';
import { ClusterError } from '../errors.ts';
import { RegistryMissingError } from './profile.ts';
import type { QuaySettings } from './quay-settings.ts';

export const QUAY = { group: 'quay.redhat.com', version: 'v1', plural: 'quayregistries' } as const;
export const COMPONENT_LABEL = 'quay-component';

/** A QuayRegistry as regvault reads it. */
export interface QuayRegistryObject {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string; [k: string]: unknown };
  spec?: { configBundleSecret?: string; components?: QuayComponent[]; [k: string]: unknown };
  status?: {
    currentVersion?: string;
    conditions?: Array<{ type?: string; status?: string; message?: string }>;
  };
  [k: string]: unknown;
}

export interface QuayComponent {
  kind: string;
  managed?: boolean;
  overrides?: { replicas?: number; [k: string]: unknown };
  [k: string]: unknown;
}

export type QuayCluster = ReturnType<typeof quayCluster>;

/** The cluster calls of the profile over `kc`, in the settings' namespace. */
export function quayCluster(kc: KubeConfig, settings: QuaySettings) {
  const server = kc.getCurrentCluster()?.server ?? '(unknown server)';
  const custom = kc.makeApiClient(CustomObjectsApi);
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  const { namespace } = settings;
  const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

  const listRegistries = async (): Promise<QuayRegistryObject[]> => {
    const list = (await kubeCall(
      server,
      { verb: 'list', resource: QUAY.plural, group: QUAY.group, namespace },
      () => custom.listNamespacedCustomObject({ ...QUAY, namespace }),
    ).catch((err: unknown) => {
      // No such type at all: Quay's operator is not installed in this cluster.
      if (isNotFound(err)) return { items: [] };
      throw err;
    })) as { items?: QuayRegistryObject[] };
    return list.items ?? [];
  };

  const cluster = {
    server,
    kc,
    settings,
    namespace,

    /** The QuayRegistry the settings name, or the only one in the namespace. */
    async registry(): Promise<QuayRegistryObject> {
      const items = await listRegistries();
      const names = items.map((i) => i.metadata?.name ?? '?');
      const wanted = settings.name;
      const found =
        wanted === undefined
          ? items.length === 1
            ? items[0]
            : undefined
          : items.find((i) => i.metadata?.name === wanted);
      if (found !== undefined) return found;
      if (wanted !== undefined || items.length === 0)
        throw new RegistryMissingError(
          `there is no QuayRegistry${wanted === undefined ? '' : ` "${wanted}"`} in namespace ${namespace} at ${server}`,
          [
            `namespace: the QuayRegistry's namespace (found here: ${names.join(', ') || 'none'}); set the quay profile's namespace (and name) to where Quay runs, or check --context`,
          ],
        );
      throw new ClusterError(
        `${items.length} QuayRegistries are in namespace ${namespace} (${names.join(', ')}); name one in the quay profile's settings (name)`,
      );
    },

    /** A Secret in the namespace, or undefined when there is none by that name. */
    async secret(name: string): Promise<V1Secret | undefined> {
      return kubeCall(
        server,
        { verb: 'get', resource: 'secrets', group: '', namespace, name },
        () => core.readNamespacedSecret({ name, namespace }),
      ).catch((err: unknown) => {
        if (isNotFound(err)) return undefined;
        throw err;
      });
    },

    /** The first Secret (or ConfigMap data) labelled `selector`, for NooBaa's bucket claim. */
    async labelled(
      kind: 'secrets' | 'configmaps',
      selector: string,
    ): Promise<Record<string, string> | undefined> {
      const call = { verb: 'list' as const, resource: kind, group: '', namespace };
      if (kind === 'secrets') {
        const list = await kubeCall(server, call, () =>
          core.listNamespacedSecret({ namespace, labelSelector: selector }),
        );
        const first = list.items[0];
        return first === undefined
          ? undefined
          : {
              ...Object.fromEntries(
                Object.entries(first.data ?? {}).map(([k, v]) => [
                  k,
                  Buffer.from(v, 'base64').toString('utf8'),
                ]),
              ),
              '.name': first.metadata?.name ?? '',
            };
      }
      const list = await kubeCall(server, call, () =>
        core.listNamespacedConfigMap({ namespace, labelSelector: selector }),
      );
      return list.items[0]?.data;
    },

    async putSecret(secret: V1Secret): Promise<void> {
      const name = secret.metadata?.name ?? '';
      const body = { ...secret, metadata: { ...secret.metadata, namespace } };
      const existing = await cluster.secret(name);
      if (existing === undefined)
        await kubeCall(
          server,
          { verb: 'create', resource: 'secrets', group: '', namespace, name },
          () => core.createNamespacedSecret({ namespace, body }),
        );
      else
        await kubeCall(
          server,
          { verb: 'update', resource: 'secrets', group: '', namespace, name },
          () =>
            core.replaceNamespacedSecret({
              name,
              namespace,
              body: {
                ...body,
                metadata: {
                  ...body.metadata,
                  resourceVersion: existing.metadata?.resourceVersion ?? '',
                },
              },
            }),
        );
    },

    /**
     * Pods of a component (`quay-component=<component>`), without those being
     * deleted unless `terminating` is true: a pod being deleted may still run
     * (and write) until its containers stop, so "stopped" counts it.
     */
    async pods(component: string, options: { terminating?: boolean } = {}): Promise<V1Pod[]> {
      const pods = await kubeCall(
        server,
        { verb: 'list', resource: 'pods', group: '', namespace },
        () =>
          core.listNamespacedPod({ namespace, labelSelector: `${COMPONENT_LABEL}=${component}` }),
      );
      return options.terminating === true
        ? pods.items
        : pods.items.filter((p) => p.metadata?.deletionTimestamp === undefined);
    },

    async patchRegistry(name: string, body: unknown): Promise<void> {
      await kubeCall(
        server,
        { verb: 'patch', resource: QUAY.plural, group: QUAY.group, namespace, name },
        () => custom.patchNamespacedCustomObject({ ...QUAY, namespace, name, body }, merge),
      );
    },

    async createRegistry(body: QuayRegistryObject): Promise<void> {
      const name = body.metadata?.name ?? '';
      await kubeCall(
        server,
        { verb: 'create', resource: QUAY.plural, group: QUAY.group, namespace, name },
        () =>
          custom.createNamespacedCustomObject({
            ...QUAY,
            namespace,
            body: { ...body, metadata: { ...body.metadata, namespace } },
          }),
      );
    },

    /** Deployments of a namespace, name and replicas. */
    async deployments(where: string): Promise<Array<{ name: string; replicas: number }>> {
      const list = await kubeCall(
        server,
        { verb: 'list', resource: 'deployments', group: 'apps', namespace: where },
        () => apps.listNamespacedDeployment({ namespace: where }),
      );
      return list.items.map((d) => ({
        name: d.metadata?.name ?? '',
        replicas: d.spec?.replicas ?? 1,
      }));
    },

    async scale(where: string, name: string, replicas: number): Promise<void> {
      await kubeCall(
        server,
        { verb: 'patch', resource: 'deployments', group: 'apps', namespace: where, name },
        () =>
          apps.patchNamespacedDeployment(
            { name, namespace: where, body: { spec: { replicas } } },
            merge,
          ),
      );
    },

    async podLog(pod: string): Promise<string> {
      return kubeCall(
        server,
        { verb: 'get', resource: 'pods', subresource: 'log', group: '', namespace, name: pod },
        () => core.readNamespacedPodLog({ name: pod, namespace, tailLines: 200 }),
      ).catch((err: unknown) => {
        if (err instanceof KubeApiError && (err.status === 400 || err.status === 404)) return '';
        throw err;
      });
    },

    /** Polls `check` until it holds, up to the settings' wait; the error names `what`. */
    async until(what: string, check: () => Promise<boolean>, intervalMs = 250): Promise<void> {
      const deadline = Date.now() + settings.waitSeconds * 1000;
      while (!(await check())) {
        if (Date.now() > deadline)
          throw new ClusterError(
            `${what} did not happen within ${settings.waitSeconds} s (the quay profile's waitSeconds)`,
          );
        await new Promise((resolve) => setTimeout(resolve, intervalMs));
      }
    },
  };
  return cluster;
}

/** True when the QuayRegistry reports `Available=True`. */
export function isAvailable(object: QuayRegistryObject): boolean {
  return (object.status?.conditions ?? []).some(
    (c) => c.type === 'Available' && c.status === 'True',
  );
}

/** The running config of one quay-app pod (`cat /conf/stack/config.yaml` through pods/exec, as the runbook does). */
export function configOfPod(kc: KubeConfig, pod: V1Pod): Promise<string> {
  return podText(kc, execTarget(pod), ['cat', '/conf/stack/config.yaml']);
}

/** Listings of the quay-app pods a read of a ready one's config takes at most. */
const READY_CONFIG_LISTINGS = 3;

/**
 * A ready quay-app pod and its running config, or undefined when no pod is
 * ready. A pod replaced between the listing and the exec (the exec answers
 * 404, as while the operator rolls its pods) is passed over: the pods are
 * listed again, a few times at most.
 */
export async function readyPodConfig(
  cluster: QuayCluster,
): Promise<{ pod: V1Pod; text: string } | undefined> {
  for (let listing = 1; ; listing++) {
    const pod = (await cluster.pods('quay-app')).find(isReady);
    if (pod === undefined) return undefined;
    try {
      return { pod, text: await configOfPod(cluster.kc, pod) };
    } catch (err) {
      if (!isNotFound(err) || listing === READY_CONFIG_LISTINGS) throw err;
    }
  }
}

/** Where to exec in a pod: its first container, as `kubectl exec` picks without `-c`. */
export function execTarget(pod: V1Pod): PodTarget {
  return {
    namespace: pod.metadata?.namespace ?? '',
    pod: pod.metadata?.name ?? '',
    ...(pod.spec?.containers[0]?.name === undefined
      ? {}
      : { container: pod.spec.containers[0].name }),
  };
}

/** True for a pod whose Ready condition is True. */
export function isReady(pod: V1Pod): boolean {
  return pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}
