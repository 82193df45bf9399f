/**
 * The copy engine's data: locations, shards, cursors, totals, failures and
 * inventory records. Everything here is plain JSON so a shard and its cursor
 * fit an SQS message and a Step Functions state; credentials never appear.
 */
import { z } from 'zod';

/** Size of one ListObjectsV2 page, the unit of hand-off between workers. */
export const PAGE_SIZE = 1_000;

export const locationSchema = z.object({
  /**
   * Omitted for AWS S3. A `file://` URL names a local directory (a registry's
   * filesystem storage, a PVC mounted into a Job), read and written through
   * S3's protocol in this process (s3/directory.ts); `bucket` is then
   * `local-directory`.
   */
  endpoint: z.url({ protocol: /^(https?|file)$/ }).optional(),
  region: z.string().min(1),
  bucket: z
    .string()
    .regex(
      /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
      'a bucket name: 3-63 lowercase letters, digits, dots and hyphens',
    ),
  /** Key prefix inside the bucket ('' for the whole bucket). */
  prefix: z.string().default(''),
  forcePathStyle: z.boolean().default(true),
  /**
   * Names who reads and writes here (a Secrets Manager ARN, a local profile).
   * Two locations with the same endpoint and the same `access` can copy
   * server-side. It is a reference, never a secret.
   */
  access: z.string().default('default'),
  /**
   * Send Content-MD5 with every upload: a bucket with an S3 Object Lock
   * default retention refuses PutObject and UploadPart without it.
   */
  contentMd5: z.boolean().optional(),
});
/** One S3 location: where, not who (credentials are resolved by the caller from `access`). */
export type Location = z.infer<typeof locationSchema>;

export const ShardKind = { Links: 'links', Blobs: 'blobs', Objects: 'objects' } as const;
export type ShardKind = (typeof ShardKind)[keyof typeof ShardKind];

export const shardSchema = z.object({
  id: z.string().min(1),
  kind: z.enum(['links', 'blobs', 'objects']),
  /** Listing prefix in the source bucket. */
  prefix: z.string(),
  /** Keys from this one on (inclusive lower bound). */
  startAt: z.string().optional(),
  /** Keys less than this only (exclusive upper bound). */
  endBefore: z.string().optional(),
  /** Set by the registry's policy: its data prefix (`<root>/docker/registry/v2/`). */
  registryPrefix: z.string().optional(),
  /** The planner's estimate, for progress and sizing only. */
  estimatedObjects: z.number().int().nonnegative().optional(),
});
/**
 * A bounded slice of the source: a prefix and a key range. Its `kind` is its
 * lane in the copy queue; the policy that planned it (copy/policy.ts) reads
 * `kind` and `registryPrefix` to route it (a registry's link shards run in
 * three passes, so every reference is captured after what it points to; see
 * docs/consistency.md).
 */
export type Shard = z.infer<typeof shardSchema>;

export const cursorSchema = z.object({
  phase: z.number().int().nonnegative(),
  continuationToken: z.string().optional(),
  /** For a list of entries (a restore part): how many of them are done. */
  offset: z.number().int().nonnegative().optional(),
});
/** Where a shard continues: its pass (`phase`) and the next page's listing token (or, for a list, its offset). */
export type Cursor = z.infer<typeof cursorSchema>;

export const totalsSchema = z.object({
  listed: z.number().int().nonnegative(),
  copied: z.number().int().nonnegative(),
  skipped: z.number().int().nonnegative(),
  failed: z.number().int().nonnegative(),
  /** Bytes of every object listed (copied, skipped or failed). */
  bytesListed: z.number().int().nonnegative(),
  bytesCopied: z.number().int().nonnegative(),
  /** Objects of unfinished pushes (`_uploads/`) left out on purpose. */
  uploadsSkipped: z.number().int().nonnegative(),
  pages: z.number().int().nonnegative(),
  /**
   * Retries of S3 calls the copy needed (s3/retry.ts: throttling, 5xx,
   * resets, bodies cut short); 0 on a fault-free run. Defaulted: records
   * written before it was counted parse as 0.
   */
  retries: z.number().int().nonnegative().default(0),
});
export type Totals = z.infer<typeof totalsSchema>;

/** Totals of nothing, to add to. */
export function emptyTotals(): Totals {
  return {
    listed: 0,
    copied: 0,
    skipped: 0,
    failed: 0,
    bytesListed: 0,
    bytesCopied: 0,
    uploadsSkipped: 0,
    pages: 0,
    retries: 0,
  };
}

/** Adds `b` into a new totals object. */
export function addTotals(a: Totals, b: Totals): Totals {
  return {
    listed: a.listed + b.listed,
    copied: a.copied + b.copied,
    skipped: a.skipped + b.skipped,
    failed: a.failed + b.failed,
    bytesListed: a.bytesListed + b.bytesListed,
    bytesCopied: a.bytesCopied + b.bytesCopied,
    uploadsSkipped: a.uploadsSkipped + b.uploadsSkipped,
    pages: a.pages + b.pages,
    retries: a.retries + b.retries,
  };
}

export const failureSchema = z.object({
  key: z.string(),
  operation: z.string(),
  code: z.string(),
  message: z.string(),
  /** The key was listed but was gone when copied (deleted, or garbage-collected). */
  sourceGone: z.boolean().optional(),
});
/** One object that could not be copied, and why. */
export type Failure = z.infer<typeof failureSchema>;

export const inventoryRecordSchema = z.object({
  key: z.string(),
  size: z.number().int().nonnegative(),
  etag: z.string(),
  targetKey: z.string(),
  copied: z.boolean(),
  /**
   * For a blob: how its bytes were checked against its digest when it was
   * copied into the target, in this run or (for a blob found unchanged) in the
   * run the previous inventory records.
   */
  verified: z.enum(['server-sha256', 'stream-sha256', 'unverified']).optional(),
});
/** One object that is in the target after the run: source key, size, source ETag and its key in the target. */
export type InventoryRecord = z.infer<typeof inventoryRecordSchema>;

/** An object as listed. */
export interface ListedObject {
  readonly key: string;
  readonly size: number;
  readonly etag: string;
}

/** Strips the quotes S3 puts around ETags. */
export function cleanEtag(etag: string | undefined): string {
  if (etag === undefined) return '';
  // Called for every listed and copied object: plain string checks, no regular expressions.
  let start = etag.startsWith('"') ? 1 : 0;
  const end = etag.length > start && etag.endsWith('"') ? etag.length - 1 : etag.length;
  if (start === 1 && etag.startsWith('W/', 1)) start = 3;
  else if (start === 0 && etag.startsWith('W/')) start = 2;
  return start === 0 && end === etag.length ? etag : etag.slice(start, end);
}

/**
 * Orders keys as S3 lists them: by UTF-8 bytes, which is code point order.
 * UTF-16 code units agree except that surrogates (code points above U+FFFF)
 * sort after U+E000..U+FFFF; the first differing unit decides.
 */
export function compareKeys(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return codeUnitRank(x) - codeUnitRank(y);
  }
  return a.length - b.length;
}

/** A code unit at or above U+D800: where UTF-16 order and UTF-8 order can part. */
const HIGH_UNIT = /[\uD800-\uFFFF]/;

/**
 * Sorts `keys` in place in S3's order (compareKeys). When no key holds a code
 * unit at or above U+D800 (no key a registry writes does), that is
 * JavaScript's own string order, which the engine compares natively: 20,000
 * vault keys sort in 13 to 15 ms, against 86 to 130 ms through compareKeys.
 */
export function sortKeys(keys: string[]): string[] {
  return keys.some((key) => HIGH_UNIT.test(key)) ? keys.sort(compareKeys) : keys.sort();
}

function codeUnitRank(unit: number): number {
  if (unit >= 0xd800 && unit <= 0xdfff) return unit + 0x2000;
  if (unit >= 0xe000) return unit - 0x800;
  return unit;
}

/**
 * A key that sorts just below `key` (StartAfter is exclusive, a shard's
 * `startAt` inclusive): the last character one lower, followed by the highest
 * code point. A plain proper prefix would also sort below, but far below: the
 * listing would then page through every key between the two.
 */
export function keyJustBefore(key: string): string {
  const chars = Array.from(key);
  const last = chars.pop()?.codePointAt(0);
  if (last === undefined || last === 0) return chars.join('');
  return `${chars.join('')}${String.fromCodePoint(last - 1)}\u{10FFFF}`;
}
