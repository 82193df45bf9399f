/**
 * The object store behind the fake Kubernetes API server: typed keys, the
 * metadata the real apiserver maintains (uid, resourceVersion, generation,
 * creationTimestamp) and change events for watchers and the controller.
 */
import { randomUUID } from 'node:crypto';

/** Identifies a resource type: `{ group: '', version: 'v1', resource: 'pods' }`. */
export interface ResourceRef {
  readonly group: string;
  readonly version: string;
  readonly resource: string;
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

/** Any stored object; fields other than `metadata` are free-form JSON. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  [key: string]: unknown;
}

export const StatusReason = {
  BadRequest: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  MethodNotAllowed: 405,
  NotAcceptable: 406,
  AlreadyExists: 409,
  Conflict: 409,
  UnsupportedMediaType: 415,
  Invalid: 422,
  InternalError: 500,
} as const;
export type StatusReason = keyof typeof StatusReason;

/** An API failure that the server renders as a `Status` object. */
export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';
  readonly reason: StatusReason;
  readonly code: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    reason: StatusReason,
    message: string,
    details?: Record<string, unknown>,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.reason = reason;
    this.code = StatusReason[reason];
    this.details = details;
  }

  /** The `Status` body the real apiserver sends for this failure. */
  toStatus(): KubeObject {
    return {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {} as ObjectMeta,
      status: 'Failure',
      message: this.message,
      reason: this.reason,
      ...(this.details === undefined ? {} : { details: this.details }),
      code: this.code,
    };
  }
}

/** `moduleinfos.cluster.alauda.io` or `pods`: how the apiserver names a resource in messages. */
export function qualifiedResource(ref: Pick<ResourceRef, 'group' | 'resource'>): string {
  return ref.group === '' ? ref.resource : `${ref.resource}.${ref.group}`;
}

export function notFound(ref: ResourceRef, name: string): KubeApiError {
  return new KubeApiError('NotFound', `${qualifiedResource(ref)} "${name}" not found`, {
    name,
    group: ref.group,
    kind: ref.resource,
  });
}

export function conflict(ref: ResourceRef, name: string): KubeApiError {
  return new KubeApiError(
    'Conflict',
    `Operation cannot be fulfilled on ${qualifiedResource(ref)} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
    { name, group: ref.group, kind: ref.resource },
  );
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED';
export interface StoreEvent {
  readonly type: WatchEventType;
  readonly ref: ResourceRef;
  readonly object: KubeObject;
}
export type StoreListener = (event: StoreEvent) => void;

/** RFC 3339 without fractions, as the apiserver writes timestamps. */
const now = (): string => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');

const clone = <T>(value: T): T => structuredClone(value);

/** Everything but metadata and status: a change there bumps `metadata.generation`. */
function specOf(object: KubeObject): string {
  const { metadata: _metadata, status: _status, ...rest } = object;
  return JSON.stringify(rest);
}

/** In-memory object store with the bookkeeping of a real apiserver. */
export class ObjectStore {
  readonly #objects = new Map<string, KubeObject>();
  readonly #listeners = new Set<StoreListener>();
  #revision = 0;

  /** The latest resourceVersion handed out (what a list reports). */
  resourceVersion(): string {
    return String(this.#revision);
  }

  #key(ref: ResourceRef, namespace: string | undefined, name: string): string {
    return [ref.group, ref.version, ref.resource, namespace ?? '', name].join('\u0000');
  }

  #prefix(ref: ResourceRef, namespace?: string): string {
    const base = [ref.group, ref.version, ref.resource].join('\u0000');
    return namespace === undefined ? `${base}\u0000` : `${base}\u0000${namespace}\u0000`;
  }

  #emit(type: WatchEventType, ref: ResourceRef, object: KubeObject): void {
    for (const listener of [...this.#listeners]) listener({ type, ref, object: clone(object) });
  }

  /** Subscribes to every write; returns the unsubscribe function. */
  watch(listener: StoreListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  get(ref: ResourceRef, namespace: string | undefined, name: string): KubeObject | undefined {
    const found = this.#objects.get(this.#key(ref, namespace, name));
    return found === undefined ? undefined : clone(found);
  }

  /** Like `get`, but a missing object is a NotFound error. */
  read(ref: ResourceRef, namespace: string | undefined, name: string): KubeObject {
    const found = this.get(ref, namespace, name);
    if (found === undefined) throw notFound(ref, name);
    return found;
  }

  /** Objects of one type, in one namespace or (namespace undefined) everywhere, sorted like etcd keys. */
  list(ref: ResourceRef, namespace?: string): KubeObject[] {
    const prefix = this.#prefix(ref, namespace);
    return [...this.#objects.entries()]
      .filter(([key]) => key.startsWith(prefix))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, object]) => clone(object));
  }

  create(ref: ResourceRef, input: KubeObject): KubeObject {
    const { name, namespace } = input.metadata;
    const key = this.#key(ref, namespace, name);
    if (this.#objects.has(key)) {
      throw new KubeApiError(
        'AlreadyExists',
        `${qualifiedResource(ref)} "${name}" already exists`,
        {
          name,
          group: ref.group,
          kind: ref.resource,
        },
      );
    }
    const object = clone(input);
    const { resourceVersion: _ignored, ...metadata } = object.metadata;
    object.metadata = {
      ...metadata,
      uid: randomUUID(),
      resourceVersion: String(++this.#revision),
      generation: 1,
      creationTimestamp: now(),
    };
    this.#objects.set(key, object);
    this.#emit('ADDED', ref, object);
    return clone(object);
  }

  /**
   * Replaces an object. A non-empty `metadata.resourceVersion` that differs from
   * the stored one is a Conflict, as in the real optimistic concurrency check.
   */
  replace(ref: ResourceRef, input: KubeObject): KubeObject {
    const { name, namespace } = input.metadata;
    const key = this.#key(ref, namespace, name);
    const current = this.#objects.get(key);
    if (current === undefined) throw notFound(ref, name);
    const wanted = input.metadata.resourceVersion;
    if (wanted !== undefined && wanted !== '' && wanted !== current.metadata.resourceVersion) {
      throw conflict(ref, name);
    }
    const object = clone(input);
    const generation = current.metadata.generation ?? 1;
    object.metadata = {
      ...object.metadata,
      uid: current.metadata.uid ?? randomUUID(),
      creationTimestamp: current.metadata.creationTimestamp ?? now(),
      resourceVersion: String(++this.#revision),
      generation: specOf(current) === specOf(object) ? generation : generation + 1,
    };
    this.#objects.set(key, object);
    this.#emit('MODIFIED', ref, object);
    return clone(object);
  }

  /** Reads, transforms and replaces one object (the shape of a patch). */
  update(
    ref: ResourceRef,
    namespace: string | undefined,
    name: string,
    change: (current: KubeObject) => KubeObject,
  ): KubeObject {
    const current = this.read(ref, namespace, name);
    const next = change(clone(current));
    next.metadata = { ...next.metadata, name, ...(namespace === undefined ? {} : { namespace }) };
    return this.replace(ref, next);
  }

  delete(ref: ResourceRef, namespace: string | undefined, name: string): KubeObject {
    const key = this.#key(ref, namespace, name);
    const current = this.#objects.get(key);
    if (current === undefined) throw notFound(ref, name);
    this.#objects.delete(key);
    current.metadata.resourceVersion = String(++this.#revision);
    this.#emit('DELETED', ref, current);
    return clone(current);
  }
}
