/**
 * Copying one object of a run (a listed shard or a list of entries): skip it
 * when the target already holds it, else transfer it, and count the outcome.
 * A run's totals and failures (`Tally`), its copies in flight in the shared
 * queue (`InFlight`) and its result (`ShardRunResult`, built by `finish`)
 * live here too.
 */
import { messageOf } from '../errors.ts';
import { getObjectBytes } from '../s3/get-object.ts';
import type { CopyContext } from './context.ts';
import {
  type Cursor,
  emptyTotals,
  type Failure,
  type InventoryRecord,
  type ListedObject,
  type Shard,
  type Totals,
} from './model.ts';
import type { CopyQueue } from './queue.ts';
import type { KnownObject, PageEntry } from './target-state.ts';
import { transferObject, transferOperation } from './transfer.ts';

export interface ShardRunResult {
  readonly shardId: string;
  readonly totals: Totals;
  readonly failures: readonly Failure[];
  /** Distinct uploads the policy left out (a registry's unfinished `_uploads/<id>`). */
  readonly uploadIds: readonly string[];
  /** Set when the run stopped early (deadline): continue the shard from here. */
  readonly next?: Cursor;
  /** Set when the run gave its continuation to another worker (`handOn`): that worker continues from here. */
  readonly handedOn?: Cursor;
  /** Why the run gave up, when it did (too many failures). */
  readonly aborted?: string;
}

/** S3 error code and HTTP status of a thrown SDK error. */
export function describeError(err: unknown): {
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
  const read = async (client: typeof ctx.source.client, bucket: string, key: string) =>
    Buffer.from((await getObjectBytes(client, { Bucket: bucket, Key: key })).body);
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

/** How often a shard run reports its running totals while objects finish (at most). */
const PROGRESS_EVERY_MS = 100;

/**
 * Running totals and failures of one shard run, shared by its copies. The
 * counters are updated in place (once or twice per object); `totals` hands
 * out a copy. With `onProgress`, objects finishing report the running totals
 * at most every 100 ms, so progress counts what is done, not what a finished
 * page held.
 */
export class Tally {
  readonly #counts: { -readonly [K in keyof Totals]: number } = emptyTotals();
  readonly failures: Failure[] = [];
  readonly #max: number;
  readonly #onProgress: ((totals: Totals) => void) | undefined;
  #reported = 0;

  constructor(maxFailures: number, onProgress?: (totals: Totals) => void) {
    this.#max = maxFailures;
    this.#onProgress = onProgress;
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

  /** One retry of an S3 call made for this run (s3/retry.ts). */
  retried(): void {
    this.#counts.retries++;
  }

  /** One object copied or found unchanged (the hot path: no delta object). */
  done(copiedBytes: number | undefined): void {
    if (copiedBytes === undefined) this.#counts.skipped++;
    else {
      this.#counts.copied++;
      this.#counts.bytesCopied += copiedBytes;
    }
    this.#tick();
  }

  fail(failure: Failure): void {
    this.#counts.failed++;
    if (this.failures.length < this.#max) this.failures.push(failure);
    this.#tick();
  }

  #tick(): void {
    if (this.#onProgress === undefined) return;
    const now = Date.now();
    if (now - this.#reported < PROGRESS_EVERY_MS) return;
    this.#reported = now;
    this.#onProgress(this.totals);
  }
}

/**
 * The copies one shard run has queued and not yet finished (the queue itself
 * is shared with other shards), counted rather than kept, with a wait for the
 * count to reach zero.
 */
export class InFlight {
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

/** An object to copy, and whether its key names its content (equal size in the target is then enough). */
export interface Queued {
  readonly entry: PageEntry;
  readonly byContent: boolean;
  /** Copied in the run's trailing lane (KeyTreatment's `trails`). */
  readonly trails?: boolean;
}

/**
 * The copies a barrier pass lets trail (KeyTreatment's `trails`), in a lane
 * of their own that is held while the barrier is pending: they wait behind
 * the copies the barrier waits for.
 */
export class TrailingCopies {
  readonly inflight = new InFlight();
  readonly lane: string;
  readonly #queue: CopyQueue;
  #holding = false;

  constructor(queue: CopyQueue, lane: string) {
    this.#queue = queue;
    this.lane = `${lane}:trailing`;
  }

  hold(): void {
    if (this.#holding) return;
    this.#holding = true;
    this.#queue.hold(this.lane);
  }

  release(): void {
    if (!this.#holding) return;
    this.#holding = false;
    this.#queue.release(this.lane);
  }
}

/** What the copies of one run share: its tally, its copies in flight and where records go. */
export interface RunCopies {
  readonly tally: Tally;
  readonly inflight: InFlight;
  /** The copies that may trail the barrier; without it they go with the others. */
  readonly trailing?: TrailingCopies;
  readonly onRecord: ((record: InventoryRecord) => void) | undefined;
}

/**
 * Queues the copies of one page in `lane` once the target state says what it
 * already holds, then waits only until fewer than `lookahead` of the lane's
 * copies wait (copy behind: copies of consecutive pages overlap). When the
 * target cannot be read, every copy of the page fails and it returns false.
 */
export async function queuePage(
  ctx: CopyContext,
  run: RunCopies,
  page: readonly Queued[],
  lane: string,
  lookahead: number,
): Promise<boolean> {
  let known: ReadonlyMap<string, KnownObject>;
  // `ctx` is the run's (withRetrySink): its copies count their retries in its tally.
  try {
    known = await ctx.targetState.lookup(
      page.map((queued) => queued.entry),
      () => run.tally.retried(),
    );
  } catch (err) {
    const { code, message } = describeError(err);
    for (const { entry } of page)
      run.tally.fail({ key: entry.object.key, operation: 'ListObjectsV2 (target)', code, message });
    return false;
  }
  for (const { entry, byContent, trails } of page) {
    const trailing = trails === true ? run.trailing : undefined;
    (trailing?.inflight ?? run.inflight).add(ctx.queue, trailing?.lane ?? lane, () =>
      copyOne(ctx, run.tally, entry, byContent, known.get(entry.object.key), run.onRecord),
    );
  }
  await ctx.queue.onWaitingBelow(lookahead, lane);
  return true;
}

/** A run's result: its tally, the uploads it left out and how it ended (`end`). */
export function finish(
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
