/**
 * The resource types the fake apiserver serves (built-in kinds and ACP's
 * ModuleInfo), in a module of their own so the server, its OpenAPI and table
 * printers and the controller all depend on it rather than on each other.
 */
import type { ResourceRef } from './store.ts';

/** A resource type the server serves, with what discovery tells clients about it. */
export interface ResourceDefinition extends ResourceRef {
  readonly kind: string;
  readonly singular: string;
  readonly namespaced: boolean;
  readonly shortNames?: readonly string[];
  /** Subresources beyond the object itself, e.g. `log` for pods. */
  readonly subresources?: readonly string[];
  /** Custom resources reject strategic merge patches, as the real apiserver does. */
  readonly custom?: boolean;
}

/** Where ACP keeps its ModuleInfo custom resource; every field can be overridden. */
export interface ModuleInfoResource {
  readonly group?: string;
  readonly version?: string;
  readonly plural?: string;
  readonly kind?: string;
  readonly singular?: string;
}

const core = (
  resource: string,
  kind: string,
  singular: string,
  extra: Partial<ResourceDefinition> = {},
) =>
  ({
    group: '',
    version: 'v1',
    resource,
    kind,
    singular,
    namespaced: true,
    ...extra,
  }) as ResourceDefinition;

/** The built-in types: references to them for the store and the controller. */
export const BuiltIn = {
  namespaces: core('namespaces', 'Namespace', 'namespace', {
    namespaced: false,
    shortNames: ['ns'],
  }),
  secrets: core('secrets', 'Secret', 'secret'),
  configmaps: core('configmaps', 'ConfigMap', 'configmap', { shortNames: ['cm'] }),
  pods: core('pods', 'Pod', 'pod', { shortNames: ['po'], subresources: ['exec', 'log', 'status'] }),
  services: core('services', 'Service', 'service', {
    shortNames: ['svc'],
    subresources: ['status'],
  }),
  serviceaccounts: core('serviceaccounts', 'ServiceAccount', 'serviceaccount', {
    shortNames: ['sa'],
  }),
  persistentvolumeclaims: core(
    'persistentvolumeclaims',
    'PersistentVolumeClaim',
    'persistentvolumeclaim',
    {
      shortNames: ['pvc'],
      subresources: ['status'],
    },
  ),
  statefulsets: {
    group: 'apps',
    version: 'v1',
    resource: 'statefulsets',
    kind: 'StatefulSet',
    singular: 'statefulset',
    namespaced: true,
    shortNames: ['sts'],
    subresources: ['scale', 'status'],
  } as ResourceDefinition,
  jobs: {
    group: 'batch',
    version: 'v1',
    resource: 'jobs',
    kind: 'Job',
    singular: 'job',
    namespaced: true,
    subresources: ['status'],
  } as ResourceDefinition,
  storageclasses: {
    group: 'storage.k8s.io',
    version: 'v1',
    resource: 'storageclasses',
    kind: 'StorageClass',
    singular: 'storageclass',
    namespaced: false,
    shortNames: ['sc'],
  } as ResourceDefinition,
  customresourcedefinitions: {
    group: 'apiextensions.k8s.io',
    version: 'v1',
    resource: 'customresourcedefinitions',
    kind: 'CustomResourceDefinition',
    singular: 'customresourcedefinition',
    namespaced: false,
    shortNames: ['crd', 'crds'],
    subresources: ['status'],
  } as ResourceDefinition,
  deployments: {
    group: 'apps',
    version: 'v1',
    resource: 'deployments',
    kind: 'Deployment',
    singular: 'deployment',
    namespaced: true,
    shortNames: ['deploy'],
    subresources: ['scale', 'status'],
  } as ResourceDefinition,
  replicasets: {
    group: 'apps',
    version: 'v1',
    resource: 'replicasets',
    kind: 'ReplicaSet',
    singular: 'replicaset',
    namespaced: true,
    shortNames: ['rs'],
    subresources: ['status'],
  } as ResourceDefinition,
} as const;

/** The ModuleInfo definition with defaults filled in. */
export function moduleInfoDefinition(options: ModuleInfoResource = {}): ResourceDefinition {
  return {
    group: options.group ?? 'cluster.alauda.io',
    version: options.version ?? 'v1alpha1',
    resource: options.plural ?? 'moduleinfos',
    kind: options.kind ?? 'ModuleInfo',
    singular: options.singular ?? 'moduleinfo',
    namespaced: false,
    subresources: ['status'],
    custom: true,
  };
}

const text = (value: unknown): string | undefined =>
  typeof value === 'string' && value !== '' ? value : undefined;
const field = (value: unknown, name: string): unknown =>
  typeof value === 'object' && value !== null ? Reflect.get(value, name) : undefined;

/**
 * The types a CustomResourceDefinition serves (one per served version), as
 * the real apiserver starts serving them once the definition is created; an
 * empty list for a definition that lacks what a type needs.
 */
export function definitionsOfCrd(crd: unknown): ResourceDefinition[] {
  const spec = field(crd, 'spec');
  const names = field(spec, 'names');
  const group = text(field(spec, 'group'));
  const plural = text(field(names, 'plural'));
  const kind = text(field(names, 'kind'));
  const versions = field(spec, 'versions');
  if (group === undefined || plural === undefined || kind === undefined || !Array.isArray(versions))
    return [];
  const shortNames = field(names, 'shortNames');
  return versions
    .filter((v) => field(v, 'served') !== false && text(field(v, 'name')) !== undefined)
    .map((v) => ({
      group,
      version: text(field(v, 'name')) as string,
      resource: plural,
      kind,
      singular: text(field(names, 'singular')) ?? kind.toLowerCase(),
      namespaced: field(spec, 'scope') !== 'Cluster',
      ...(Array.isArray(shortNames)
        ? { shortNames: shortNames.filter((n) => typeof n === 'string') }
        : {}),
      ...(typeof field(field(v, 'subresources'), 'status') === 'object'
        ? { subresources: ['status'] }
        : {}),
      custom: true,
    }));
}
