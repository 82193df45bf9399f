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
  objectReader,
  type RegistryObject,
  type RegistrySource,
  type UnbackedObject,
} from '../registry/fsck-sources.ts';
import { normaliseRoot, REGISTRY_V2 } from '../registry/layout.ts';
import type { SnapshotManifest } from './format.ts';
import { eachListedKey, readInventory, type Vault } from './store.ts';

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
  for (const record of records)
    if (record.key.startsWith(base)) targets.set(record.key.slice(base.length), record.targetKey);
  const reader = objectReader(vault.client, vault.location.bucket);
  return {
    label: 'the vault',
    locate: (key) => `vault key ${targets.get(key) ?? key}`,
    // The records are the listing: handed out one by one, not copied.
    async *list() {
      for (const record of records)
        if (record.key.startsWith(base))
          yield { key: record.key.slice(base.length), size: record.size };
    },
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
  // The inventory is read once and held once: it is the listing, and where each read goes.
  let records: Promise<readonly InventoryRecord[]> | undefined;
  const recordsOf = () => {
    records ??= readInventory(vault, manifest);
    return records;
  };
  let loaded: Promise<RegistrySource> | undefined;
  const inner = () => {
    loaded ??= recordsOf().then((held) => recordsSource(vault, held, base));
    return loaded;
  };
  let ready: RegistrySource | undefined;
  return {
    label: 'the vault',
    locate: (key) => ready?.locate?.(key) ?? `vault key ${key}`,
    list: async function* () {
      ready = await inner();
      yield* ready.list() as AsyncIterable<RegistryObject>;
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
  // What the records promise, by vault key; the vault's listing streams past it.
  const promised = new Map<string, InventoryRecord>();
  for (const record of records) promised.set(record.targetKey, record);
  const unbacked: UnbackedObject[] = [];
  const report = (record: InventoryRecord, actualSize?: number) =>
    unbacked.push({
      key: record.key.startsWith(base) ? record.key.slice(base.length) : record.key,
      expectedSize: record.size,
      ...(actualSize === undefined ? {} : { actualSize }),
    });
  for (const prefix of prefixes) {
    for await (const object of eachListedKey(vault, prefix)) {
      const record = promised.get(object.key);
      if (record === undefined) continue;
      promised.delete(object.key);
      if (object.size !== record.size) report(record, object.size);
    }
  }
  for (const record of promised.values()) report(record);
  return unbacked;
}
