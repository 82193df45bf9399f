/**
 * The backup's capture of cluster objects (docs/resources.md): the types
 * discovery lists, the objects the selection takes, a page at a time, each
 * cleaned and written to the snapshot as it is read, then the objects the
 * registry profile needs, the namespaces and definitions the captured objects
 * live in, and the index last. Memory holds the index (a line per object),
 * never the objects of a whole type.
 */

import { type ApiType, apiVersionOf, type KubeObject } from '../cluster/resource-types.ts';
import type { ResourceApi } from '../cluster/resources-api.ts';
import {
  cleanObject,
  keepOwners,
  type OwnerReference,
  ownerReferencesOf,
} from '../cluster/resources-clean.ts';
import {
  listScopes,
  objectSelected,
  type RequiredObject,
  type ResourceSelection,
  typeSelected,
} from '../cluster/resources-select.ts';
import type { StepLogger } from '../log.ts';
import {
  RESOURCES_FORMAT_VERSION,
  type ResourceEntry,
  readResourceObject,
  resourceFileOf,
  writeResourceIndex,
  writeResourceObject,
} from '../vault/resources.ts';
import type { Vault } from '../vault/store.ts';

/** What a capture took, for the backup's log and result. */
export interface CaptureSummary {
  readonly objects: number;
  readonly secrets: number;
  readonly types: number;
}

export interface CaptureInput {
  readonly vault: Vault;
  readonly api: ResourceApi;
  readonly snapshotId: string;
  readonly selection: ResourceSelection;
  /** What the registry profile needs whatever the selection says. */
  readonly required: readonly RequiredObject[];
  readonly log: StepLogger;
  readonly now: Date;
  /** Objects a list page; 500 as kubectl's chunks unless given. */
  readonly pageSize?: number;
}

const identity = (
  type: Pick<ApiType, 'group' | 'resource'>,
  namespace: string | undefined,
  name: string,
) => `${type.group}/${type.resource}/${namespace ?? ''}/${name}`;

const groupOf = (apiVersion: string) => (apiVersion.includes('/') ? apiVersion.split('/')[0] : '');

/** Captures the selected objects into the snapshot and writes its resources index. */
export async function captureResources(input: CaptureInput): Promise<CaptureSummary> {
  const { api, vault, snapshotId, selection } = input;
  const types = await api.discover();
  const byKind = new Map(types.map((t) => [`${t.group}/${t.kind}`, t]));
  const typeOf = (apiVersion: string, kind: string) => byKind.get(`${groupOf(apiVersion)}/${kind}`);
  const entries: ResourceEntry[] = [];
  const seen = new Set<string>();
  /** Files whose owner references name objects the capture may not hold: checked at the end. */
  const owned: ResourceEntry[] = [];

  const write = async (type: ApiType, object: KubeObject, required: boolean) => {
    const { namespace, name } = object.metadata;
    const key = identity(type, type.namespaced ? namespace : undefined, name);
    if (seen.has(key)) return;
    seen.add(key);
    const entry: ResourceEntry = {
      group: type.group,
      version: type.version,
      resource: type.resource,
      kind: type.kind,
      namespaced: type.namespaced,
      ...(type.namespaced && namespace !== undefined ? { namespace } : {}),
      name,
      file: resourceFileOf({ ...type, ...(type.namespaced ? { namespace } : {}), name }),
      secret: type.group === '' && type.resource === 'secrets',
      required,
    };
    const cleaned = keepOwners(
      cleanObject({ ...object, apiVersion: apiVersionOf(type), kind: type.kind }),
      () => true,
    );
    await writeResourceObject(vault, snapshotId, entry, cleaned);
    entries.push(entry);
    if (ownerReferencesOf(cleaned).length > 0) owned.push(entry);
  };

  const selected = types.filter((type) => typeSelected(selection, type));
  for (const type of selected) {
    const scopes = type.namespaced ? (listScopes(selection) ?? [undefined]) : [undefined];
    for (const namespace of scopes) {
      const pages = api.listPages(type, {
        ...(namespace === undefined ? {} : { namespace }),
        ...(input.pageSize === undefined ? {} : { limit: input.pageSize }),
        // Namespaces that hold what the selector takes are added at the end.
        ...(selection.labelSelector === undefined
          ? {}
          : { labelSelector: selection.labelSelector }),
      });
      for await (const page of pages)
        for (const object of page)
          if (objectSelected(selection, object)) await write(type, object, false);
    }
  }

  const fetchAndWrite = async (wanted: RequiredObject, required: boolean) => {
    const type = typeOf(wanted.apiVersion, wanted.kind);
    const object =
      type === undefined ? undefined : await api.get(type, wanted.namespace, wanted.name);
    if (type === undefined || object === undefined) {
      input.log.warn('a resource the capture needs is not in the cluster', { ...wanted });
      return;
    }
    await write(type, object, required);
  };
  for (const wanted of input.required) await fetchAndWrite(wanted, true);
  // The namespaces of what was captured, and the definitions of its custom types.
  const namespaces = new Set(
    entries.flatMap((e) => (e.namespace === undefined ? [] : [e.namespace])),
  );
  for (const name of namespaces)
    await fetchAndWrite({ apiVersion: 'v1', kind: 'Namespace', name }, false);
  const crd = typeOf('apiextensions.k8s.io/v1', 'CustomResourceDefinition');
  const customTypes = new Set(
    entries.map((e) => `${e.resource}.${e.group}`).filter((n) => !n.endsWith('.')),
  );
  if (crd !== undefined)
    for (const name of customTypes) {
      const definition = await api.get(crd, undefined, name);
      if (definition !== undefined) await write(crd, definition, false);
    }

  // Owner references to objects left out would let the new cluster's collector delete the object.
  const capturedOwner = (owner: OwnerReference, namespace: string | undefined) => {
    const type = typeOf(owner.apiVersion, owner.kind);
    return (
      type !== undefined &&
      seen.has(identity(type, type.namespaced ? namespace : undefined, owner.name))
    );
  };
  for (const entry of owned) {
    const object = await readResourceObject(vault, snapshotId, entry);
    const kept = keepOwners(object, capturedOwner);
    if (ownerReferencesOf(kept).length !== ownerReferencesOf(object).length)
      await writeResourceObject(vault, snapshotId, entry, kept);
  }

  await writeResourceIndex(vault, snapshotId, {
    formatVersion: RESOURCES_FORMAT_VERSION,
    capturedAt: input.now.toISOString(),
    server: api.server,
    selection,
    objects: entries,
  });
  return {
    objects: entries.length,
    secrets: entries.filter((e) => e.secret).length,
    types: new Set(entries.map((e) => `${e.group}/${e.resource}`)).size,
  };
}
