/**
 * Which registry a cluster runs, from the resources each profile knows: the
 * ACP ModuleInfo by its label, QuayRegistries in any namespace, the
 * docker-registry and Harbor registry Deployments where their settings put
 * them. A type the cluster does not serve (its operator is not installed, a
 * 404 on the group) is simply not there; a read the cluster refuses is
 * reported as such, so that the caller can say what it could not look at.
 */
import { AppsV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { isNotFound, KubeApiError, kubeCall } from '../cluster/kube.ts';
import { servedAt } from '../cluster/served.ts';
import { ACP_GROUP, type AcpSettings } from './acp-settings.ts';
import type { DistributionSettings } from './distribution-settings.ts';
import { QUAY } from './quay-cluster.ts';

/** What one profile found: each resource as `Kind namespace/name`, or why it could not look. */
export interface Found {
  readonly resources: readonly string[];
  /** Set when the cluster refused the read (403): the profile may be there unseen. */
  readonly refused?: string;
}

const serverOf = (kc: KubeConfig) => kc.getCurrentCluster()?.server ?? '(unknown server)';

/** Runs a look-up: a 404 is nothing found, a 403 a refusal to report; anything else fails. */
async function looked(what: string, look: () => Promise<string[]>): Promise<Found> {
  try {
    return { resources: await look() };
  } catch (err) {
    if (isNotFound(err)) return { resources: [] };
    if (err instanceof KubeApiError && err.status === 403)
      return { resources: [], refused: `${what}: refused (403)` };
    throw err;
  }
}

/** The ModuleInfos labelled as ACP's registry, when the cluster serves ModuleInfo at all. */
export function findModuleInfos(kc: KubeConfig, settings: AcpSettings): Promise<Found> {
  return looked(`list ${settings.plural}`, async () => {
    const type = await servedAt(kc, settings.plural, {
      group: settings.group,
      version: settings.version,
      prefer: [ACP_GROUP],
    });
    if (type === undefined) return [];
    const { group, version } = type;
    const list = (await kubeCall(
      serverOf(kc),
      { verb: 'list', resource: settings.plural, group },
      () =>
        kc.makeApiClient(CustomObjectsApi).listClusterCustomObject({
          group,
          version,
          plural: settings.plural,
          labelSelector: settings.labelSelector,
        }),
    )) as { items?: Array<{ metadata?: { name?: string } }> };
    return (list.items ?? []).map((i) => `${type.kind} ${i.metadata?.name ?? '?'}`);
  });
}

/** Every QuayRegistry of the cluster, in any namespace. */
export function findQuayRegistries(kc: KubeConfig): Promise<Found> {
  return looked(`list ${QUAY.plural}.${QUAY.group} in all namespaces`, async () => {
    const list = (await kubeCall(
      serverOf(kc),
      { verb: 'list', resource: QUAY.plural, group: QUAY.group },
      () => kc.makeApiClient(CustomObjectsApi).listClusterCustomObject({ ...QUAY }),
    )) as { items?: Array<{ metadata?: { name?: string; namespace?: string } }> };
    return (list.items ?? []).map(
      (i) => `QuayRegistry ${i.metadata?.namespace ?? '?'}/${i.metadata?.name ?? '?'}`,
    );
  });
}

/** The registry Deployment a Deployment-run profile's settings name, when it exists. */
export function findDeployment(kc: KubeConfig, settings: DistributionSettings): Promise<Found> {
  const { namespace, deployment: name } = settings;
  return looked(`get deployments "${name}" in namespace ${namespace}`, async () => {
    await kubeCall(
      serverOf(kc),
      { verb: 'get', resource: 'deployments', group: 'apps', namespace, name },
      () => kc.makeApiClient(AppsV1Api).readNamespacedDeployment({ name, namespace }),
    );
    return [`Deployment ${namespace}/${name}`];
  });
}
