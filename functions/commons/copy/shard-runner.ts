/**
 * Executing a shard: list a page, start listing the next one at once (list
 * ahead), copy the page's objects through the shared queue (copy behind), and
 * stop at a page boundary when the deadline passes, returning a cursor another
 * worker continues from. Link shards run three phases, each listed only after
 * the previous phase's copies have finished (docs/consistency.md).
 */
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import type PQueue from 'p-queue';
import { messageOf } from '../errors.ts';
import { blobDigestOf, classifyRegistryKey, KeyKind, uploadIdOf } from '../registry/layout.ts';
import {
  addTotals,
  type Cursor,
  cleanEtag,
  emptyTotals,
  type Failure,
  type InventoryRecord,
  keyJustBefore,
  type ListedObject,
  PAGE_SIZE,
  type Shard,
  type Totals,
} from './model.ts';
import type { KnownObject, PageEntry, TargetState } from './target-state.ts';
import { type TransferContext, transferObject, transferOperation } from './transfer.ts';

/** Maps a source key to its key in the target. Must keep key order within a shard. */
export type KeyMapper = (sourceKey: string) => string;

export interface CopyContext extends TransferContext {
  /** Object copies in flight across every shard this process runs. */
  readonly queue: PQueue;
  readonly mapKey: KeyMapper;
  readonly targetState: TargetState;
  /** Links whose ETags differ but sizes match are compared byte for byte up to this size. */
  readonly contentCompareMaxBytes: number;
  /** Stop a shard after this many failures (a missing bucket fails every object). */
  readonly maxFailures: number;
  /** Check blobs against the digest in their key (server SHA-256 of the copy, or hashing while streaming). */
  readonly verifyDigests: boolean;
}

export interface ShardRunOptions {
  /** Continue from here (a cursor an earlier run returned). */
  readonly cursor?: Cursor;
  /** Epoch ms after which no new page is started; the run returns a cursor. */
  readonly deadline?: number;
  /** Every object that is in the target after the run (copied or found unchanged). */
  readonly onRecord?: (record: InventoryRecord) => void;
  /** Called after each page with the running totals. */
  readonly onProgress?: (totals: Totals) => void;
  /** Called once the shard's last phase is listed (its copies may still run). */
  readonly onListed?: () => void;
  /** Test hook: called between listing a page and copying it. */
  readonly afterList?: (keys: readonly string[]) => Promise<void>;
}

export interface ShardRunResult {
  readonly shardId: string;
  readonly totals: Totals;
  readonly failures: readonly Failure[];
  /** Distinct unfinished uploads (`_uploads/<id>`) left out. */
  readonly uploadIds: readonly string[];
  /** Set when the run stopped early (deadline): continue the shard from here. */
  readonly next?: Cursor;
  /** Why the run gave up, when it did (too many failures). */
  readonly aborted?: string;
}

/** The phases of a shard and which key kinds each copies. */
export function phasesOf(shard: Shard): ReadonlyArray<ReadonlySet<KeyKind> | 'all'> {
  if (shard.kind === 'links') {
    return [
      new Set([KeyKind.Tag]),
      new Set([KeyKind.Revision]),
      new Set([KeyKind.Layer, KeyKind.Other, KeyKind.Blob]),
    ];
  }
  return ['all'];
}

interface Page {
  readonly objects: ListedObject[];
  readonly next: string | undefined;
}

async function listPage(ctx: CopyContext, shard: Shard, token: string | undefined): Promise<Page> {
  const startAfter =
    token === undefined && shard.startAt !== undefined && shard.startAt !== ''
      ? keyJustBefore(shard.startAt)
      : undefined;
  const response: {
    Contents?:
      | Array<{ Key?: string | undefined; Size?: number | undefined; ETag?: string | undefined }>
      | undefined;
    IsTruncated?: boolean | undefined;
    NextContinuationToken?: string | undefined;
  } =
    ctx.source.fast !== undefined
      ? await ctx.source.fast
          .listObjectsV2({
            bucket: ctx.source.bucket,
            prefix: shard.prefix,
            maxKeys: PAGE_SIZE,
            ...(startAfter === undefined ? {} : { startAfter }),
            ...(token === undefined ? {} : { continuationToken: token }),
          })
          .then((page) => ({
            Contents: page.contents.map((c) => ({ Key: c.key, Size: c.size, ETag: c.etag })),
            IsTruncated: page.isTruncated,
            NextContinuationToken: page.nextContinuationToken,
          }))
      : await ctx.source.client.send(
          new ListObjectsV2Command({
            Bucket: ctx.source.bucket,
            Prefix: shard.prefix,
            MaxKeys: PAGE_SIZE,
            ...(startAfter === undefined ? {} : { StartAfter: startAfter }),
            ...(token === undefined ? {} : { ContinuationToken: token }),
          }),
        );
  const objects: ListedObject[] = [];
  for (const item of response.Contents ?? []) {
    const key = item.Key ?? '';
    if (shard.startAt !== undefined && key < shard.startAt) continue;
    if (shard.endBefore !== undefined && key >= shard.endBefore) {
      return { objects, next: undefined };
    }
    objects.push({ key, size: item.Size ?? 0, etag: cleanEtag(item.ETag) });
  }
  return {
    objects,
    next: response.IsTruncated === true ? response.NextContinuationToken : undefined,
  };
}

/** S3 error code and HTTP status of a thrown SDK error. */
function describeError(err: unknown): {
  code: string;
  status: number | undefined;
  message: string;
} {
  if (typeof err === 'object' && err !== null) {
    const named = err as {
      name?: unknown;
      Code?: unknown;
      $metadata?: { httpStatusCode?: number };
    };
    const code =
      typeof named.Code === 'string'
        ? named.Code
        : typeof named.name === 'string'
          ? named.name
          : 'Error';
    return { code, status: named.$metadata?.httpStatusCode, message: messageOf(err) };
  }
  return { code: 'Error', status: undefined, message: messageOf(err) };
}

const SOURCE_GONE = new Set(['NoSuchKey', 'NotFound']);

async function sameContent(
  ctx: CopyContext,
  sourceKey: string,
  targetKey: string,
): Promise<boolean> {
  const read = async (client: typeof ctx.source.client, bucket: string, key: string) => {
    const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return Buffer.from((await response.Body?.transformToByteArray()) ?? new Uint8Array());
  };
  const [a, b] = await Promise.all([
    read(ctx.source.client, ctx.source.bucket, sourceKey),
    read(ctx.target.client, ctx.target.bucket, targetKey),
  ]);
  return a.equals(b);
}

/**
 * Whether the target already holds this object. A blob's key is its digest,
 * so equal size is enough; other keys need equal size and ETag, and small
 * files whose ETags differ (e.g. SSE-KMS ETags are not MD5s) are compared by
 * content, because every tag link has the same size and a re-tag must be seen.
 */
async function isUnchanged(
  ctx: CopyContext,
  kind: KeyKind,
  object: ListedObject,
  targetKey: string,
  known: KnownObject | undefined,
): Promise<boolean> {
  if (known === undefined || known.size !== object.size) return false;
  if (kind === KeyKind.Blob) return true;
  if (known.sourceEtag !== undefined) return known.sourceEtag === object.etag;
  if (known.etag !== undefined && known.etag === object.etag && object.etag !== '') return true;
  if (object.size <= ctx.contentCompareMaxBytes) return sameContent(ctx, object.key, targetKey);
  return false;
}

/** Running totals and failures of one shard run, shared by its copies. */
class Tally {
  totals = emptyTotals();
  readonly failures: Failure[] = [];
  readonly #max: number;

  constructor(maxFailures: number) {
    this.#max = maxFailures;
  }

  add(delta: Partial<Totals>): void {
    this.totals = addTotals(this.totals, { ...emptyTotals(), ...delta });
  }

  fail(failure: Failure): void {
    this.add({ failed: 1 });
    if (this.failures.length < this.#max) this.failures.push(failure);
  }
}

/** Copies one object unless the target already holds it, recording the outcome in the tally. */
async function copyOne(
  ctx: CopyContext,
  tally: Tally,
  entry: PageEntry,
  kind: KeyKind,
  known: KnownObject | undefined,
  onRecord: ((record: InventoryRecord) => void) | undefined,
): Promise<void> {
  const { object, targetKey } = entry;
  // What was being done when a call failed: the content comparison, or the transfer.
  let operation = 'GetObject (content comparison)';
  try {
    if (await isUnchanged(ctx, kind, object, targetKey, known)) {
      tally.add({ skipped: 1 });
      onRecord?.({
        key: object.key,
        size: object.size,
        etag: object.etag,
        targetKey: known?.targetKey ?? targetKey,
        copied: false,
        // The check made when the blob entered the vault still describes its bytes.
        ...(known?.verified === undefined ? {} : { verified: known.verified }),
      });
      return;
    }
    operation = transferOperation(ctx.settings, object.size);
    const result = await transferObject(ctx, object, targetKey, entry.digest);
    tally.add({ copied: 1, bytesCopied: object.size });
    onRecord?.({
      key: object.key,
      size: object.size,
      etag: object.etag,
      targetKey,
      copied: true,
      ...(result.verified === undefined ? {} : { verified: result.verified }),
    });
  } catch (err) {
    const { code, message } = describeError(err);
    const gone = SOURCE_GONE.has(code);
    tally.fail({
      key: object.key,
      operation,
      code,
      message: gone ? `the source object was deleted after it was listed (${message})` : message,
      ...(gone ? { sourceGone: true } : {}),
    });
  }
}

/** Runs (part of) a shard and returns its totals, failures and, if it stopped early, a cursor. */
export async function runShard(
  ctx: CopyContext,
  shard: Shard,
  options: ShardRunOptions = {},
): Promise<ShardRunResult> {
  const phases = phasesOf(shard);
  const uploadIds = new Set<string>();
  const relative = (key: string) =>
    shard.registryPrefix !== undefined && key.startsWith(shard.registryPrefix)
      ? key.slice(shard.registryPrefix.length)
      : key;
  const kindOf = (key: string): KeyKind =>
    shard.registryPrefix === undefined ? KeyKind.Other : classifyRegistryKey(relative(key));

  const tally = new Tally(ctx.maxFailures);
  const fail = (failure: Failure) => tally.fail(failure);

  // This shard's copies in flight; the queue itself is shared with other shards.
  const inflight = new Set<Promise<unknown>>();
  const drain = async () => {
    while (inflight.size > 0) await Promise.all([...inflight]);
  };

  const startPhase = options.cursor?.phase ?? 0;
  for (let phase = startPhase; phase < phases.length; phase++) {
    const wanted = phases[phase] ?? 'all';
    let token = phase === startPhase ? options.cursor?.continuationToken : undefined;
    let pending: Promise<Page> = listPage(ctx, shard, token);
    for (;;) {
      let page: Page;
      try {
        page = await pending;
      } catch (err) {
        const { code, message } = describeError(err);
        fail({ key: shard.prefix, operation: 'ListObjectsV2', code, message });
        await drain();
        return finish(
          shard,
          tally,
          uploadIds,
          { phase, ...(token === undefined ? {} : { continuationToken: token }) },
          `listing failed: ${message}`,
        );
      }
      // List ahead: the next page is requested before this one is copied.
      const nextToken = page.next;
      if (nextToken !== undefined) pending = listPage(ctx, shard, nextToken);

      const entries: Array<{ entry: PageEntry; kind: KeyKind }> = [];
      let listedBytes = 0;
      let listed = 0;
      let uploads = 0;
      for (const object of page.objects) {
        const kind = kindOf(object.key);
        if (kind === KeyKind.Upload) {
          if (phase === 0) {
            uploads++;
            const id = uploadIdOf(relative(object.key));
            if (id !== undefined) uploadIds.add(id);
          }
          continue;
        }
        if (wanted !== 'all' && !wanted.has(kind)) continue;
        listed++;
        listedBytes += object.size;
        const digest =
          ctx.verifyDigests && kind === KeyKind.Blob
            ? blobDigestOf(relative(object.key))
            : undefined;
        entries.push({
          entry: {
            object,
            targetKey: ctx.mapKey(object.key),
            ...(digest === undefined ? {} : { digest }),
          },
          kind,
        });
      }
      tally.add({
        listed,
        bytesListed: listedBytes,
        uploadsSkipped: uploads,
        pages: 1,
      });
      await options.afterList?.(entries.map((e) => e.entry.object.key));
      let known: ReadonlyMap<string, KnownObject>;
      try {
        known = await ctx.targetState.lookup(entries.map((e) => e.entry));
      } catch (err) {
        const { code, message } = describeError(err);
        for (const { entry } of entries) {
          fail({ key: entry.object.key, operation: 'ListObjectsV2 (target)', code, message });
        }
        known = new Map();
        entries.length = 0;
      }
      // Copy behind: queue the page, then wait only until the queue has room for
      // another page, so copies of consecutive pages overlap.
      for (const { entry, kind } of entries) {
        const task = ctx.queue.add(() =>
          copyOne(ctx, tally, entry, kind, known.get(entry.object.key), options.onRecord),
        );
        inflight.add(task);
        void task.finally(() => inflight.delete(task));
      }
      await ctx.queue.onSizeLessThan(ctx.queue.concurrency);
      options.onProgress?.(tally.totals);
      if (tally.totals.failed >= ctx.maxFailures) {
        await drain();
        return finish(
          shard,
          tally,
          uploadIds,
          undefined,
          `stopped after ${tally.totals.failed} failures`,
        );
      }
      token = nextToken;
      if (token === undefined) break;
      if (options.deadline !== undefined && Date.now() >= options.deadline) {
        await drain();
        // The listed-ahead page is dropped; the next worker lists it again.
        void pending.catch(() => undefined);
        return finish(shard, tally, uploadIds, { phase, continuationToken: token });
      }
    }
    // Phase barrier: tag links change when an image is re-tagged, so the next
    // phase is listed only after every tag link is copied (a re-pointed tag is
    // copied with its new value, whose revision the next listing then finds).
    // Revision and layer links never change (their content is their own
    // digest): for them, listing in order is enough and copies may trail.
    if (wanted === 'all' || wanted.has(KeyKind.Tag)) await drain();
  }
  options.onListed?.();
  await drain();
  return finish(shard, tally, uploadIds);
}

function finish(
  shard: Pick<Shard, 'id'>,
  tally: Tally,
  uploadIds: Set<string>,
  next?: Cursor,
  aborted?: string,
): ShardRunResult {
  return {
    shardId: shard.id,
    totals: tally.totals,
    failures: tally.failures,
    uploadIds: [...uploadIds].sort(),
    ...(next === undefined ? {} : { next }),
    ...(aborted === undefined ? {} : { aborted }),
  };
}

/** An object to copy from a list (a restore reads these from a snapshot inventory). */
export interface ListEntry extends PageEntry {
  readonly kind: KeyKind;
}

/**
 * Copies an explicit list of objects in pages of PAGE_SIZE, with the same
 * skip rules, queue, retries and accounting as a listed shard. Like a listed
 * shard it stops at a page boundary once the deadline passes and returns a
 * cursor (the offset reached) that another worker continues from.
 */
export async function copyEntries(
  ctx: CopyContext,
  id: string,
  entries: readonly ListEntry[],
  options: Pick<ShardRunOptions, 'onRecord' | 'onProgress' | 'cursor' | 'deadline'> = {},
): Promise<ShardRunResult> {
  const tally = new Tally(ctx.maxFailures);
  const inflight = new Set<Promise<unknown>>();
  for (let start = options.cursor?.offset ?? 0; start < entries.length; start += PAGE_SIZE) {
    if (
      start > (options.cursor?.offset ?? 0) &&
      options.deadline !== undefined &&
      Date.now() >= options.deadline
    ) {
      while (inflight.size > 0) await Promise.all([...inflight]);
      return finish({ id }, tally, new Set(), { phase: 0, offset: start });
    }
    const page = entries.slice(start, start + PAGE_SIZE);
    tally.add({
      listed: page.length,
      bytesListed: page.reduce((sum, e) => sum + e.object.size, 0),
      pages: 1,
    });
    let known: ReadonlyMap<string, KnownObject>;
    try {
      known = await ctx.targetState.lookup(page);
    } catch (err) {
      const { code, message } = describeError(err);
      for (const entry of page)
        tally.fail({ key: entry.object.key, operation: 'ListObjectsV2 (target)', code, message });
      continue;
    }
    for (const entry of page) {
      const task = ctx.queue.add(() =>
        copyOne(ctx, tally, entry, entry.kind, known.get(entry.object.key), options.onRecord),
      );
      inflight.add(task);
      void task.finally(() => inflight.delete(task));
    }
    await ctx.queue.onSizeLessThan(ctx.queue.concurrency);
    options.onProgress?.(tally.totals);
    if (tally.totals.failed >= ctx.maxFailures) {
      while (inflight.size > 0) await Promise.all([...inflight]);
      return finish(
        { id },
        tally,
        new Set(),
        undefined,
        `stopped after ${tally.totals.failed} failures`,
      );
    }
  }
  while (inflight.size > 0) await Promise.all([...inflight]);
  return finish({ id }, tally, new Set());
}
