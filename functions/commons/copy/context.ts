/**
 * Opening a copy job: the context every shard of one job shares (its clients
 * and lean copiers, transfer settings, copy queue, memory budget, key
 * mapping, what the target holds, and the source's policy). Every caller
 * opens its copy here: the workflows' copy worker (workflows/worker.ts),
 * which the Lambda copy worker and the local runner both run, the CLI's
 * `copy` command and the bench's scripts/copy-run.ts.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { isDirectoryEndpoint } from '../s3/directory.ts';
import { createFastCopier, type FastCopier } from '../s3/fast-copy.ts';
import { countingRetries, type RetrySink } from '../s3/retry.ts';
import type { Location } from './model.ts';
import type { CopyPolicy } from './policy.ts';
import { CopyQueue } from './queue.ts';
import type { TargetState } from './target-state.ts';
import {
  ByteBudget,
  CopyMode,
  DEFAULT_TRANSFER,
  type TransferContext,
  type TransferSettings,
} from './transfer.ts';

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
  /** Check objects against the digest their key names (server SHA-256 of the copy, or hashing while streaming). */
  readonly verifyDigests: boolean;
  /** How the source's shards are listed and what their keys are. */
  readonly policy: CopyPolicy;
}

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
 * The lean request path to `location` for a job copying `concurrency` objects
 * at once (its sockets; the copier is shared by every user of `client`, so
 * the planner that lists first sizes it as the copies will need it).
 * Undefined for a directory: it is answered in this process, and the lean
 * path has nothing to save.
 */
export function leanPathFor(
  client: S3Client,
  location: Location,
  concurrency = 64,
): FastCopier | undefined {
  return isDirectoryEndpoint(location.endpoint)
    ? undefined
    : fastCopierFor(client, location, concurrency + 8);
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

/**
 * `ctx` as one run (a shard, a list of entries) sees it: the same queue,
 * budget and connections, with the retries of its S3 calls (SDK and lean
 * path) also counted in `sink`. The run's target lookups take `sink` too.
 */
export function withRetrySink(ctx: CopyContext, sink: RetrySink): CopyContext {
  const side = <S extends { readonly client: S3Client; readonly fast?: FastCopier }>(of: S): S => ({
    ...of,
    client: countingRetries(of.client, sink),
    ...(of.fast === undefined ? {} : { fast: of.fast.withRetrySink(sink) }),
  });
  return { ...ctx, source: side(ctx.source), target: side(ctx.target) };
}

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
  const sideOf = ({ client, location }: Side) => {
    const fast =
      (options.fastCopy ?? true) ? leanPathFor(client, location, options.concurrency) : undefined;
    return { client, bucket: location.bucket, ...(fast === undefined ? {} : { fast }) };
  };
  return {
    source: sideOf(options.source),
    target: {
      ...sideOf(options.target),
      ...(options.target.location.contentMd5 === true ? { contentMd5: true } : {}),
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
