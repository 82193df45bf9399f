/**
 * Where a cluster serves a custom resource, found through its API discovery
 * (`/apis`, then `/apis/<group>/<version>`) rather than assumed: an operator
 * may serve its resource under another group or version than the one a
 * profile was written against.
 */
import { ApisApi, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { kubeCall } from './kube.ts';

export interface ServedAt {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
}

/**
 * The group and version `resource` (a plural: `moduleinfos`) is served at:
 * in `group` and at `version` when they are given, else in the `prefer`
 * groups first, then in any, at each group's preferred version first.
 * Undefined when no group serves it. A group names several versions: one
 * request per version looked at, stopping at the first that serves it.
 */
export async function servedAt(
  kc: KubeConfig,
  resource: string,
  options: {
    readonly group?: string | undefined;
    readonly version?: string | undefined;
    readonly prefer?: readonly string[];
  } = {},
): Promise<ServedAt | undefined> {
  const server = kc.getCurrentCluster()?.server ?? '(unknown server)';
  const discovery = { verb: 'get', resource: '(discovery)', group: '' } as const;
  const list = await kubeCall(server, discovery, () => kc.makeApiClient(ApisApi).getAPIVersions());
  const prefer = options.prefer ?? [];
  const groups = list.groups
    .filter((g) => options.group === undefined || g.name === options.group)
    .sort((a, b) => Number(prefer.includes(b.name)) - Number(prefer.includes(a.name)));
  const custom = kc.makeApiClient(CustomObjectsApi);
  for (const group of groups) {
    const preferred = group.preferredVersion?.version;
    const versions = group.versions
      .map((v) => v.version)
      .filter((v) => options.version === undefined || v === options.version)
      .sort((a, b) => Number(b === preferred) - Number(a === preferred));
    for (const version of versions) {
      const resources = await kubeCall(server, { ...discovery, group: group.name }, () =>
        custom.getAPIResources({ group: group.name, version }),
      );
      const found = resources.resources.find((r) => r.name === resource);
      if (found !== undefined) return { group: group.name, version, kind: found.kind };
    }
  }
  return undefined;
}
