/**
 * The sandbox's stand-in for the Deployment and StatefulSet controllers and
 * the kubelet's image pulls: it writes each workload's `status` as the real
 * controllers do once its pods run, Ready when every container and init
 * container image of its template can be pulled, and otherwise not Ready with
 * the pull error in a condition. No pods are made: the status is what
 * regvault and `kubectl rollout status` read.
 */
import { BuiltIn } from './resources.ts';
import type { KubeApiServer } from './server.ts';
import type { KubeObject } from './store.ts';

/** Why an image cannot be pulled, or undefined when it can. */
export type ImageCheck = (image: string) => Promise<string | undefined>;

export interface WorkloadControllerOptions {
  readonly server: KubeApiServer;
  /** Defaults to `pullableFromLoopback`. */
  readonly imageCheck?: ImageCheck;
  /** Workloads another controller keeps the status of (the registry's own Deployment). */
  readonly skip?: (object: KubeObject) => boolean;
}

export interface WorkloadController {
  /** Writes the status of every workload again (e.g. after an image was pushed). */
  sync(): Promise<void>;
  stop(): void;
}

const record = (value: unknown): Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
const list = (value: unknown): unknown[] => (Array.isArray(value) ? value : []);

/** The images of a workload's pod template, init containers first. */
export function templateImages(workload: KubeObject): string[] {
  const pod = record(record(record(workload['spec'])['template'])['spec']);
  return [...list(pod['initContainers']), ...list(pod['containers'])]
    .map((c) => record(c)['image'])
    .filter((image): image is string => typeof image === 'string');
}

/** `host`, repository and tag or digest of an image reference, with Docker's defaults. */
export function parseImage(image: string): { host: string; repository: string; reference: string } {
  const slash = image.indexOf('/');
  const first = slash === -1 ? '' : image.slice(0, slash);
  const hasHost = first.includes('.') || first.includes(':') || first === 'localhost';
  const host = hasHost ? first : 'docker.io';
  let rest = hasHost ? image.slice(slash + 1) : image;
  let reference = 'latest';
  const at = rest.indexOf('@');
  if (at !== -1) {
    reference = rest.slice(at + 1);
    rest = rest.slice(0, at);
  } else {
    const colon = rest.lastIndexOf(':');
    if (colon !== -1) {
      reference = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
    }
  }
  const repository = hasHost || rest.includes('/') ? rest : `library/${rest}`;
  return { host, repository, reference };
}

const MANIFEST_TYPES = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

/**
 * The sandbox reaches registries on the loopback interface only: an image
 * there is pullable when its registry serves its manifest; any other host
 * cannot be reached, as from a cluster without network access to it.
 */
export const pullableFromLoopback: ImageCheck = async (image) => {
  const { host, repository, reference } = parseImage(image);
  if (!/^(127\.0\.0\.1|localhost)(:\d+)?$/.test(host))
    return `ErrImagePull: failed to pull image "${image}": ${host} cannot be reached from the sandbox (only registries on 127.0.0.1 can)`;
  try {
    const response = await fetch(`http://${host}/v2/${repository}/manifests/${reference}`, {
      method: 'HEAD',
      headers: { Accept: MANIFEST_TYPES },
      signal: AbortSignal.timeout(5_000),
    });
    return response.ok
      ? undefined
      : `ErrImagePull: failed to pull image "${image}": the registry answered HTTP ${response.status} for its manifest`;
  } catch (err) {
    return `ErrImagePull: failed to pull image "${image}": ${(err as Error).message}`;
  }
};

/** The status the real controller reports once it has acted on `workload`'s spec. */
async function statusOf(workload: KubeObject, check: ImageCheck): Promise<Record<string, unknown>> {
  const spec = record(workload['spec']);
  const replicas = typeof spec['replicas'] === 'number' ? spec['replicas'] : 1;
  const problems = (await Promise.all(templateImages(workload).map(check))).filter(
    (p): p is string => p !== undefined,
  );
  const ready = problems.length === 0 ? replicas : 0;
  const condition =
    workload.kind === 'Deployment'
      ? {
          type: 'Available',
          status: ready >= replicas ? 'True' : 'False',
          reason: ready >= replicas ? 'MinimumReplicasAvailable' : 'MinimumReplicasUnavailable',
          message: problems[0] ?? 'Deployment has minimum availability.',
        }
      : {
          type: 'Ready',
          status: ready >= replicas ? 'True' : 'False',
          reason: ready >= replicas ? 'AllReplicasReady' : 'ImagePullFailed',
          message: problems[0] ?? `${ready} of ${replicas} replicas ready`,
        };
  return {
    observedGeneration: workload.metadata.generation ?? 1,
    replicas,
    readyReplicas: ready,
    availableReplicas: ready,
    updatedReplicas: replicas,
    ...(workload.kind === 'StatefulSet' ? { currentReplicas: replicas } : {}),
    conditions: [condition],
  };
}

/** Starts keeping the status of every Deployment and StatefulSet the server stores. */
export function startWorkloadController(options: WorkloadControllerOptions): WorkloadController {
  const { store } = options.server;
  const check = options.imageCheck ?? pullableFromLoopback;
  const kinds = [BuiltIn.deployments, BuiltIn.statefulsets];
  let stopped = false;

  const reconcile = async (kind: (typeof kinds)[number], seen: KubeObject, force: boolean) => {
    if (options.skip?.(seen) === true) return;
    const observed = record(seen['status'])['observedGeneration'];
    if (!force && observed === (seen.metadata.generation ?? 1)) return;
    const status = await statusOf(seen, check);
    const current = stopped
      ? undefined
      : store.get(kind, seen.metadata.namespace, seen.metadata.name);
    // Only the generation it looked at: a newer spec gets its own round.
    if (current === undefined || current.metadata.generation !== seen.metadata.generation) return;
    if (JSON.stringify(current['status']) === JSON.stringify(status)) return;
    store.replace(kind, { ...current, status });
  };

  const unsubscribe = store.watch(({ type, ref, object }) => {
    const kind = kinds.find((k) => k.group === ref.group && k.resource === ref.resource);
    if (kind !== undefined && type !== 'DELETED') void reconcile(kind, object, false);
  });

  return {
    async sync() {
      await Promise.all(
        kinds.flatMap((kind) => store.list(kind).map((object) => reconcile(kind, object, true))),
      );
    },
    stop() {
      stopped = true;
      unsubscribe();
    },
  };
}
