/**
 * Executing a shard: list a page, start listing the next one at once (list
 * ahead), copy the page's objects through the shared queue (copy behind), and
 * stop at a page boundary when the deadline passes, returning a cursor another
 * worker continues from. The copy's policy routes the shard (policy.ts): its
 * passes, each listed after the one before and after a barrier pass's copies
 * have finished (but for the copies it lets trail), the directories a pass's
 * listing rolls up, and what each listed key is. Each object is copied by
 * object-copy.ts.
 */
import { listObjectsPage } from '../s3/fast-copy.ts';
import { type CopyContext, withRetrySink } from './context.ts';
import {
  type Cursor,
  cleanEtag,
  type InventoryRecord,
  keyJustBefore,
  type ListedObject,
  PAGE_SIZE,
  type Shard,
  type Totals,
} from './model.ts';
import {
  describeError,
  finish,
  InFlight,
  type Queued,
  queuePage,
  type ShardRunResult,
  Tally,
  TrailingCopies,
} from './object-copy.ts';
import { lister } from './plan.ts';
import type { Pass } from './policy.ts';

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

/**
 * Runs (part of) a shard and returns its totals, failures and, if it stopped
 * early, a cursor. Every S3 call is retried by the one policy (s3/retry.ts);
 * the retries its listing and its copies took are counted in its totals.
 */
export async function runShard(
  ctx: CopyContext,
  shard: Shard,
  options: ShardRunOptions = {},
): Promise<ShardRunResult> {
  const tally = new Tally(ctx.maxFailures, options.onProgress);
  const trailing = new TrailingCopies(ctx.queue, shard.kind);
  try {
    // The run's view of the context counts its calls' retries in its tally.
    const counted = withRetrySink(ctx, () => tally.retried());
    return await runCounted(counted, shard, options, tally, trailing);
  } finally {
    // A hold left by a throw would keep the trailing lane waiting for ever.
    trailing.release();
  }
}

async function runCounted(
  ctx: CopyContext,
  shard: Shard,
  options: ShardRunOptions,
  tally: Tally,
  trailing: TrailingCopies,
): Promise<ShardRunResult> {
  await ctx.policy.prepare?.(shard, lister(ctx.source.client, ctx.source.bucket, ctx.source.fast));
  const route = ctx.policy.route(shard);
  const passes = route.passes;
  const uploadIds = new Set<string>();

  // This shard's copies in flight; the queue itself is shared with other shards.
  const inflight = new InFlight();
  const run = { tally, inflight, trailing, onRecord: options.onRecord };
  const drain = async () => {
    trailing.release();
    await inflight.drain();
    await trailing.inflight.drain();
  };
  // A barrier pass's copies, but for those it lets trail.
  const barrierDrain = async () => {
    await inflight.drain();
    trailing.release();
  };
  // About one page queued ahead of the copies, unless the route lists further
  // ahead (a registry's link shards, so that blob listing starts while link
  // copies still run; the queue then serves both in turns).
  const lookahead = route.lookahead ?? ctx.queue.concurrency;

  /** Queues copies of the listed objects this pass copies (failing them if the target cannot be read). */
  const copyListed = async (
    objects: readonly ListedObject[],
    pass: number,
    pages = 1,
  ): Promise<void> => {
    const entries: Queued[] = [];
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
        ...(treatment.trails === true ? { trails: true } : {}),
      });
    }
    tally.add({
      listed: entries.length,
      bytesListed: listedBytes,
      uploadsSkipped: uploads,
      pages,
    });
    await options.afterList?.(entries.map((e) => e.entry.object.key));
    await queuePage(ctx, run, entries, shard.kind, lookahead);
  };

  // A cursor's `phase` is the index of the pass it continues.
  const startPass = options.cursor?.phase ?? 0;
  // The pages of each pass listed whole in this run, kept while a later pass
  // may take them again (Pass.relists), with whether the pass copied nothing.
  const kept = new Map<number, { objects: ListedObject[][]; unchanged: boolean }>();
  const keeps = (pass: number) => passes.some((later) => later.relists === pass);
  for (let pass = startPass; pass < passes.length; pass++) {
    const { rollUp, barrier, relists } = passes[pass] ?? {};
    const earlier = relists === undefined ? undefined : kept.get(relists);
    if (earlier?.unchanged === true) {
      for (const objects of earlier.objects) await copyListed(objects, pass, 0);
      options.onProgress?.(tally.totals);
      if (barrier === true) await barrierDrain();
      continue;
    }
    if (barrier === true) trailing.hold();
    const keeping =
      keeps(pass) && !(pass === startPass && options.cursor?.continuationToken !== undefined)
        ? { objects: [] as ListedObject[][], copiedBefore: tally.totals.copied + tally.failed }
        : undefined;
    let token = pass === startPass ? options.cursor?.continuationToken : undefined;
    let pending: Promise<Page> = listPage(ctx, shard, token, rollUp);
    // The cursor names the page whose listing failed: a retry lists it again.
    const listingFailed = async (err: unknown, prefix: string) => {
      const { code, message } = describeError(err);
      tally.fail({ key: prefix, operation: 'ListObjectsV2', code, message });
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
      keeping?.objects.push(page.objects);
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
          keeping?.objects.push(sub.objects);
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
    // A barrier pass's copies finish before the next pass is listed (a
    // registry's tag links: docs/consistency.md), but for those it lets
    // trail; after any other pass, copies trail.
    if (barrier === true) await barrierDrain();
    if (keeping !== undefined) {
      const copiedNothing = () => tally.totals.copied + tally.failed === keeping.copiedBefore;
      // Unchanged only if the copies it let trail copied nothing either (an
      // unchanged shard's are all skipped, so waiting for them costs nothing).
      if (barrier === true && copiedNothing()) await trailing.inflight.drain();
      kept.set(pass, {
        objects: keeping.objects,
        // Only a barrier pass's copies are all done here.
        unchanged: barrier === true && copiedNothing(),
      });
    }
  }
  options.onListed?.();
  await drain();
  return finish(shard, tally, uploadIds);
}
