/**
 * Which objects a backup captures: namespaces and resource types included
 * and excluded (by `group/resource` names, as Velero and the backup center
 * name them), a label selector, and the objects the registry profile always
 * needs. Pure functions over discovery's types, so the rules are tested
 * without a cluster.
 */
import { z } from 'zod';
import { type ApiType, groupResourceOf, type KubeObject } from './resource-types.ts';

/** A DNS-1123 label (namespace names), or `*`. */
const namespaceName = z
  .string()
  .regex(
    /^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$/,
    'a namespace name (lower case letters, digits and -), or *',
  );

/** `deployments`, `deployments.apps`, `Deployment`, a short name such as `deploy`, or `*`. */
const resourceName = z
  .string()
  .regex(
    /^(\*|[A-Za-z0-9]([-A-Za-z0-9]*)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$/,
    'a resource name such as deployments, deployments.apps or statefulsets.apps, or *',
  );

/** What a backup captures besides the registry's own objects; empty includes mean everything. */
export const resourceSelectionSchema = z.strictObject({
  includeNamespaces: z.array(namespaceName).default([]),
  excludeNamespaces: z.array(namespaceName).default([]),
  includeResources: z.array(resourceName).default([]),
  excludeResources: z.array(resourceName).default([]),
  /** A label selector in the API's syntax (`app=nginx,tier in (web)`). */
  labelSelector: z.string().min(1).optional(),
});
export type ResourceSelection = z.infer<typeof resourceSelectionSchema>;

/**
 * Types never captured unless named in `includeResources`: what the cluster
 * makes on its own and a restore must not bring back (events, leases,
 * endpoints follow Services; nodes belong to the old cluster).
 */
export const EXCLUDED_BY_DEFAULT = [
  'events',
  'events.events.k8s.io',
  'nodes',
  'endpoints',
  'endpointslices.discovery.k8s.io',
  'leases.coordination.k8s.io',
  'componentstatuses',
] as const;

/** True when `name` (as a user gives it) names `type`. */
export function namesType(name: string, type: ApiType): boolean {
  if (name === '*') return true;
  const lower = name.toLowerCase();
  const plain = [type.resource, type.kind.toLowerCase(), ...type.shortNames];
  if (!lower.includes('.')) return plain.includes(lower);
  return lower === groupResourceOf(type) || plain.some((n) => `${n}.${type.group}` === lower);
}

const listed = (names: readonly string[], type: ApiType) => names.some((n) => namesType(n, type));
const allNamespaces = (selection: ResourceSelection) =>
  selection.includeNamespaces.length === 0 || selection.includeNamespaces.includes('*');

/** True when objects in `namespace` are captured. */
export function namespaceSelected(selection: ResourceSelection, namespace: string): boolean {
  return (
    (allNamespaces(selection) || selection.includeNamespaces.includes(namespace)) &&
    !selection.excludeNamespaces.includes(namespace)
  );
}

/**
 * Whether a type's objects are captured. Types that cannot be listed,
 * read and applied are not. Cluster-scoped types are captured only when
 * every namespace is (a backup of some namespaces takes what is in them),
 * or when `includeResources` names them; Namespaces are the exception: the
 * namespaces selected are always captured, to restore their labels.
 */
export function typeSelected(selection: ResourceSelection, type: ApiType): boolean {
  if (!['list', 'get', 'patch', 'create'].every((verb) => type.verbs.includes(verb))) return false;
  if (listed(selection.excludeResources, type)) return false;
  const named = selection.includeResources.some((n) => n !== '*' && namesType(n, type));
  if (type.group === '' && type.resource === 'namespaces') return true;
  if (!named && EXCLUDED_BY_DEFAULT.includes(groupResourceOf(type) as never)) return false;
  if (selection.includeResources.length > 0 && !listed(selection.includeResources, type))
    return false;
  return type.namespaced || named || allNamespaces(selection);
}

/** The namespaces to list a namespaced type in: undefined for all of them at once. */
export function listScopes(selection: ResourceSelection): readonly string[] | undefined {
  return allNamespaces(selection) ? undefined : selection.includeNamespaces;
}

/** Whether a listed object is captured (its namespace, for types listed across all). */
export function objectSelected(selection: ResourceSelection, object: KubeObject): boolean {
  const { namespace, name } = object.metadata;
  if (object.kind === 'Namespace' && object.apiVersion === 'v1')
    return namespaceSelected(selection, name);
  return namespace === undefined || namespaceSelected(selection, namespace);
}

/** An object the registry profile needs in every capture, named by its type and name. */
export interface RequiredObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly namespace?: string;
  readonly name: string;
}
