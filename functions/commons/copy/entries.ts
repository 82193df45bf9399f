/**
 * Copying an explicit list of objects (a restore part, read from a snapshot
 * inventory) with the same skip rules, queue, retries, accounting and
 * deadline hand-on as a listed shard.
 */
import { type CopyContext, withRetrySink } from './context.ts';
import { PAGE_SIZE } from './model.ts';
import { finish, InFlight, queuePage, type ShardRunResult, Tally } from './object-copy.ts';
import type { ShardRunOptions } from './shard-runner.ts';
import type { PageEntry } from './target-state.ts';

/** The queue lane of copies from a list of entries. */
const ENTRIES_LANE = 'entries';

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
  shared: CopyContext,
  id: string,
  entries: readonly ListEntry[],
  options: Pick<ShardRunOptions, 'onRecord' | 'onProgress' | 'cursor' | 'deadline'> = {},
): Promise<ShardRunResult> {
  const tally = new Tally(shared.maxFailures, options.onProgress);
  // The run's view of the context counts its calls' retries in its tally.
  const ctx = withRetrySink(shared, () => tally.retried());
  const inflight = new InFlight();
  const run = { tally, inflight, onRecord: options.onRecord };
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
    const queued = page.map((entry) => ({ entry, byContent: entry.digest !== undefined }));
    if (!(await queuePage(ctx, run, queued, ENTRIES_LANE, ctx.queue.concurrency))) continue;
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
