/**
 * The shapes of Kubernetes resource types and objects as regvault handles
 * them, and how kubectl names them. No client-node here: the code that only
 * selects or names resources (every backup) must not load the Kubernetes
 * client, the compiled CLI's largest chunk (7 MB), when no cluster is used.
 */

/** A resource type as discovery describes it, at its group's preferred version. */
export interface ApiType {
  readonly group: string;
  readonly version: string;
  /** The plural: `deployments`. */
  readonly resource: string;
  readonly kind: string;
  readonly namespaced: boolean;
  readonly verbs: readonly string[];
  readonly shortNames: readonly string[];
}

/** A Kubernetes object as the API serves it: apiVersion, kind, metadata, and free-form JSON. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

/** `v1` or `apps/v1`. */
export const apiVersionOf = (type: Pick<ApiType, 'group' | 'version'>): string =>
  type.group === '' ? type.version : `${type.group}/${type.version}`;

/** `deployments.apps`, or `pods` for the core group: how kubectl and Velero name a type. */
export const groupResourceOf = (type: Pick<ApiType, 'group' | 'resource'>): string =>
  type.group === '' ? type.resource : `${type.resource}.${type.group}`;
