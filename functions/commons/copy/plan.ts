/**
 * Planning a copy into bounded shards with few LIST requests for its size:
 * `planShards` lists through one counting lister and lets the source's policy
 * split it (policy.ts); counting key ranges and packing them into shards is
 * key-ranges.ts.
 *
 * `genericCopyPolicy` plans any bucket: prefixes are found by delimiter
 * listings to a bounded depth, sized by a page each (large ones walked and
 * cut into key ranges), and packed into contiguous shards of at most
 * `targetObjectsPerShard` keys, each copied in one pass.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import { type FastCopier, listObjectsPage } from '../s3/fast-copy.ts';
import { packRuns, runRanges } from './key-ranges.ts';
import { compareKeys, PAGE_SIZE, type Shard } from './model.ts';
import {
  COPY,
  type CopyPolicy,
  type Lister,
  type PreviousPlan,
  type ShardRoute,
  type Split,
  type SplitOptions,
} from './policy.ts';

export interface PlanOptions extends Partial<SplitOptions> {
  /** Lists through the lean request path (the copy context's source copier) instead of the SDK. */
  readonly fast?: Pick<FastCopier, 'listObjectsV2'> | undefined;
  /** The last backup's plan of this source, for a policy that can reuse it (CopyPolicy.reuse). */
  readonly previous?: PreviousPlan | undefined;
}

export interface Plan extends Split {
  /** LIST requests the planning made. */
  readonly requests: number;
  /** True when the previous plan's shards were taken again instead of splitting the source. */
  readonly reused: boolean;
}

/**
 * Objects a shard holds at most unless told otherwise. A registry of 10
 * million objects plans to about 2,100 shards (at 20,000, about 560): two
 * or more for each of a thousand copy workers. A shard is 5 to 17 s of one
 * worker's copies at the 300 to 1,000 copies/s docs/scale.md assumes.
 */
export const DEFAULT_OBJECTS_PER_SHARD = 5_000;

/** A lister that counts its requests. */
export function lister(
  client: S3Client,
  bucket: string,
  fast?: Pick<FastCopier, 'listObjectsV2'>,
): Lister & { readonly requests: number } {
  let requests = 0;
  return {
    get requests() {
      return requests;
    },
    async page(prefix, options = {}) {
      requests++;
      const page = await listObjectsPage(client, fast, {
        bucket,
        prefix,
        maxKeys: PAGE_SIZE,
        ...(options.delimiter === undefined ? {} : { delimiter: options.delimiter }),
        ...(options.token === undefined ? {} : { continuationToken: options.token }),
        ...(options.startAfter === undefined ? {} : { startAfter: options.startAfter }),
      });
      return {
        keys: page.contents.map((c) => c.key),
        prefixes: page.commonPrefixes,
        next: page.isTruncated ? page.nextContinuationToken : undefined,
      };
    },
  };
}

/**
 * Plans the source below `prefix` of `bucket` into shards as `policy` splits
 * it (for a registry, `prefix` is its root directory).
 */
export async function planShards(
  client: S3Client,
  bucket: string,
  prefix: string,
  policy: CopyPolicy,
  options: PlanOptions = {},
): Promise<Plan> {
  const list = lister(client, bucket, options.fast);
  const { fast: _fast, previous, ...rest } = options;
  const splitOptions = {
    ...rest,
    targetObjectsPerShard: options.targetObjectsPerShard ?? DEFAULT_OBJECTS_PER_SHARD,
  };
  const reused =
    previous === undefined || policy.reuse === undefined
      ? undefined
      : await policy.reuse(list, prefix, previous, splitOptions);
  if (reused !== undefined) return { ...reused, requests: list.requests, reused: true };
  const split = await policy.split(list, prefix, splitOptions);
  return { ...split, requests: list.requests, reused: false };
}

/** A contiguous run of keys from `start` on, with how many keys it holds. */
interface Segment {
  readonly start: string;
  readonly count: number;
}

/**
 * Walks every key below `prefix` and cuts it into segments of at most
 * `target` keys: the key-range (StartAfter) split of a large prefix.
 */
async function walk(list: Lister, prefix: string, target: number): Promise<Segment[]> {
  const segments: Array<{ start: string; count: number }> = [];
  let token: string | undefined;
  do {
    const page = await list.page(prefix, token === undefined ? {} : { token });
    for (const key of page.keys) {
      const open = segments.at(-1);
      if (open === undefined || open.count === target) segments.push({ start: key, count: 1 });
      else open.count++;
    }
    token = page.next;
  } while (token !== undefined);
  return segments;
}

/**
 * The segments below `prefix`: a delimiter listing finds its direct keys and
 * sub-prefixes; sub-prefixes are discovered the same way down to `depth`
 * more levels, then walked and cut (one LIST for a prefix of up to 1,000
 * keys). Sub-prefixes are listed in parallel.
 */
async function discover(
  list: Lister,
  prefix: string,
  depth: number,
  target: number,
  limit: PQueue,
): Promise<Segment[]> {
  const entries: Array<{ at: string; segments: Promise<Segment[]> }> = [];
  let token: string | undefined;
  const seen = new Set<string>();
  do {
    const page = await limit.add(() =>
      list.page(prefix, { delimiter: '/', ...(token === undefined ? {} : { token }) }),
    );
    for (const key of page.keys)
      entries.push({ at: key, segments: Promise.resolve([{ start: key, count: 1 }]) });
    for (const child of page.prefixes) {
      // Some servers repeat a common prefix across pages.
      if (seen.has(child)) continue;
      seen.add(child);
      entries.push({
        at: child,
        segments:
          depth > 1
            ? discover(list, child, depth - 1, target, limit)
            : limit.add(() => walk(list, child, target)),
      });
    }
    token = page.next;
  } while (token !== undefined);
  entries.sort((a, b) => compareKeys(a.at, b.at));
  const resolved = await Promise.all(entries.map((entry) => entry.segments));
  return resolved.flat().filter((segment) => segment.count > 0);
}

/**
 * Plans any bucket below `prefix`: prefixes are discovered by delimiter
 * listings to a bounded depth (listed in parallel), large ones are split by
 * key range, and the pieces, in key order, are packed into contiguous shards
 * of at most `targetObjectsPerShard` keys, so no shard is unbounded and no key
 * falls between two shards. The counts are exact: every key was listed once.
 */
async function splitByKeyRange(
  list: Lister,
  prefix: string,
  options: SplitOptions,
): Promise<Split> {
  const target = options.targetObjectsPerShard;
  const limit = new PQueue({ concurrency: options.listConcurrency ?? 16 });
  const segments = await discover(list, prefix, options.discoveryDepth ?? 2, target, limit);
  const runs = packRuns(
    segments.map((segment) => segment.count),
    target,
  );
  const ranges = runRanges(runs, (item) => segments[item]?.start ?? prefix);
  if (ranges.length === 0) ranges.push({ estimatedObjects: 0 });
  const dataShards: Shard[] = ranges.map((range, index) => ({
    id: `objects-${String(index).padStart(5, '0')}`,
    kind: 'objects',
    prefix,
    ...range,
  }));
  return {
    linkShards: [],
    dataShards,
    estimatedObjects: ranges.reduce((sum, range) => sum + range.estimatedObjects, 0),
  };
}

/** Every key of a shard, in one pass. */
const ONE_PASS: ShardRoute = { passes: [{}], treat: () => COPY };

/** Any bucket, as keys: shards by key range, every key copied as it is. */
export const genericCopyPolicy: CopyPolicy = {
  split: splitByKeyRange,
  route: () => ONE_PASS,
};
