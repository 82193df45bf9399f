/**
 * A snapshot in the vault as a registry layout fsck can check: its inventory
 * is the listing (no request), each read goes to the vault key a record names
 * (the blob pool, or this or an earlier snapshot's folder), and listings of
 * the vault prove every record is held at its size. The inventory is read a
 * part at a time, so the source holds a part, not the snapshot. The vault
 * reads the registry's checks, not the other way round.
 */
import type { InventoryRecord } from '../copy/model.ts';
import { PAGE_SIZE } from '../copy/model.ts';
import { ListedTarget, type PageEntry } from '../copy/target-state.ts';
import { VaultError } from '../errors.ts';
import {
  objectReader,
  type RegistryObject,
  type RegistrySource,
  type UnbackedObject,
} from '../registry/fsck-sources.ts';
import { blobDigestOf, normaliseRoot, REGISTRY_V2 } from '../registry/layout.ts';
import { type SnapshotManifest, vaultKeys } from './format.ts';
import { InventoryLookup, type InventoryLookupOptions } from './inventory-lookup.ts';
import { eachInventoryRecord, readInventoryPart, rootOf, type Vault } from './store.ts';

/** A snapshot in the vault as a source, read through its inventory. */
export function snapshotSource(
  vault: Vault,
  manifest: SnapshotManifest,
  options: { readonly lookup?: InventoryLookupOptions } = {},
): RegistrySource {
  if (manifest.layout !== 'registry') {
    throw new VaultError(
      manifest.layout === 'quay'
        ? `snapshot ${manifest.id} holds Quay's layout (its tags are in its database dump, not in links); fsck checks Docker Distribution layouts only: its backup's references check and a restore's proof and verification check a quay snapshot`
        : `snapshot ${manifest.id} holds a plain bucket, not a registry layout; fsck checks registry snapshots only`,
    );
  }
  const base = `${manifest.source.prefix}${normaliseRoot(manifest.source.rootDirectory)}${REGISTRY_V2}`;
  const root = rootOf(vault);
  const reader = objectReader(vault.client, vault.location.bucket);
  // Links may live in an earlier snapshot's folder: their records say where.
  // fsck reads them in key order, so the lookup walks the parts in turn.
  // Two parts kept: the reads come in key order, a few at once, and a part
  // holds 10,000 records (a whole cache of them was 48 MB at 300,000 objects).
  const lookup = new InventoryLookup(vault, manifest, { partsKept: 2, ...options.lookup });
  /** Vault keys of the objects found missing or of another size, for messages. */
  const located = new Map<string, string>();
  const vaultKeyOf = async (key: string): Promise<string | undefined> => {
    const digest = blobDigestOf(key);
    // A blob's vault key is its digest's place in the pool (vault/format.ts).
    if (digest !== undefined) return vaultKeys.blob(root, digest);
    const source = `${base}${key}`;
    const found = await lookup.lookup([
      { object: { key: source, size: 0, etag: '' }, targetKey: '' },
    ]);
    return found.get(source)?.targetKey;
  };
  return {
    label: 'the vault',
    locate: (key) => {
      const digest = blobDigestOf(key);
      return `vault key ${digest !== undefined ? vaultKeys.blob(root, digest) : (located.get(key) ?? key)}`;
    },
    async *list(): AsyncGenerator<RegistryObject> {
      for await (const record of eachInventoryRecord(vault, manifest))
        if (record.key.startsWith(base))
          yield { key: record.key.slice(base.length), size: record.size };
    },
    async read(key) {
      const target = await vaultKeyOf(key);
      return target === undefined ? undefined : reader.read(target);
    },
    async open(key) {
      const target = await vaultKeyOf(key);
      return target === undefined ? undefined : reader.open(target);
    },
    unbacked: async () => {
      const unbacked = await unbackedInSnapshot(vault, manifest, base);
      for (const object of unbacked) located.set(object.key, object.vaultKey);
      return unbacked;
    },
  };
}

/**
 * The records of `run` whose object, at `keyOf(record)` in the bucket
 * `listed` lists, is missing or of another size than recorded, found with one
 * listing of the run's key range (the keys must form one range, as a page of
 * a part does). `size` is what the bucket holds, absent when nothing.
 */
export async function unheldRecords(
  listed: ListedTarget,
  run: readonly InventoryRecord[],
  keyOf: (record: InventoryRecord) => string,
): Promise<Array<{ record: InventoryRecord; targetKey: string; size?: number }>> {
  const page: PageEntry[] = run.map((record) => ({
    object: { key: record.key, size: record.size, etag: record.etag },
    targetKey: keyOf(record),
  }));
  const found = await listed.lookup(page);
  const unheld: Array<{ record: InventoryRecord; targetKey: string; size?: number }> = [];
  run.forEach((record, index) => {
    const size = found.get(record.key)?.size;
    if (size === record.size) return;
    unheld.push({
      record,
      targetKey: page[index]?.targetKey ?? '',
      ...(size === undefined ? {} : { size }),
    });
  });
  return unheld;
}

/** The folder of the vault a vault key lies in (the pool, or one snapshot's objects). */
const folderOf = (vaultKey: string) =>
  /^(.*?(?:blobs\/sha256\/|snapshots\/[^/]+\/objects\/))/.exec(vaultKey)?.[1] ?? vaultKey;

/**
 * Records of a snapshot whose vault object is missing or of another size,
 * found by listing the vault, never reading: the inventory a part at a time,
 * each part's records in runs of one vault folder and a page, each run
 * checked against a listing of its key range (one LIST per 1,000 records, or
 * so). Keys under `base` are made relative to it.
 */
export async function unbackedInSnapshot(
  vault: Vault,
  manifest: SnapshotManifest,
  base: string,
): Promise<Array<UnbackedObject & { vaultKey: string }>> {
  const unbacked: Array<UnbackedObject & { vaultKey: string }> = [];
  const listed = new ListedTarget(vault.client, vault.location.bucket);
  const check = async (run: readonly InventoryRecord[]) => {
    for (const { record, size } of await unheldRecords(listed, run, (r) => r.targetKey))
      unbacked.push({
        key: record.key.startsWith(base) ? record.key.slice(base.length) : record.key,
        expectedSize: record.size,
        vaultKey: record.targetKey,
        ...(size === undefined ? {} : { actualSize: size }),
      });
  };
  for (let index = 0; index < manifest.inventory.parts.length; index++) {
    if (manifest.inventory.parts[index]?.records === 0) continue;
    const records = (await readInventoryPart(vault, manifest, index)).sort((a, b) =>
      a.targetKey < b.targetKey ? -1 : a.targetKey > b.targetKey ? 1 : 0,
    );
    let run: InventoryRecord[] = [];
    for (const record of records) {
      const last = run.at(-1);
      if (
        last !== undefined &&
        (run.length >= PAGE_SIZE || folderOf(last.targetKey) !== folderOf(record.targetKey))
      ) {
        await check(run);
        run = [];
      }
      run.push(record);
    }
    if (run.length > 0) await check(run);
  }
  return unbacked;
}
