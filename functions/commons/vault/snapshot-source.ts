/**
 * A snapshot in the vault as a registry layout fsck can check: its inventory
 * is the listing (no request), each read goes to the vault key a record names
 * (the blob pool, or this or an earlier snapshot's folder), and a listing of
 * the vault proves every record is held at its size. The vault reads the
 * registry's checks, not the other way round.
 */
import type { InventoryRecord } from '../copy/model.ts';
import { VaultError } from '../errors.ts';
import {
  listAll,
  objectReader,
  type RegistryObject,
  type RegistrySource,
  type UnbackedObject,
} from '../registry/fsck-sources.ts';
import { normaliseRoot, REGISTRY_V2 } from '../registry/layout.ts';
import type { SnapshotManifest } from './format.ts';
import { listKeys, readInventory, type Vault } from './store.ts';

/**
 * Inventory records of a registry backup as a source: listing is the records
 * (no request), reads go to each record's vault key (a pool blob, or an object
 * under this or an earlier snapshot). `base` is the source key prefix up to
 * and including `docker/registry/v2/`. Backup finalize can call this with the
 * records it holds, before the inventory is even written.
 */
export function recordsSource(
  vault: Vault,
  records: readonly InventoryRecord[],
  base: string,
): RegistrySource {
  const targets = new Map<string, string>();
  const objects: RegistryObject[] = [];
  for (const record of records) {
    if (!record.key.startsWith(base)) continue;
    const key = record.key.slice(base.length);
    targets.set(key, record.targetKey);
    objects.push({ key, size: record.size });
  }
  const reader = objectReader(vault.client, vault.location.bucket);
  return {
    label: 'the vault',
    locate: (key) => `vault key ${targets.get(key) ?? key}`,
    list: async () => objects,
    async read(key) {
      const target = targets.get(key);
      return target === undefined ? undefined : reader.read(target);
    },
    async open(key) {
      const target = targets.get(key);
      return target === undefined ? undefined : reader.open(target);
    },
  };
}

/** A snapshot in the vault as a source, read through its inventory. */
export function snapshotSource(vault: Vault, manifest: SnapshotManifest): RegistrySource {
  if (manifest.layout !== 'registry') {
    throw new VaultError(
      `snapshot ${manifest.id} holds a plain bucket, not a registry layout; fsck checks registry snapshots only`,
    );
  }
  const base = `${manifest.source.prefix}${normaliseRoot(manifest.source.rootDirectory)}${REGISTRY_V2}`;
  let loaded: Promise<RegistrySource> | undefined;
  const inner = () => {
    loaded ??= readInventory(vault, manifest).then((records) =>
      recordsSource(vault, records, base),
    );
    return loaded;
  };
  let records: Promise<readonly InventoryRecord[]> | undefined;
  const recordsOf = () => {
    records ??= readInventory(vault, manifest);
    return records;
  };
  let located: Map<string, string> | undefined;
  return {
    label: 'the vault',
    locate: (key) => `vault key ${located?.get(key) ?? key}`,
    list: async () => {
      const source = await inner();
      located = new Map(
        (await recordsOf())
          .filter((r) => r.key.startsWith(base))
          .map((r) => [r.key.slice(base.length), r.targetKey]),
      );
      return listAll(source.list());
    },
    read: async (key) => (await inner()).read(key),
    open: async (key) => (await inner()).open?.(key),
    unbacked: async () => unbackedRecords(vault, await recordsOf(), base),
  };
}

/**
 * Inventory records whose vault object is missing or of another size, found
 * by listing the vault prefixes the records point into (the blob pool, the
 * snapshots' object trees): one LIST per 1,000 vault objects, no read.
 */
export async function unbackedRecords(
  vault: Vault,
  records: readonly InventoryRecord[],
  base: string,
): Promise<UnbackedObject[]> {
  const prefixes = new Set<string>();
  for (const record of records) {
    const match = /^(.*?(?:blobs\/sha256\/|snapshots\/[^/]+\/objects\/))/.exec(record.targetKey);
    prefixes.add(match?.[1] ?? record.targetKey);
  }
  const held = new Map<string, number>();
  for (const prefix of prefixes)
    for (const object of await listKeys(vault, prefix)) held.set(object.key, object.size);
  const unbacked: UnbackedObject[] = [];
  for (const record of records) {
    const size = held.get(record.targetKey);
    if (size === record.size) continue;
    unbacked.push({
      key: record.key.startsWith(base) ? record.key.slice(base.length) : record.key,
      expectedSize: record.size,
      ...(size === undefined ? {} : { actualSize: size }),
    });
  }
  return unbacked;
}
