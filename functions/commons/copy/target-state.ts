/**
 * What is already in the target, so unchanged objects are skipped. Three
 * sources: a listing of the target's matching key range (one LIST per page of
 * source keys), a previous run's inventory (no request per page; a
 * snapshot's is read part by part, vault/inventory-lookup.ts), or nothing (a
 * target known to be empty).
 */
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { countingRetries, type RetrySink } from '../s3/retry.ts';
import { cleanEtag, type InventoryRecord, keyJustBefore, type ListedObject } from './model.ts';

/** What is known of an object's copy in the target. */
export interface KnownObject {
  readonly size: number;
  /** The target object's ETag (from a target listing). */
  readonly etag?: string;
  /** The source ETag recorded when it was last copied (from an inventory). */
  readonly sourceEtag?: string;
  /**
   * Where the earlier copy lives, when not at the mapped key (an inventory of an
   * earlier snapshot): an unchanged object is recorded with this key instead.
   */
  readonly targetKey?: string;
  /** How the earlier copy was checked against its digest (from an inventory). */
  readonly verified?: InventoryRecord['verified'];
}

export interface PageEntry {
  readonly object: ListedObject;
  readonly targetKey: string;
  /** A blob's digest (`sha256:<hex>`), checked on the way when that costs no extra read. */
  readonly digest?: string;
}

/** Answers, for a page of source objects, what the target already holds (by source key). */
export interface TargetState {
  /** What the target holds of `page`; the retries its requests take are counted in `sink` too. */
  lookup(page: readonly PageEntry[], sink?: RetrySink): Promise<ReadonlyMap<string, KnownObject>>;
  /** S3 requests made so far. */
  readonly requests: number;
}

/** A target known to be empty (checked beforehand): every object is copied. */
export const emptyTarget: TargetState = {
  requests: 0,
  async lookup() {
    return new Map();
  },
};

function commonPrefix(a: string, b: string): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return a.slice(0, i);
}

/**
 * Lists the target keys between the page's first and last target key. Valid
 * because key mappings keep order (a prefix swap, or a blob's `<digest>/data`
 * to `<digest>`), so a page's targets form one key range.
 */
export class ListedTarget implements TargetState {
  #requests = 0;
  readonly #client: S3Client;
  readonly #bucket: string;

  constructor(client: S3Client, bucket: string) {
    this.#client = client;
    this.#bucket = bucket;
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
    const client = countingRetries(this.#client, sink);
    const targets = page.map((entry) => entry.targetKey).sort();
    const first = targets[0] ?? '';
    const last = targets[targets.length - 1] ?? '';
    const wanted = new Set(targets);
    const byTarget = new Map<string, KnownObject>();
    let token: string | undefined;
    // A proper prefix of `first` sorts before it, so listing starts at `first` itself.
    const startAfter = first.length > 0 ? keyJustBefore(first) : undefined;
    do {
      const response = await client.send(
        new ListObjectsV2Command({
          Bucket: this.#bucket,
          Prefix: commonPrefix(first, last),
          ...(token === undefined && startAfter !== undefined ? { StartAfter: startAfter } : {}),
          ...(token === undefined ? {} : { ContinuationToken: token }),
        }),
      );
      this.#requests++;
      let passedLast = false;
      for (const item of response.Contents ?? []) {
        const key = item.Key ?? '';
        if (key > last) {
          passedLast = true;
          break;
        }
        if (wanted.has(key))
          byTarget.set(key, { size: item.Size ?? 0, etag: cleanEtag(item.ETag) });
      }
      token =
        passedLast || response.IsTruncated !== true ? undefined : response.NextContinuationToken;
    } while (token !== undefined);
    for (const entry of page) {
      const known = byTarget.get(entry.targetKey);
      if (known !== undefined) found.set(entry.object.key, known);
    }
    return found;
  }
}

/** What a copy's record says of the object it copied. */
export type RecordedCopy = Pick<InventoryRecord, 'key' | 'size' | 'etag'> &
  Partial<Pick<InventoryRecord, 'targetKey' | 'verified'>>;

/** What an earlier copy's record tells of the object at its key. */
export function knownFromRecord(record: RecordedCopy): KnownObject {
  return {
    size: record.size,
    sourceEtag: record.etag,
    ...(record.targetKey === undefined ? {} : { targetKey: record.targetKey }),
    ...(record.verified === undefined ? {} : { verified: record.verified }),
  };
}

/**
 * A previous run's records, held in memory: objects recorded with the same
 * size and source ETag were copied then and are not copied again, with no
 * request at all. (A snapshot's inventory is read part by part instead:
 * vault/inventory-lookup.ts.)
 */
export class PreviousInventory implements TargetState {
  readonly requests = 0;
  readonly #byKey = new Map<string, KnownObject>();

  constructor(records: Iterable<RecordedCopy>) {
    for (const record of records) this.#byKey.set(record.key, knownFromRecord(record));
  }

  get size(): number {
    return this.#byKey.size;
  }

  async lookup(page: readonly PageEntry[]): Promise<ReadonlyMap<string, KnownObject>> {
    const found = new Map<string, KnownObject>();
    for (const entry of page) {
      const known = this.#byKey.get(entry.object.key);
      if (known !== undefined) found.set(entry.object.key, known);
    }
    return found;
  }
}

/** How a copy learns what its target already holds. */
export type TargetCheck =
  /** One LIST: an empty target needs no per-page listing, any other is listed per page. */
  | { readonly kind: 'auto' }
  /** Known empty when the job was planned (a new snapshot's folder, an empty pool). */
  | { readonly kind: 'empty' }
  /** Listed page by page (a target that may hold some of the objects). */
  | { readonly kind: 'list' }
  /** An earlier copy's inventory stands in for the target (no listing at all). */
  | { readonly kind: 'inventory'; readonly open: () => Promise<TargetState> };

/**
 * The one way every copy (the workflow's workers, `regvault copy`, the
 * benchmark) decides what its target holds. `auto`: when one LIST finds
 * nothing in `prefix` of `bucket`, the target is empty and no page needs a
 * target listing (saving one LIST per page); otherwise every page lists its
 * target range.
 */
export async function targetStateFor(
  client: S3Client,
  bucket: string,
  prefix: string,
  check: TargetCheck = { kind: 'auto' },
): Promise<TargetState> {
  switch (check.kind) {
    case 'empty':
      return emptyTarget;
    case 'list':
      return new ListedTarget(client, bucket);
    case 'inventory':
      return check.open();
    case 'auto': {
      const response = await client.send(
        new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, MaxKeys: 1 }),
      );
      return (response.KeyCount ?? 0) === 0 ? emptyTarget : new ListedTarget(client, bucket);
    }
  }
}
