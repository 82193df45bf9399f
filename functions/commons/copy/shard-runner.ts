/**
 * Executing a shard: list a page, start listing the next one at once (list
 * ahead), copy the page's objects through the shared queue (copy behind), and
 * stop at a page boundary when the deadline passes, returning a cursor another
 * worker continues from. The copy's policy routes the shard (policy.ts): its
 * passes, each listed after the one before and after a barrier pass's copies
 * have finished, the directories a pass's listing rolls up, and what each
 * listed key is.
 */
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { messageOf } from '../errors.ts';
import { listObjectsPage } from '../s3/fast-copy.ts';
import {
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
import type { CopyPolicy, Pass } from './policy.ts';
import type { CopyQueue } from './queue.ts';
import type { KnownObject, PageEntry, TargetState } from './target-state.ts';
import { type TransferContext, transferObject, transferOperation } from './transfer.ts';

/** Maps a source key to its key in the target. Must keep key order within a shard. */
export type KeyMapper = (sourceKey: string) => string;

export interface CopyContext extends TransferContext {
  /** Object copies in flight across every shard this process runs, a lane per kind of shard. */
  readonly queue: CopyQueue;
  readonly mapKey: KeyMapper;
  readonly targetState: TargetState;
  /** Links whose ETags differ but sizes match are compared byte for byte up to this size. */
  readonly contentCompareMaxBytes: number;
  /** Stop a shard after this many failures (a missing bucket fails every object). */
  readonly maxFailures: number;
  /** Check blobs against the digest in their key (server SHA-256 of the copy, or hashing while streaming). */
  readonly verifyDigests: boolean;
  /** How the source's shards are listed and what their keys are. */
  readonly policy: CopyPolicy;
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
  /** Called once the shard's last pass is listed (its copies may still run). */
  readonly onListed?: () => void;
  /**
   * Offered the continuation of the listing before the page just listed is
   * copied. Returning true means the caller gave it to another worker: this
   * run copies that page and stops, with the cursor in `handedOn`. Never
   * offered during a barrier pass (a registry's tag links), whose copies
   * must all finish before the next pass is listed (docs/consistency.md).
   */
  readonly handOn?: (cursor: Cursor) => boolean | Promise<boolean>;
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
  /** Set when the run gave its continuation to another worker (`handOn`): that worker continues from here. */
  readonly handedOn?: Cursor;
  /** Why the run gave up, when it did (too many failures). */
  readonly aborted?: string;
}

interface Page {
  readonly objects: ListedObject[];
  /** Common prefixes the pass's roll-up does not account for: listed in full. */
  readonly unexpected: string[];
  readonly next: string | undefined;
}

async function listPage(
  ctx: CopyContext,
  shard: Pick<Shard, 'prefix' | 'startAt' | 'endBefore'>,
  token: string | undefined,
  rollUp: Pass['rollUp'],
): Promise<Page> {
  const startAfter =
    token === undefined && shard.startAt !== undefined && shard.startAt !== ''
      ? keyJustBefore(shard.startAt)
      : undefined;
  const {
    contents: items,
    commonPrefixes,
    isTruncated: truncated,
    nextContinuationToken: nextToken,
  } = await listObjectsPage(ctx.source.client, ctx.source.fast, {
    bucket: ctx.source.bucket,
    prefix: shard.prefix,
    maxKeys: PAGE_SIZE,
    ...(rollUp === undefined ? {} : { delimiter: rollUp.delimiter }),
    ...(startAfter === undefined ? {} : { startAfter }),
    ...(token === undefined ? {} : { continuationToken: token }),
  });
  const objects: ListedObject[] = [];
  const unexpected: string[] = [];
  // Past the shard's end: everything before it in this page is kept, and the listing stops.
  let ended = false;
  for (const item of items) {
    if (shard.startAt !== undefined && item.key < shard.startAt) continue;
    if (shard.endBefore !== undefined && item.key >= shard.endBefore) {
      ended = true;
      break;
    }
    objects.push({ key: item.key, size: item.size, etag: cleanEtag(item.etag) });
  }
  for (const common of commonPrefixes) {
    if (shard.endBefore !== undefined && common >= shard.endBefore) {
      ended = true;
      break;
    }
    if (rollUp !== undefined && !rollUp.covers(common, shard.prefix)) unexpected.push(common);
  }
  return {
    objects,
    unexpected,
    next: !ended && truncated ? nextToken : undefined,
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
 * Whether the target already holds this object. A key that names its content
 * (a blob's digest) needs only an equal size; other keys need equal size and ETag, and small
 * files whose ETags differ (e.g. SSE-KMS ETags are not MD5s) are compared by
 * content, because every tag link has the same size and a re-tag must be seen.
 */
async function isUnchanged(
  ctx: CopyContext,
  byContent: boolean,
  object: ListedObject,
  targetKey: string,
  known: KnownObject | undefined,
): Promise<boolean> {
  if (known === undefined || known.size !== object.size) return false;
  if (byContent) return true;
  if (known.sourceEtag !== undefined) return known.sourceEtag === object.etag;
  if (known.etag !== undefined && known.etag === object.etag && object.etag !== '') return true;
  if (object.size <= ctx.contentCompareMaxBytes) return sameContent(ctx, object.key, targetKey);
  return false;
}

/**
 * Running totals and failures of one shard run, shared by its copies. The
 * counters are updated in place (once or twice per object); `totals` hands
 * out a copy.
 */
class Tally {
  readonly #counts: { -readonly [K in keyof Totals]: number } = emptyTotals();
  readonly failures: Failure[] = [];
  readonly #max: number;

  constructor(maxFailures: number) {
    this.#max = maxFailures;
  }

  get totals(): Totals {
    return { ...this.#counts };
  }

  get failed(): number {
    return this.#counts.failed;
  }

  add(delta: Partial<Totals>): void {
    for (const name of Object.keys(delta) as Array<keyof Totals>) {
      this.#counts[name] += delta[name] ?? 0;
    }
  }

  /** One object copied or found unchanged (the hot path: no delta object). */
  done(copiedBytes: number | undefined): void {
    if (copiedBytes === undefined) this.#counts.skipped++;
    else {
      this.#counts.copied++;
      this.#counts.bytesCopied += copiedBytes;
    }
  }

  fail(failure: Failure): void {
    this.#counts.failed++;
    if (this.failures.length < this.#max) this.failures.push(failure);
  }
}

/**
 * The copies one shard run has queued and not yet finished (the queue itself
 * is shared with other shards), counted rather than kept, with a wait for the
 * count to reach zero.
 */
class InFlight {
  #count = 0;
  #waiters: Array<() => void> = [];

  /** Queues `copy` in `lane`; it must not throw (copyOne records its own failures). */
  add(queue: CopyQueue, lane: string, copy: () => Promise<void>): void {
    this.#count++;
    void queue.add(async () => {
      try {
        await copy();
      } finally {
        if (--this.#count === 0) for (const wake of this.#waiters.splice(0)) wake();
      }
    }, lane);
  }

  async drain(): Promise<void> {
    if (this.#count === 0) return;
    await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }
}

/** Copies one object unless the target already holds it, recording the outcome in the tally. */
async function copyOne(
  ctx: CopyContext,
  tally: Tally,
  entry: PageEntry,
  byContent: boolean,
  known: KnownObject | undefined,
  onRecord: ((record: InventoryRecord) => void) | undefined,
): Promise<void> {
  const { object, targetKey } = entry;
  // What was being done when a call failed: the content comparison, or the transfer.
  let operation = 'GetObject (content comparison)';
  try {
    // Nothing known about the target key (an empty target): no check to await.
    if (known !== undefined && (await isUnchanged(ctx, byContent, object, targetKey, known))) {
      tally.done(undefined);
      onRecord?.({
        key: object.key,
        size: object.size,
        etag: object.etag,
        targetKey: known.targetKey ?? targetKey,
        copied: false,
        // The check made when the blob entered the vault still describes its bytes.
        ...(known.verified === undefined ? {} : { verified: known.verified }),
      });
      return;
    }
    operation = transferOperation(ctx.settings, object.size);
    const result = await transferObject(ctx, object, targetKey, entry.digest);
    tally.done(object.size);
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

/** The queue lane of copies from a list of entries (copyEntries). */
const ENTRIES_LANE = 'entries';

/** Runs (part of) a shard and returns its totals, failures and, if it stopped early, a cursor. */
export async function runShard(
  ctx: CopyContext,
  shard: Shard,
  options: ShardRunOptions = {},
): Promise<ShardRunResult> {
  const route = ctx.policy.route(shard);
  const passes = route.passes;
  const uploadIds = new Set<string>();

  const tally = new Tally(ctx.maxFailures);
  const fail = (failure: Failure) => tally.fail(failure);

  // This shard's copies in flight; the queue itself is shared with other shards.
  const inflight = new InFlight();
  const drain = () => inflight.drain();
  // About one page queued ahead of the copies, unless the route lists further
  // ahead (a registry's link shards, so that blob listing starts while link
  // copies still run; the queue then serves both in turns).
  const lookahead = route.lookahead ?? ctx.queue.concurrency;

  /** Queues copies of the listed objects this pass copies (failing them if the target cannot be read). */
  const copyListed = async (objects: readonly ListedObject[], pass: number): Promise<void> => {
    const entries: Array<{ entry: PageEntry; byContent: boolean }> = [];
    let listedBytes = 0;
    let uploads = 0;
    for (const object of objects) {
      const treatment = route.treat(object.key, pass);
      if (treatment === undefined) continue;
      if (treatment.leaveOut === true) {
        uploads++;
        if (treatment.uploadId !== undefined) uploadIds.add(treatment.uploadId);
        continue;
      }
      listedBytes += object.size;
      const digest = ctx.verifyDigests ? treatment.digest : undefined;
      entries.push({
        entry: {
          object,
          targetKey: ctx.mapKey(object.key),
          ...(digest === undefined ? {} : { digest }),
        },
        byContent: treatment.digest !== undefined,
      });
    }
    tally.add({
      listed: entries.length,
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
      return;
    }
    // Copy behind: queue the page, then wait only until the queue has room for
    // another page, so copies of consecutive pages overlap.
    for (const { entry, byContent } of entries) {
      inflight.add(ctx.queue, shard.kind, () =>
        copyOne(ctx, tally, entry, byContent, known.get(entry.object.key), options.onRecord),
      );
    }
    await ctx.queue.onWaitingBelow(lookahead, shard.kind);
  };

  // A cursor's `phase` is the index of the pass it continues.
  const startPass = options.cursor?.phase ?? 0;
  for (let pass = startPass; pass < passes.length; pass++) {
    const { rollUp, barrier } = passes[pass] ?? {};
    let token = pass === startPass ? options.cursor?.continuationToken : undefined;
    let pending: Promise<Page> = listPage(ctx, shard, token, rollUp);
    // The cursor names the page whose listing failed: a retry lists it again.
    const listingFailed = async (err: unknown, prefix: string) => {
      const { code, message } = describeError(err);
      fail({ key: prefix, operation: 'ListObjectsV2', code, message });
      await drain();
      return finish(shard, tally, uploadIds, {
        next: { phase: pass, ...(token === undefined ? {} : { continuationToken: token }) },
        aborted: `listing failed: ${message}`,
      });
    };
    for (;;) {
      let page: Page;
      try {
        page = await pending;
      } catch (err) {
        return listingFailed(err, shard.prefix);
      }
      const nextToken = page.next;
      // Hand on: another worker lists on from here while this run copies the page.
      const handedOn =
        nextToken !== undefined &&
        options.handOn !== undefined &&
        barrier !== true &&
        (await options.handOn({ phase: pass, continuationToken: nextToken }));
      // List ahead: the next page is requested before this one is copied.
      if (nextToken !== undefined && !handedOn) pending = listPage(ctx, shard, nextToken, rollUp);
      await copyListed(page.objects, pass);
      // A common prefix the roll-up did not mean to roll up is listed in full
      // here, page by page, so no key below it is missed.
      for (const prefix of page.unexpected) {
        let subToken: string | undefined;
        do {
          let sub: Page;
          try {
            sub = await listPage(ctx, { prefix }, subToken, undefined);
          } catch (err) {
            void pending.catch(() => undefined);
            return listingFailed(err, prefix);
          }
          await copyListed(sub.objects, pass);
          subToken = sub.next;
        } while (subToken !== undefined);
      }
      options.onProgress?.(tally.totals);
      if (tally.failed >= ctx.maxFailures) {
        await drain();
        void pending.catch(() => undefined);
        return finish(shard, tally, uploadIds, {
          aborted: `stopped after ${tally.failed} failures`,
        });
      }
      token = nextToken;
      if (token === undefined) break;
      if (handedOn) {
        await drain();
        return finish(shard, tally, uploadIds, {
          handedOn: { phase: pass, continuationToken: token },
        });
      }
      if (options.deadline !== undefined && Date.now() >= options.deadline) {
        await drain();
        // The listed-ahead page is dropped; the next worker lists it again.
        void pending.catch(() => undefined);
        return finish(shard, tally, uploadIds, { next: { phase: pass, continuationToken: token } });
      }
    }
    // A barrier pass's copies all finish before the next pass is listed (a
    // registry's tag links: docs/consistency.md); after any other, copies trail.
    if (barrier === true) await drain();
  }
  options.onListed?.();
  await drain();
  return finish(shard, tally, uploadIds);
}

function finish(
  shard: Pick<Shard, 'id'>,
  tally: Tally,
  uploadIds: Set<string>,
  end: Pick<ShardRunResult, 'next' | 'aborted' | 'handedOn'> = {},
): ShardRunResult {
  return {
    shardId: shard.id,
    totals: tally.totals,
    failures: tally.failures,
    uploadIds: [...uploadIds].sort(),
    ...end,
  };
}

/**
 * An object to copy from a list (a restore reads these from a snapshot
 * inventory). A `digest` says the key names its content: equal size in the
 * target is enough to skip it, and its bytes are checked against the digest.
 */
export type ListEntry = PageEntry;

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
  const inflight = new InFlight();
  for (let start = options.cursor?.offset ?? 0; start < entries.length; start += PAGE_SIZE) {
    if (
      start > (options.cursor?.offset ?? 0) &&
      options.deadline !== undefined &&
      Date.now() >= options.deadline
    ) {
      await inflight.drain();
      return finish({ id }, tally, new Set(), { next: { phase: 0, offset: start } });
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
      inflight.add(ctx.queue, ENTRIES_LANE, () =>
        copyOne(
          ctx,
          tally,
          entry,
          entry.digest !== undefined,
          known.get(entry.object.key),
          options.onRecord,
        ),
      );
    }
    await ctx.queue.onWaitingBelow(ctx.queue.concurrency, ENTRIES_LANE);
    options.onProgress?.(tally.totals);
    if (tally.failed >= ctx.maxFailures) {
      await inflight.drain();
      return finish({ id }, tally, new Set(), {
        aborted: `stopped after ${tally.failed} failures`,
      });
    }
  }
  await inflight.drain();
  return finish({ id }, tally, new Set());
}
