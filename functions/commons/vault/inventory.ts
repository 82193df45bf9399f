/**
 * Writing a snapshot's inventory (`inventory.jsonl.gz`): one gzip member per
 * part, blob parts listed before link parts for a registry, so a restore
 * worker reads one part and the blobs go back before any link. store.ts and
 * inventory-lookup.ts read it.
 */
import type { InventoryRecord } from '../copy/model.ts';
import { type BlobLayout, DISTRIBUTION_LAYOUT } from '../registry/blob-layout.ts';
import { type SnapshotManifest, vaultKeys } from './format.ts';
import { gzipLines, openUpload, rootOf, type Vault, type VaultUpload } from './store.ts';

/** Records per inventory part: small enough for one worker invocation to restore. */
export const INVENTORY_PART_RECORDS = 10_000;

type PartKind = SnapshotManifest['inventory']['parts'][number]['kind'];
type PartEntry = SnapshotManifest['inventory']['parts'][number];

/** The inventory's order: by key, as JavaScript compares strings (the parts' bounds and lookups compare so). */
export const byKey = (a: { readonly key: string }, b: { readonly key: string }) =>
  a.key < b.key ? -1 : a.key > b.key ? 1 : 0;

/**
 * Writes a snapshot's inventory as records come, holding at most a part of
 * each kind and one upload part in memory, however many records the
 * snapshot has: finalize feeds it shard by shard. Each part is sorted and
 * bounded by its first and last key; parts of a kind follow one another in
 * the order their records came (in key order, when they came so). The file
 * is one PUT when it ends small, a multipart upload otherwise.
 */
export class InventoryWriter {
  readonly #upload: VaultUpload;
  readonly #registryBase: string | undefined;
  readonly #layout: BlobLayout;
  readonly #partRecords: number;
  readonly #held = new Map<PartKind, InventoryRecord[]>();
  readonly #parts: Array<PartEntry & { order: number }> = [];
  #offset = 0;
  #records = 0;
  /** The part last handed on: its member is appended once the ones before it are. */
  #appended: Promise<void> = Promise.resolve();

  constructor(
    vault: Vault,
    snapshotId: string,
    registryBase: string | undefined,
    options: { partRecords?: number; uploadPartBytes?: number; layout?: BlobLayout } = {},
  ) {
    this.#upload = openUpload(
      vault,
      vaultKeys.inventory(rootOf(vault), snapshotId),
      'application/gzip',
      options.uploadPartBytes,
    );
    this.#registryBase = registryBase;
    this.#layout = options.layout ?? DISTRIBUTION_LAYOUT;
    this.#partRecords = options.partRecords ?? INVENTORY_PART_RECORDS;
  }

  #kindOf(record: InventoryRecord): PartKind {
    const base = this.#registryBase;
    if (base === undefined) return 'objects';
    if (
      record.key.startsWith(base) &&
      this.#layout.digestOf(record.key.slice(base.length)) !== undefined
    )
      return 'blobs';
    // Quay's bucket holds no links (its references are in its database).
    return this.#layout.name === 'quay' ? 'objects' : 'links';
  }

  /** Takes a run of records (one shard's, say); a part is written once it is full. */
  async add(records: readonly InventoryRecord[]): Promise<void> {
    for (const record of records) {
      const kind = this.#kindOf(record);
      const held = this.#held.get(kind) ?? [];
      held.push(record);
      this.#held.set(kind, held);
      this.#records++;
      if (held.length >= this.#partRecords) {
        this.#held.set(kind, []);
        await this.#writePart(kind, held);
      }
    }
  }

  /**
   * Hands a part on: it is compressed (zlib's thread pool) while the caller
   * goes on to its next records, and appended after the parts before it.
   * Returns once the part before it is appended, so one part at most waits.
   */
  async #writePart(kind: PartKind, records: InventoryRecord[]): Promise<void> {
    records.sort(byKey);
    const compressed = gzipLines(records);
    const first = records[0]?.key;
    const last = records.at(-1)?.key;
    const before = this.#appended;
    this.#appended = (async () => {
      const member = await compressed;
      await before;
      this.#parts.push({
        kind,
        offset: this.#offset,
        length: member.length,
        records: records.length,
        ...(first === undefined || last === undefined ? {} : { first, last }),
        order: this.#parts.length,
      });
      this.#offset += member.length;
      await this.#upload.write(member);
    })();
    // Awaited below or by the next part; a failure must not go unhandled meanwhile.
    this.#appended.catch(() => undefined);
    await before;
  }

  /** Writes what is held and ends the file; the part table, blob parts first. */
  async finish(): Promise<SnapshotManifest['inventory']> {
    try {
      for (const kind of ['blobs', 'links', 'objects'] as const) {
        const held = this.#held.get(kind) ?? [];
        if (held.length > 0) await this.#writePart(kind, held);
      }
      this.#held.clear();
      await this.#appended;
      await this.#upload.close();
    } catch (err) {
      await this.abort();
      throw err;
    }
    const rank = { blobs: 0, links: 1, objects: 1 } as const;
    const parts = [...this.#parts]
      .sort((a, b) => rank[a.kind] - rank[b.kind] || a.order - b.order)
      .map(({ order: _order, ...part }) => part);
    return { records: this.#records, parts };
  }

  /** Stops: a multipart upload under way is aborted. */
  async abort(): Promise<void> {
    await this.#appended.catch(() => undefined);
    await this.#upload.abort();
  }
}

/** Writes `inventory.jsonl.gz` of `records` (any order) and returns the part table. */
export async function writeInventory(
  vault: Vault,
  snapshotId: string,
  records: readonly InventoryRecord[],
  registryBase: string | undefined,
  partRecords = INVENTORY_PART_RECORDS,
): Promise<SnapshotManifest['inventory']> {
  const writer = new InventoryWriter(vault, snapshotId, registryBase, { partRecords });
  await writer.add([...records].sort(byKey));
  return writer.finish();
}
