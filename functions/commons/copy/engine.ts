/**
 * Running a whole plan in one process (`runPlan`: data shards start listing
 * once every link shard has listed) and totalling shard results
 * (`summarise`). Backups and restores never call `runPlan`: the workflows'
 * copy worker calls `runShard` or `copyEntries` once per shard message with
 * its own deadline, and the workflow totals the results. `runPlan` serves the
 * CLI's `copy` command and the bench's scripts/copy-run.ts.
 */
import PQueue from 'p-queue';
import type { CopyContext } from './context.ts';
import {
  addTotals,
  emptyTotals,
  type Failure,
  type InventoryRecord,
  type Shard,
  type Totals,
} from './model.ts';
import type { ShardRunResult } from './object-copy.ts';
import type { Plan } from './plan.ts';
import { runShard } from './shard-runner.ts';

export interface PlanRunOptions {
  /** Shards run at once (they share the context's object queue). */
  readonly shardConcurrency?: number;
  readonly onRecord?: (record: InventoryRecord) => void;
  readonly onShardDone?: (result: ShardRunResult) => void;
  readonly onProgress?: (totals: Totals) => void;
}

export interface CopyOutcome {
  readonly ok: boolean;
  readonly totals: Totals;
  readonly failures: readonly Failure[];
  readonly uploadIds: readonly string[];
  readonly shards: readonly ShardRunResult[];
}

/** Sums shard results; a run with any failure, or any aborted shard, is not ok. */
export function summarise(results: readonly ShardRunResult[]): CopyOutcome {
  let totals = emptyTotals();
  const failures: Failure[] = [];
  const uploads = new Set<string>();
  for (const result of results) {
    totals = addTotals(totals, result.totals);
    failures.push(...result.failures);
    for (const id of result.uploadIds) uploads.add(id);
  }
  const ok =
    totals.failed === 0 && results.every((r) => r.aborted === undefined && r.next === undefined);
  return { ok, totals, failures, uploadIds: [...uploads].sort(), shards: results };
}

async function runAll(
  ctx: CopyContext,
  shards: readonly Shard[],
  options: PlanRunOptions,
  progress: { base: Totals; running: Map<string, Totals> },
  onAllListed?: () => void,
): Promise<ShardRunResult[]> {
  const shardQueue = new PQueue({ concurrency: options.shardConcurrency ?? 4 });
  const report = () => {
    let sum = progress.base;
    for (const t of progress.running.values()) sum = addTotals(sum, t);
    options.onProgress?.(sum);
  };
  let unlisted = shards.length;
  const listed = () => {
    unlisted--;
    if (unlisted === 0) onAllListed?.();
  };
  if (shards.length === 0) onAllListed?.();
  return Promise.all(
    shards.map((shard) =>
      shardQueue.add(async () => {
        let signalled = false;
        const signal = () => {
          if (!signalled) {
            signalled = true;
            listed();
          }
        };
        try {
          const result = await runShard(ctx, shard, {
            ...(options.onRecord === undefined ? {} : { onRecord: options.onRecord }),
            onListed: signal,
            onProgress: (t) => {
              progress.running.set(shard.id, t);
              report();
            },
          });
          progress.running.set(shard.id, result.totals);
          report();
          options.onShardDone?.(result);
          return result;
        } finally {
          signal();
        }
      }),
    ),
  );
}

/**
 * Runs every link shard, then every data shard: data shards start listing
 * only once every link shard has listed its last pass, and the link shards'
 * trailing copies overlap theirs. For a registry, blobs are listed after
 * every link (and every tag link copied), so each captured reference points
 * at content captured after it (docs/consistency.md).
 */
export async function runPlan(
  ctx: CopyContext,
  plan: Plan,
  options: PlanRunOptions = {},
): Promise<CopyOutcome> {
  const progress = { base: emptyTotals(), running: new Map<string, Totals>() };
  let linksListed: () => void = () => undefined;
  const allLinksListed = new Promise<void>((resolve) => {
    linksListed = resolve;
  });
  const links = runAll(ctx, plan.linkShards, options, progress, linksListed);
  await allLinksListed;
  const data = runAll(ctx, plan.dataShards, options, progress);
  return summarise([...(await links), ...(await data)]);
}
