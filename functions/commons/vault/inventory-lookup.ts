/**
 * What an earlier snapshot's inventory knows of the keys a backup lists: the
 * skip-unchanged check of an incremental backup, read part by part. A page of
 * listed keys needs only the inventory parts whose key range overlaps the
 * page's (the part table records each part's first and last key), so a worker
 * holds a few parts, not the inventory: at 10 million objects the whole of it
 * would take gigabytes. A small inventory is read whole with one GET, as one
 * GET costs less than a GET per part and its size is bounded all the same.
 */

import type { InventoryRecord } from '../copy/model.ts';
import {
  type KnownObject,
  knownFromRecord,
  type PageEntry,
  type TargetState,
} from '../copy/target-state.ts';
import { countingRetries, type RetrySink } from '../s3/retry.ts';
import type { SnapshotManifest } from './format.ts';
import { readInventory, readInventoryPart, type Vault } from './store.ts';

/** Inventories up to this many compressed bytes are read whole, with one GET. */
export const WHOLE_INVENTORY_BYTES = 4 * 1024 ** 2;

/**
 * Parts a lookup keeps at once (about 3 MB each at 10,000 records): a shard's
 * pages walk its keys in order, so one or two parts serve a shard's page, and
 * the several shards a process works on at once each keep theirs.
 */
export const PARTS_KEPT = 16;

export interface InventoryLookupOptions {
  readonly wholeBytes?: number;
  readonly partsKept?: number;
}

type Known = ReadonlyMap<string, KnownObject>;

function byKey(records: Iterable<Parameters<typeof knownFromRecord>[0]>): Map<string, KnownObject> {
  const map = new Map<string, KnownObject>();
  for (const record of records) map.set(record.key, knownFromRecord(record));
  return map;
}

/** A snapshot's inventory as a target state: objects recorded with the same size and ETag are not copied again. */
export class InventoryLookup implements TargetState {
  readonly #vault: Vault;
  readonly #manifest: SnapshotManifest;
  readonly #whole: boolean;
  readonly #partsKept: number;
  /** Loaded parts by index, the most recently used last. */
  readonly #parts = new Map<number, Promise<Known>>();
  #all: Promise<Known> | undefined;
  #requests = 0;
  /** Records read from the vault so far (parts read again after eviction count again). */
  recordsRead = 0;

  constructor(vault: Vault, manifest: SnapshotManifest, options: InventoryLookupOptions = {}) {
    this.#vault = vault;
    this.#manifest = manifest;
    const { parts } = manifest.inventory;
    const bytes = parts.reduce((sum, part) => sum + part.length, 0);
    // Parts without bounds (snapshots older than them) cannot be told apart: read whole.
    const bounded = parts.every((part) => part.first !== undefined && part.last !== undefined);
    this.#whole = !bounded || bytes <= (options.wholeBytes ?? WHOLE_INVENTORY_BYTES);
    this.#partsKept = Math.max(1, options.partsKept ?? PARTS_KEPT);
  }

  get requests(): number {
    return this.#requests;
  }

  async lookup(
    page: readonly PageEntry[],
    sink?: RetrySink,
  ): Promise<ReadonlyMap<string, KnownObject>> {
    const found = new Map<string, KnownObject>();
    if (page.length === 0) return found;
    let low = page[0]?.object.key ?? '';
    let high = low;
    for (const { object } of page) {
      if (object.key < low) low = object.key;
      if (object.key > high) high = object.key;
    }
    const sources = this.#whole
      ? [await this.#readAll(sink)]
      : await Promise.all(this.#overlapping(low, high).map((index) => this.#part(index, sink)));
    for (const { object } of page) {
      for (const known of sources) {
        const hit = known.get(object.key);
        if (hit === undefined) continue;
        found.set(object.key, hit);
        break;
      }
    }
    return found;
  }

  /** The vault, its retries also counted in `sink` (a read's, for the lookup that started it). */
  #vaultFor(sink: RetrySink | undefined): Vault {
    return { ...this.#vault, client: countingRetries(this.#vault.client, sink) };
  }

  #readAll(sink: RetrySink | undefined): Promise<Known> {
    this.#all ??= (async () => {
      this.#requests++;
      const records = await readInventory(this.#vaultFor(sink), this.#manifest);
      this.recordsRead += records.length;
      return byKey(records);
    })();
    return this.#all;
  }

  /** Parts that may hold a key in [low, high] (every part has bounds here). */
  #overlapping(low: string, high: string): number[] {
    const indexes: number[] = [];
    this.#manifest.inventory.parts.forEach(({ records, first = '', last = '' }, index) => {
      if (records > 0 && first <= high && last >= low) indexes.push(index);
    });
    return indexes;
  }

  #part(index: number, sink: RetrySink | undefined): Promise<Known> {
    const kept = this.#parts.get(index);
    if (kept !== undefined) {
      this.#parts.delete(index);
      this.#parts.set(index, kept);
      return kept;
    }
    const loading = (async () => {
      this.#requests++;
      const records = await readInventoryPart(this.#vaultFor(sink), this.#manifest, index);
      this.recordsRead += records.length;
      return byKey(records);
    })();
    // A part that failed to load is not kept: the next page asks again.
    loading.catch(() => {
      if (this.#parts.get(index) === loading) this.#parts.delete(index);
    });
    this.#parts.set(index, loading);
    for (const oldest of this.#parts.keys()) {
      if (this.#parts.size <= this.#partsKept) break;
      this.#parts.delete(oldest);
    }
    return loading;
  }
}

/**
 * The records of `keys` (source keys) in a snapshot's inventory, reading only
 * the parts whose bounds hold one of them (every part, for a table without
 * bounds): for naming a few objects, not for walking the inventory.
 */
export async function findRecords(
  vault: Vault,
  manifest: SnapshotManifest,
  keys: readonly string[],
): Promise<Map<string, InventoryRecord>> {
  const wanted = new Set(keys);
  const found = new Map<string, InventoryRecord>();
  const parts = manifest.inventory.parts;
  for (let index = 0; index < parts.length && found.size < wanted.size; index++) {
    const { records, first, last } = parts[index] ?? { records: 0 };
    if (records === 0) continue;
    const holds =
      first === undefined ||
      last === undefined ||
      keys.some((key) => key >= first && key <= last && !found.has(key));
    if (!holds) continue;
    for (const record of await readInventoryPart(vault, manifest, index))
      if (wanted.has(record.key)) found.set(record.key, record);
  }
  return found;
}

/** A key range of the inventory: keys from `from` (inclusive) up to `to` (exclusive). */
export interface KeyRange {
  readonly from: string;
  readonly to: string;
}

/**
 * Every record whose key lies in one of `ranges`, a part at a time: only the
 * parts whose bounds overlap a range are read (one ranged GET each; every
 * part, for a table without bounds), so one repository's links cost the one
 * or two parts that hold them, however large the snapshot.
 */
export async function* eachRecordInRanges(
  vault: Vault,
  manifest: SnapshotManifest,
  ranges: readonly KeyRange[],
): AsyncGenerator<InventoryRecord> {
  const within = (key: string) => ranges.some(({ from, to }) => key >= from && key < to);
  const parts = manifest.inventory.parts;
  for (let index = 0; index < parts.length; index++) {
    const { records, first, last } = parts[index] ?? { records: 0 };
    if (records === 0) continue;
    const overlaps =
      first === undefined ||
      last === undefined ||
      ranges.some(({ from, to }) => first < to && last >= from);
    if (!overlaps) continue;
    for (const record of await readInventoryPart(vault, manifest, index))
      if (within(record.key)) yield record;
  }
}
