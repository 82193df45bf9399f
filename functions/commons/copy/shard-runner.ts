/**
 * Executing a shard: list a page, start listing the next one at once (list
 * ahead), copy the page's objects through the shared queue (copy behind), and
 * stop at a page boundary when the deadline passes, returning a cursor another
 * worker continues from. Link shards run three phases, each listed after the
 * one before, the second only once every tag of the first is copied
 * (docs/consistency.md); a phase's listing rolls up, by delimiter, the part of
 * each repository it does not copy.
 */
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { messageOf } from '../errors.ts';
import {
  blobDigestOf,
  classifyRegistryKey,
  KeyKind,
  reservedSegmentOf,
  uploadIdOf,
} from '../registry/layout.ts';
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
  /**
   * Offered the continuation of the listing before the page just listed is
   * copied. Returning true means the caller gave it to another worker: this
   * run copies that page and stops, with the cursor in `handedOn`. Never
   * offered during a link shard's tag phase, whose copies must all finish
   * before the revisions are listed (docs/consistency.md).
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

/** One pass over a shard's keys: how it lists and which keys it copies. */
export interface Phase {
  /**
   * Rolls up `<repository>/<delimiter>` (a directory this phase copies nothing
   * from) into one common prefix per repository instead of listing its keys.
   */
  readonly delimiter?: string;
  /** Whether this phase copies a key of this kind (`relativeKey` is below the registry prefix). */
  copies(kind: KeyKind, relativeKey: string): boolean;
}

const underManifests = (relativeKey: string) =>
  reservedSegmentOf(relativeKey)?.segment === '_manifests';

/**
 * A link shard's phases, in the reverse of the registry's write order: tags,
 * then revisions, then layer links. Tags and revisions live in `_manifests/`,
 * layer links in `_layers/`, and the two phases that need only one of the
 * directories roll the other one up, so each link is listed about twice, not
 * three times (in the benchmark's registry, 19,000 listed entries instead of 36,000).
 * Other keys go with the directory they are in.
 */
const LINK_PHASES: readonly Phase[] = [
  { delimiter: '/_layers/', copies: (kind) => kind === KeyKind.Tag },
  {
    delimiter: '/_layers/',
    copies: (kind, key) =>
      kind === KeyKind.Revision || (kind === KeyKind.Other && underManifests(key)),
  },
  {
    delimiter: '/_manifests/',
    copies: (kind, key) =>
      kind === KeyKind.Layer ||
      kind === KeyKind.Blob ||
      (kind === KeyKind.Other && !underManifests(key)),
  },
];

const ONE_PHASE: readonly Phase[] = [{ copies: () => true }];

/** The phases of a shard. */
export function phasesOf(shard: Shard): readonly Phase[] {
  return shard.kind === 'links' ? LINK_PHASES : ONE_PHASE;
}

interface Page {
  readonly objects: ListedObject[];
  /** Common prefixes the phase's delimiter does not account for: listed in full. */
  readonly unexpected: string[];
  readonly next: string | undefined;
}

/**
 * Whether a common prefix is the directory the delimiter is meant to roll up:
 * `<prefix><repository name><delimiter>`, where no name component starts with
 * `_`. Anything else (the delimiter inside another reserved directory) may
 * hold keys the phase copies, so it is listed without the delimiter.
 */
function isRolledUpDirectory(common: string, prefix: string, delimiter: string): boolean {
  const name = common.slice(prefix.length, common.length - delimiter.length);
  return name !== '' && !name.startsWith('_') && !name.includes('/_');
}

async function listPage(
  ctx: CopyContext,
  shard: Pick<Shard, 'prefix' | 'startAt' | 'endBefore'>,
  token: string | undefined,
  delimiter: string | undefined,
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
    ...(delimiter === undefined ? {} : { delimiter }),
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
    if (delimiter !== undefined && !isRolledUpDirectory(common, shard.prefix, delimiter))
      unexpected.push(common);
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
  kind: KeyKind,
  known: KnownObject | undefined,
  onRecord: ((record: InventoryRecord) => void) | undefined,
): Promise<void> {
  const { object, targetKey } = entry;
  // What was being done when a call failed: the content comparison, or the transfer.
  let operation = 'GetObject (content comparison)';
  try {
    // Nothing known about the target key (an empty target): no check to await.
    if (known !== undefined && (await isUnchanged(ctx, kind, object, targetKey, known))) {
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

/**
 * Link copies a link shard may have queued before it lists its next page
 * (about 5 MB of entries). At a deadline they are finished before the run
 * hands on: small files, an estimated 10 s at 32 in flight on S3 (30 ms a
 * copy, not measured there), inside the 90 s a copy worker keeps back
 * (functions/copy-worker.ts).
 */
export const LINK_LOOKAHEAD = 10 * PAGE_SIZE;

/** The queue lane of copies from a list of entries (copyEntries). */
const ENTRIES_LANE = 'entries';

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
  /** The kind of a key below the registry prefix (`relative`). */
  const kindOf = (relativeKey: string): KeyKind =>
    shard.registryPrefix === undefined ? KeyKind.Other : classifyRegistryKey(relativeKey);

  const tally = new Tally(ctx.maxFailures);
  const fail = (failure: Failure) => tally.fail(failure);

  // This shard's copies in flight; the queue itself is shared with other shards.
  const inflight = new InFlight();
  const drain = () => inflight.drain();
  // A data shard keeps about one page queued ahead of its copies. A link shard
  // lists further ahead, so that every link is listed, and blob listing can
  // start, while link copies still run; the queue then serves both in turns.
  const lookahead = shard.kind === 'links' ? LINK_LOOKAHEAD : ctx.queue.concurrency;

  /** Queues copies of the listed objects this phase copies (failing them if the target cannot be read). */
  const copyListed = async (objects: readonly ListedObject[], phase: number): Promise<void> => {
    const current = phases[phase];
    const entries: Array<{ entry: PageEntry; kind: KeyKind }> = [];
    let listedBytes = 0;
    let uploads = 0;
    for (const object of objects) {
      const key = relative(object.key);
      const kind = kindOf(key);
      if (kind === KeyKind.Upload) {
        if (phase === 0) {
          uploads++;
          const id = uploadIdOf(key);
          if (id !== undefined) uploadIds.add(id);
        }
        continue;
      }
      if (current !== undefined && !current.copies(kind, key)) continue;
      listedBytes += object.size;
      const digest = ctx.verifyDigests && kind === KeyKind.Blob ? blobDigestOf(key) : undefined;
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
    for (const { entry, kind } of entries) {
      inflight.add(ctx.queue, shard.kind, () =>
        copyOne(ctx, tally, entry, kind, known.get(entry.object.key), options.onRecord),
      );
    }
    await ctx.queue.onWaitingBelow(lookahead, shard.kind);
  };

  const startPhase = options.cursor?.phase ?? 0;
  for (let phase = startPhase; phase < phases.length; phase++) {
    const delimiter = phases[phase]?.delimiter;
    let token = phase === startPhase ? options.cursor?.continuationToken : undefined;
    let pending: Promise<Page> = listPage(ctx, shard, token, delimiter);
    // The cursor names the page whose listing failed: a retry lists it again.
    const listingFailed = async (err: unknown, prefix: string) => {
      const { code, message } = describeError(err);
      fail({ key: prefix, operation: 'ListObjectsV2', code, message });
      await drain();
      return finish(shard, tally, uploadIds, {
        next: { phase, ...(token === undefined ? {} : { continuationToken: token }) },
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
        !(shard.kind === 'links' && phase === 0) &&
        (await options.handOn({ phase, continuationToken: nextToken }));
      // List ahead: the next page is requested before this one is copied.
      if (nextToken !== undefined && !handedOn)
        pending = listPage(ctx, shard, nextToken, delimiter);
      await copyListed(page.objects, phase);
      // A common prefix the delimiter did not mean to roll up is listed in full
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
          await copyListed(sub.objects, phase);
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
        return finish(shard, tally, uploadIds, { handedOn: { phase, continuationToken: token } });
      }
      if (options.deadline !== undefined && Date.now() >= options.deadline) {
        await drain();
        // The listed-ahead page is dropped; the next worker lists it again.
        void pending.catch(() => undefined);
        return finish(shard, tally, uploadIds, { next: { phase, continuationToken: token } });
      }
    }
    // Phase barrier: tag links change when an image is re-tagged, so the next
    // phase is listed only after every tag link is copied (a re-pointed tag is
    // copied with its new value, whose revision the next listing then finds).
    // Revision and layer links never change (their content is their own
    // digest): for them, listing in order is enough and copies may trail.
    if (phase === 0) await drain();
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
        copyOne(ctx, tally, entry, entry.kind, known.get(entry.object.key), options.onRecord),
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
