/**
 * The copy engine's entry points: build a copy context for two locations
 * (`createCopyContext`), run all of a plan's shards in one process
 * (`runPlan`: data shards start listing once every link shard has listed)
 * and total the outcome. Backups and restores never call `runPlan`: the
 * workflows' copy worker (workflows/worker.ts), which the Lambda copy worker
 * and the local runner (so the CLI's backup and restore) both run, builds
 * its context here and calls `runShard` once per shard message with its own
 * deadline. `runPlan` serves the CLI's `copy` command and the bench's
 * scripts/copy-run.ts.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import { createFastCopier, type FastCopier } from '../s3/fast-copy.ts';
import {
  addTotals,
  emptyTotals,
  type Failure,
  type InventoryRecord,
  type Location,
  type Shard,
  type Totals,
} from './model.ts';
import type { Plan } from './plan.ts';
import type { CopyPolicy } from './policy.ts';
import { CopyQueue } from './queue.ts';
import { type CopyContext, type KeyMapper, runShard, type ShardRunResult } from './shard-runner.ts';
import type { TargetState } from './target-state.ts';
import { ByteBudget, CopyMode, DEFAULT_TRANSFER, type TransferSettings } from './transfer.ts';

export interface Side {
  readonly location: Location;
  readonly client: S3Client;
}

export interface CopyJobOptions {
  readonly source: Side;
  readonly target: Side;
  readonly mapKey: KeyMapper;
  readonly targetState: TargetState;
  /** What the source holds: how its shards are listed (the one its plan was made with). */
  readonly policy: CopyPolicy;
  /** Object copies in flight at once (default 64). */
  readonly concurrency?: number;
  /** Overrides of the transfer settings; `mode` defaults to what the locations allow. */
  readonly transfer?: Partial<TransferSettings>;
  /** Bytes of streamed object data held in memory at most (default 128 MiB). */
  readonly memoryBudgetBytes?: number;
  readonly contentCompareMaxBytes?: number;
  readonly maxFailures?: number;
  /** Check blobs against the digest in their key where it costs no extra read (default true). */
  readonly verifyDigests?: boolean;
  /** Listings and server-side copies through the lean request path (default true; see s3/fast-copy.ts). */
  readonly fastCopy?: boolean;
}

const fastCopiers = new WeakMap<S3Client, FastCopier>();

/** One lean copier per client, reused by every context (and plan) built on it. */
export function fastCopierFor(
  client: S3Client,
  location: Location,
  maxSockets: number,
): FastCopier {
  let copier = fastCopiers.get(client);
  if (copier === undefined) {
    copier = createFastCopier(client, location, { maxSockets });
    fastCopiers.set(client, copier);
  }
  return copier;
}

/**
 * Server-side copy needs the target's client to read the source: the same
 * endpoint and the same access reference. Anything else streams.
 */
export function copyModeFor(source: Location, target: Location): CopyMode {
  return source.endpoint === target.endpoint && source.access === target.access
    ? CopyMode.ServerSide
    : CopyMode.Stream;
}

/**
 * Streaming part size: small enough that many parts in flight stay within the
 * memory budget, and below the ~11 MiB request limit of the sandbox S3 server
 * (AWS's own CLI uses 8 MiB too). Large objects get bigger parts so they fit
 * in 10,000 (see partRanges).
 */
const STREAM_PART_SIZE = 8 * 1024 ** 2;

/** Builds the context every shard of one copy job shares (queue, budget, clients). */
export function createCopyContext(options: CopyJobOptions): CopyContext {
  const mode =
    options.transfer?.mode ?? copyModeFor(options.source.location, options.target.location);
  const settings: TransferSettings = {
    ...DEFAULT_TRANSFER,
    ...(mode === CopyMode.Stream ? { partSize: STREAM_PART_SIZE } : {}),
    ...options.transfer,
    mode,
  };
  return {
    source: {
      client: options.source.client,
      bucket: options.source.location.bucket,
      ...((options.fastCopy ?? true)
        ? {
            fast: fastCopierFor(
              options.source.client,
              options.source.location,
              (options.concurrency ?? 64) + 8,
            ),
          }
        : {}),
    },
    target: {
      client: options.target.client,
      bucket: options.target.location.bucket,
      ...(options.target.location.contentMd5 === true ? { contentMd5: true } : {}),
      ...((options.fastCopy ?? true)
        ? {
            fast: fastCopierFor(
              options.target.client,
              options.target.location,
              (options.concurrency ?? 64) + 8,
            ),
          }
        : {}),
    },
    settings,
    budget: new ByteBudget(options.memoryBudgetBytes ?? 128 * 1024 ** 2),
    queue: new CopyQueue(options.concurrency ?? 64),
    mapKey: options.mapKey,
    targetState: options.targetState,
    policy: options.policy,
    contentCompareMaxBytes: options.contentCompareMaxBytes ?? 4096,
    maxFailures: options.maxFailures ?? 1000,
    verifyDigests: options.verifyDigests ?? true,
  };
}

/** Key mapping that swaps the source location's prefix for the target's. */
export function prefixMapper(source: Location, target: Location): KeyMapper {
  return (key) => `${target.prefix}${key.slice(source.prefix.length)}`;
}

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
