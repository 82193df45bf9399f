/**
 * The cluster objects of a snapshot (docs/vault-format.md, "resources/"):
 * one YAML file per object under `snapshots/<id>/resources/`, and
 * `resources/index.json`, written last, naming each object, its type and its
 * file. This module alone builds these keys and reads and writes these files.
 * Secrets are stored as the vault's other data are (the bucket's encryption,
 * SSE-KMS in the stack); the index marks them so nothing prints their values.
 */
import { parse, stringify } from 'yaml';
import { z } from 'zod';
import type { KubeObject } from '../cluster/resources-api.ts';
import { resourceSelectionSchema } from '../cluster/resources-select.ts';
import { VaultError } from '../errors.ts';
import { vaultKeys } from './format.ts';
import { getBytes, getJson, putBytes, putJson, rootOf, type Vault } from './store.ts';

/** One captured object: its type, its name, and its file below `resources/`. */
export const resourceEntrySchema = z.strictObject({
  group: z.string(),
  version: z.string().min(1),
  resource: z.string().min(1),
  kind: z.string().min(1),
  namespaced: z.boolean(),
  namespace: z.string().min(1).optional(),
  name: z.string().min(1),
  file: z.string().min(1),
  /** A Secret: its data is never printed. */
  secret: z.boolean(),
  /** Why it was captured when the selection alone would not have: the registry profile needs it. */
  required: z.boolean(),
});
export type ResourceEntry = z.infer<typeof resourceEntrySchema>;

export const RESOURCES_FORMAT_VERSION = 1;

export const resourceIndexSchema = z.strictObject({
  formatVersion: z.literal(RESOURCES_FORMAT_VERSION),
  capturedAt: z.iso.datetime(),
  /** The API server captured from. */
  server: z.string(),
  selection: resourceSelectionSchema,
  objects: z.array(resourceEntrySchema),
});
export type ResourceIndex = z.infer<typeof resourceIndexSchema>;

/** Path segments that cannot climb out of the folder or clash with another object's. */
const segment = (value: string) => encodeURIComponent(value).replaceAll('.', '%2E');

/** The file of an object below `resources/`: `apps/deployments/shop/web.yaml`, `core/namespaces/_cluster/shop.yaml`. */
export function resourceFileOf(
  entry: Pick<ResourceEntry, 'group' | 'resource' | 'namespace' | 'name'>,
): string {
  const group = entry.group === '' ? 'core' : entry.group;
  const scope = entry.namespace === undefined ? '_cluster' : segment(entry.namespace);
  return `${group}/${segment(entry.resource)}/${scope}/${segment(entry.name)}.yaml`;
}

const keyOf = (vault: Vault, snapshotId: string, file: string) =>
  `${vaultKeys.resources(rootOf(vault), snapshotId)}${file}`;

/** Writes one object's file (YAML). */
export async function writeResourceObject(
  vault: Vault,
  snapshotId: string,
  entry: ResourceEntry,
  object: KubeObject,
): Promise<void> {
  await putBytes(
    vault,
    keyOf(vault, snapshotId, entry.file),
    Buffer.from(stringify(object)),
    'application/yaml',
  );
}

/** Reads one object's file; a file the index names and the vault lacks is a damaged snapshot. */
export async function readResourceObject(
  vault: Vault,
  snapshotId: string,
  entry: ResourceEntry,
): Promise<KubeObject> {
  const key = keyOf(vault, snapshotId, entry.file);
  const bytes = await getBytes(vault, key);
  const object: unknown = bytes === undefined ? undefined : parse(bytes.toString('utf8'));
  if (
    typeof object !== 'object' ||
    object === null ||
    typeof Reflect.get(object, 'metadata') !== 'object'
  )
    throw new VaultError(
      `s3://${vault.location.bucket}/${key} ${bytes === undefined ? 'is missing' : 'is not a Kubernetes object'}, though the snapshot's resources/index.json names it; run \`regvault fsck\` on snapshot ${snapshotId}`,
    );
  return object as KubeObject;
}

/** Writes the index, last of the capture's files: a snapshot has resources once it exists. */
export async function writeResourceIndex(
  vault: Vault,
  snapshotId: string,
  index: ResourceIndex,
): Promise<void> {
  await putJson(vault, keyOf(vault, snapshotId, 'index.json'), index);
}

/** The snapshot's index, or undefined when its backup captured no cluster objects. */
export function readResourceIndex(
  vault: Vault,
  snapshotId: string,
): Promise<ResourceIndex | undefined> {
  return getJson(vault, keyOf(vault, snapshotId, 'index.json'), resourceIndexSchema);
}
