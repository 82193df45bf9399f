/**
 * Field ownership and server-side apply, a faithful subset of the real
 * apiserver's structured-merge-diff: every write records which manager owns
 * which fields in `metadata.managedFields` (FieldsV1); an apply sets the
 * fields it names, conflicts with another manager's differing fields unless
 * forced, and removes fields it applied before and no longer names when no one
 * else owns them. Lists are atomic (the whole list is one field), where the
 * real server merges lists of named items by key: a conflict there names the
 * list rather than one item.
 */
import { KubeApiError, type KubeObject, type ResourceRef } from './store.ts';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const isObject = (value: unknown): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** Metadata the server sets or that names the object: nobody owns these. */
const UNOWNED_METADATA = new Set([
  'name',
  'namespace',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'managedFields',
  'selfLink',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
]);

/** One managed-fields entry as the apiserver writes it. */
export interface ManagedFieldsEntry {
  manager: string;
  operation: 'Apply' | 'Update';
  apiVersion: string;
  time: string;
  fieldsType: 'FieldsV1';
  fieldsV1: JsonObject;
  subresource?: string;
}

/** A leaf field: its path from the object's root, e.g. `["spec","replicas"]`. */
type FieldPath = readonly string[];
const keyOf = (path: FieldPath) => JSON.stringify(path);

/** The leaf fields of an object (status and server-set metadata left out), with their values. */
function leaves(object: JsonObject): Map<string, { path: FieldPath; value: Json }> {
  const out = new Map<string, { path: FieldPath; value: Json }>();
  const walk = (node: Json, path: string[]) => {
    if (isObject(node) && Object.keys(node).length > 0) {
      for (const [key, value] of Object.entries(node)) {
        if (path.length === 0 && ['apiVersion', 'kind', 'status'].includes(key)) continue;
        if (path.length === 1 && path[0] === 'metadata' && UNOWNED_METADATA.has(key)) continue;
        walk(value, [...path, key]);
      }
      return;
    }
    if (path.length > 0) out.set(keyOf(path), { path, value: node });
  };
  walk(object, []);
  return out;
}

/** A set of paths as FieldsV1: `{"f:spec":{"f:replicas":{}}}`, with `.` on a map owned itself. */
function toFieldsV1(paths: Iterable<FieldPath>): JsonObject {
  const root: JsonObject = {};
  for (const path of paths) {
    let node = root;
    for (const key of path) {
      const field = `f:${key}`;
      const next = node[field];
      node[field] = isObject(next) ? next : {};
      node = node[field] as JsonObject;
    }
  }
  return root;
}

/** The leaf paths a FieldsV1 value names. */
function fromFieldsV1(fields: JsonObject, prefix: string[] = []): FieldPath[] {
  const out: FieldPath[] = [];
  for (const [field, child] of Object.entries(fields)) {
    if (!field.startsWith('f:')) continue;
    const path = [...prefix, field.slice(2)];
    const below = isObject(child) ? fromFieldsV1(child, path) : [];
    if (below.length === 0) out.push(path);
    else out.push(...below);
  }
  return out;
}

/** Ownership per manager and operation, read from an object's managedFields. */
class Ownership {
  readonly #entries = new Map<
    string,
    { entry: ManagedFieldsEntry; paths: Map<string, FieldPath> }
  >();

  static of(object: KubeObject | undefined): Ownership {
    const ownership = new Ownership();
    const managed = object?.metadata['managedFields'];
    for (const entry of Array.isArray(managed) ? (managed as ManagedFieldsEntry[]) : []) {
      const paths = new Map(fromFieldsV1(entry.fieldsV1).map((p) => [keyOf(p), p] as const));
      ownership.#entries.set(`${entry.manager}\u0000${entry.operation}`, { entry, paths });
    }
    return ownership;
  }

  /** Managers other than `manager`'s apply entry that own `key`. */
  othersOwning(key: string, manager: string): string[] {
    return [...this.#entries.values()]
      .filter(
        ({ entry, paths }) =>
          paths.has(key) && !(entry.manager === manager && entry.operation === 'Apply'),
      )
      .map(({ entry }) => entry.manager);
  }

  owned(manager: string, operation: 'Apply' | 'Update'): Map<string, FieldPath> {
    return this.#entries.get(`${manager}\u0000${operation}`)?.paths ?? new Map();
  }

  /** Gives `paths` to `manager` for `operation`, taking them from everyone else. */
  take(
    manager: string,
    operation: 'Apply' | 'Update',
    paths: ReadonlyMap<string, FieldPath>,
    apiVersion: string,
    replace: boolean,
  ): void {
    const id = `${manager}\u0000${operation}`;
    for (const [other, { paths: owned }] of this.#entries)
      if (other !== id) for (const key of paths.keys()) owned.delete(key);
    const current = this.#entries.get(id);
    const merged = new Map(replace || current === undefined ? [] : current.paths);
    for (const [key, path] of paths) merged.set(key, path);
    this.#entries.set(id, {
      entry: {
        manager,
        operation,
        apiVersion,
        time: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
        fieldsType: 'FieldsV1',
        fieldsV1: {},
      },
      paths: merged,
    });
  }

  /** Drops paths the object no longer has, and managers left with nothing. */
  entries(object: JsonObject): ManagedFieldsEntry[] {
    const present = leaves(object);
    const out: ManagedFieldsEntry[] = [];
    for (const { entry, paths } of this.#entries.values()) {
      const kept = [...paths.entries()].filter(([key]) => present.has(key)).map(([, p]) => p);
      if (kept.length > 0) out.push({ ...entry, fieldsV1: toFieldsV1(kept) });
    }
    return out;
  }
}

const dotted = (path: FieldPath) => `.${path.join('.')}`;

/** Removes the leaf at `path`, and maps it leaves empty. */
function removePath(object: JsonObject, path: FieldPath): void {
  const parents: JsonObject[] = [];
  let node: Json = object;
  for (const key of path.slice(0, -1)) {
    if (!isObject(node)) return;
    parents.push(node);
    node = node[key] ?? null;
  }
  if (!isObject(node)) return;
  delete node[path[path.length - 1] as string];
  for (let i = parents.length - 1; i >= 0; i--) {
    const key = path[i] as string;
    const child = parents[i]?.[key];
    if (isObject(child) && Object.keys(child).length === 0) delete parents[i]?.[key];
    else break;
  }
}

/** Objects merge key by key; anything else (lists included) replaces. */
function merge(target: Json, applied: Json): Json {
  if (!isObject(applied) || !isObject(target)) return structuredClone(applied);
  const out: JsonObject = { ...target };
  for (const [key, value] of Object.entries(applied)) out[key] = merge(out[key] ?? null, value);
  return out;
}

/** What an apply request carries besides its object. */
export interface ApplyOptions {
  readonly manager: string;
  readonly force: boolean;
  /** `group/version` or `v1`, recorded in managedFields. */
  readonly apiVersion: string;
  /** The resource, for the details of a conflict. */
  readonly ref: Pick<ResourceRef, 'group' | 'resource'>;
}

/**
 * The object after `applied` is applied by `options.manager` over `current`
 * (undefined: the apply creates it). Conflicts with fields another manager
 * owns and holds at a different value are a 409 naming each one, unless forced.
 */
export function serverSideApply(
  current: KubeObject | undefined,
  applied: KubeObject,
  options: ApplyOptions,
): KubeObject {
  const ownership = Ownership.of(current);
  const base = (current ?? {
    apiVersion: applied.apiVersion,
    kind: applied.kind,
    metadata: {},
  }) as unknown as JsonObject;
  const wanted = leaves(applied as unknown as JsonObject);
  const existing = leaves(base);
  if (!options.force) {
    const conflicts = [...wanted].flatMap(([key, { path, value }]) => {
      const now = existing.get(key);
      if (now === undefined || JSON.stringify(now.value) === JSON.stringify(value)) return [];
      return ownership
        .othersOwning(key, options.manager)
        .map((m) => `conflict with "${m}": ${dotted(path)}`);
    });
    if (conflicts.length > 0) {
      throw new KubeApiError(
        'Conflict',
        `Apply failed with ${conflicts.length} conflict${conflicts.length === 1 ? '' : 's'}: ${conflicts.join('\n')}`,
        {
          name: applied.metadata.name,
          group: options.ref.group,
          kind: options.ref.resource,
          causes: conflicts.map((message) => ({ reason: 'FieldManagerConflict', message })),
        },
      );
    }
  }
  let result = merge(structuredClone(base), applied as unknown as JsonObject) as JsonObject;
  // Fields this manager applied before and no longer names go, unless someone else holds them too.
  for (const [key, path] of ownership.owned(options.manager, 'Apply')) {
    if (!wanted.has(key) && ownership.othersOwning(key, options.manager).length === 0)
      removePath(result, path);
  }
  ownership.take(
    options.manager,
    'Apply',
    new Map([...wanted].map(([key, { path }]) => [key, path])),
    options.apiVersion,
    true,
  );
  result = { ...result, metadata: { ...(result['metadata'] as JsonObject) } };
  (result['metadata'] as JsonObject)['managedFields'] = ownership.entries(
    result,
  ) as unknown as Json;
  return result as unknown as KubeObject;
}

/**
 * Records a non-apply write (create, update, patch) by `manager`: it owns
 * every field whose value it changed, taken from whoever owned it.
 */
export function recordUpdate(
  before: KubeObject | undefined,
  after: KubeObject,
  manager: string,
  apiVersion: string,
): KubeObject {
  const ownership = Ownership.of(before);
  const old = before === undefined ? new Map() : leaves(before as unknown as JsonObject);
  const changed = new Map<string, FieldPath>();
  for (const [key, { path, value }] of leaves(after as unknown as JsonObject)) {
    if (JSON.stringify(old.get(key)?.value) !== JSON.stringify(value)) changed.set(key, path);
  }
  if (changed.size > 0) ownership.take(manager, 'Update', changed, apiVersion, false);
  const entries = ownership.entries(after as unknown as JsonObject);
  return { ...after, metadata: { ...after.metadata, managedFields: entries } };
}

/**
 * The manager of a write that names none: what the real server derives from
 * the User-Agent, its program name (`kubectl-client-side-apply`,
 * `kubectl-create`, `node-fetch`...).
 */
export function managerOf(fieldManager: string | null, userAgent: string | undefined): string {
  if (fieldManager !== null && fieldManager !== '') return fieldManager;
  const program = (userAgent ?? '').split('/')[0]?.trim();
  return program === undefined || program === '' ? 'unknown' : program;
}
