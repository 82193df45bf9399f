/**
 * An object as captured: what the user (or their tools) declared, without
 * what the server or the old cluster filled in. Applied to another cluster,
 * a cleaned object is created there as new, and gets its own uid, status and
 * cluster addresses.
 */
import type { KubeObject } from './resources-api.ts';

/** Metadata the server sets: none of it can be applied, and all of it belongs to the old object. */
const SERVER_METADATA = [
  'uid',
  'resourceVersion',
  'creationTimestamp',
  'generation',
  'managedFields',
  'selfLink',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
] as const;

/** Annotations that record the old cluster's state rather than the object's. */
const SERVER_ANNOTATIONS = [
  'kubectl.kubernetes.io/last-applied-configuration',
  'deployment.kubernetes.io/revision',
  'pv.kubernetes.io/bind-completed',
  'pv.kubernetes.io/bound-by-controller',
  'volume.kubernetes.io/selected-node',
] as const;

/** An owner reference as the API writes it. */
export interface OwnerReference {
  readonly apiVersion: string;
  readonly kind: string;
  readonly name: string;
  readonly uid?: string;
  readonly controller?: boolean;
  readonly blockOwnerDeletion?: boolean;
}

const record = (value: unknown): Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)
    ? { ...(value as Record<string, unknown>) }
    : {};

/** The owner references of an object (none when absent or malformed). */
export function ownerReferencesOf(object: KubeObject): OwnerReference[] {
  const refs = object.metadata['ownerReferences'];
  return (Array.isArray(refs) ? refs : []).filter(
    (ref): ref is OwnerReference =>
      typeof ref === 'object' &&
      ref !== null &&
      typeof Reflect.get(ref, 'kind') === 'string' &&
      typeof Reflect.get(ref, 'name') === 'string' &&
      typeof Reflect.get(ref, 'apiVersion') === 'string',
  );
}

/**
 * A copy of `object` without status, server-set metadata and the old
 * cluster's addresses: a Service's cluster IPs (unless headless), a PVC's
 * bound volume, a Pod's node. Owner references stay (see `keepOwners`).
 */
export function cleanObject(object: KubeObject): KubeObject {
  const { status: _status, ...rest } = structuredClone(object);
  const metadata = { ...rest.metadata };
  for (const key of SERVER_METADATA) delete metadata[key];
  if (metadata.annotations !== undefined) {
    const annotations = { ...metadata.annotations };
    for (const key of SERVER_ANNOTATIONS) delete annotations[key];
    if (Object.keys(annotations).length === 0) delete metadata.annotations;
    else metadata.annotations = annotations;
  }
  const spec = record(rest['spec']);
  const core = rest.apiVersion === 'v1';
  if (core && rest.kind === 'Service' && spec['clusterIP'] !== 'None') {
    delete spec['clusterIP'];
    delete spec['clusterIPs'];
  }
  if (core && rest.kind === 'PersistentVolumeClaim') delete spec['volumeName'];
  if (core && rest.kind === 'Pod') delete spec['nodeName'];
  return { ...rest, metadata, ...(rest['spec'] === undefined ? {} : { spec }) };
}

/**
 * The object with only the owner references `captured` accepts, and without
 * their old uids (a restore sets the new owners' uids): a reference to an
 * object left out of the capture would have the new cluster's garbage
 * collector delete the restored object.
 */
export function keepOwners(
  object: KubeObject,
  captured: (owner: OwnerReference, namespace: string | undefined) => boolean,
): KubeObject {
  const refs = ownerReferencesOf(object);
  if (refs.length === 0) return object;
  const kept = refs
    .filter((ref) => captured(ref, object.metadata.namespace))
    .map(({ uid: _uid, ...ref }) => ref);
  const { ownerReferences: _old, ...metadata } = object.metadata;
  return {
    ...object,
    metadata: kept.length === 0 ? metadata : { ...metadata, ownerReferences: kept },
  };
}
