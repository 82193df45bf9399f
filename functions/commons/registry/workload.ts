/**
 * What every profile whose registry runs as a Deployment shares: the
 * registry's Secrets (a missing one is bad input with how to make it), its
 * pods, and the rollout read from the Deployment and those pods (new pods
 * Ready, old ones gone, storage errors in new pods' logs).
 */
import { AppsV1Api, CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { KubeApiError, kubeCall } from '../cluster/kube.ts';
import { InputError } from '../errors.ts';
import type { CapturedFile, PodState, RolloutStatus } from './profile.ts';

/** A Kubernetes object as captured: its metadata and any other fields. */
export interface CapturedObject {
  metadata?: { annotations?: Record<string, string>; [k: string]: unknown };
  [k: string]: unknown;
}

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

/** A copy of `object` without status and server-set metadata. */
export function cleanForCapture(object: CapturedObject): CapturedObject {
  const { status: _status, ...rest } = object;
  const metadata: NonNullable<CapturedObject['metadata']> = { ...(object.metadata ?? {}) };
  for (const field of SERVER_FIELDS) delete metadata[field];
  if (metadata.annotations !== undefined) {
    const { 'kubectl.kubernetes.io/last-applied-configuration': _applied, ...annotations } =
      metadata.annotations;
    if (Object.keys(annotations).length === 0) delete metadata.annotations;
    else metadata.annotations = annotations;
  }
  return { ...rest, metadata };
}

/** Runs `attempt`, and once more (reading afresh) when the object changed under it: 409 Conflict. */
export async function retryOnConflict<T>(attempt: () => Promise<T>): Promise<T> {
  try {
    return await attempt();
  } catch (err) {
    if (err instanceof KubeApiError && err.status === 409) return attempt();
    throw err;
  }
}

/** `object` (of `kind`, which a read object lacks) as a file of the snapshot's cluster folder. */
export function capturedFile(
  name: string,
  apiVersion: string,
  kind: string,
  object: object,
): CapturedFile {
  return {
    name,
    yaml: stringify(cleanForCapture({ apiVersion, kind, ...(object as CapturedObject) })),
  };
}

/** Where the registry's Deployment and pods are, and what in their logs means wrong storage. */
export interface WorkloadOptions {
  readonly namespace: string;
  /** Label selector of the registry's pods. */
  readonly podSelector: string;
  readonly deployment: string;
  /** The registry container's name, for its log and its waiting reason. */
  readonly container: string;
  readonly storageErrorPatterns: readonly string[];
}

/** The registry's Secrets, pods and rollout in `options.namespace` of the kubeconfig's cluster. */
export function registryWorkload(kc: KubeConfig, options: WorkloadOptions) {
  const server = kc.getCurrentCluster()?.server ?? '(unknown server)';
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  const { namespace } = options;

  /** A Secret of the registry's namespace; one that does not exist is bad input, with how to create it or find another. */
  const readSecret = (secretName: string) =>
    kubeCall(
      server,
      { verb: 'get', resource: 'secrets', group: '', namespace, name: secretName },
      () => core.readNamespacedSecret({ name: secretName, namespace }),
    ).catch((err: unknown) => {
      // The name came from the user (--target-secret) or the registry's config: either way a fix, not a retry.
      if (!(err instanceof KubeApiError) || err.status !== 404) throw err;
      throw new InputError(`Secret ${namespace}/${secretName} does not exist at ${server}`, [
        `Secret ${namespace}/${secretName}: create it in namespace ${namespace} with the bucket's keys (kubectl -n ${namespace} create secret generic ${secretName} --from-literal=access-key-id=... --from-literal=secret-access-key=...), or name an existing one (kubectl -n ${namespace} get secrets)`,
      ]);
    });

  /** The registry's pods that are not being deleted. */
  const listPods = async () => {
    const pods = await kubeCall(
      server,
      { verb: 'list', resource: 'pods', group: '', namespace },
      () => core.listNamespacedPod({ namespace, labelSelector: options.podSelector }),
    );
    return pods.items.filter((p) => p.metadata?.deletionTimestamp === undefined);
  };

  async function rolloutStatus(podsBefore: readonly string[]): Promise<RolloutStatus> {
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
          name: options.deployment,
        },
        () => apps.readNamespacedDeployment({ name: options.deployment, namespace }),
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
        const waiting = p.status?.containerStatuses?.find((c) => c.name === options.container)
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
              container: options.container,
              tailLines: 200,
            }),
        );
      } catch (err) {
        // A pod whose container has not started has no log yet; that is not a failure.
        if (!(err instanceof KubeApiError) || (err.status !== 400 && err.status !== 404)) throw err;
      }
      for (const line of log.split('\n')) {
        if (options.storageErrorPatterns.some((pattern) => line.includes(pattern)))
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
  }

  return { server, core, apps, readSecret, listPods, rolloutStatus };
}
