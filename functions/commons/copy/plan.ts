/**
 * Planning a copy into bounded shards with a handful of LIST requests.
 *
 * Registry buckets (Docker Distribution layout): link shards are contiguous
 * ranges of whole repositories (a repository is never split, so its three
 * phases stay ordered), blob shards are ranges of the 256 two-hex fan-outs
 * (split further by the third hex digit for very large registries), and
 * whatever else is in the bucket goes in "objects" shards.
 *
 * Any bucket: prefixes are found by delimiter listings to a bounded depth,
 * sized by a page each (large ones walked and cut into key ranges), and packed
 * into contiguous shards of at most `targetObjectsPerShard` keys.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import { registryPrefix } from '../registry/layout.ts';
import { type FastCopier, listObjectsPage } from '../s3/fast-copy.ts';
import { compareKeys, PAGE_SIZE, type Shard } from './model.ts';

export interface PlanOptions {
  /** Objects a shard should hold at most (an estimate for registry shards). */
  readonly targetObjectsPerShard?: number;
  /** Generic buckets: how many levels of `/` prefixes delimiter listings discover (default 2). */
  readonly discoveryDepth?: number;
  /** Generic buckets: LIST requests in flight while planning (default 16). */
  readonly listConcurrency?: number;
  /** Lists through the lean request path (the copy context's source copier) instead of the SDK. */
  readonly fast?: Pick<FastCopier, 'listObjectsV2'> | undefined;
}

export interface Plan {
  /** Link shards first (copied before any blob), then blob and other shards. */
  readonly linkShards: readonly Shard[];
  readonly dataShards: readonly Shard[];
  /** LIST requests the planning made. */
  readonly requests: number;
  readonly estimatedObjects: number;
}

const DEFAULT_TARGET = 20_000;
const HEX = '0123456789abcdef';

interface Lister {
  requests: number;
  page(
    prefix: string,
    options?: { delimiter?: string; token?: string; startAfter?: string },
  ): Promise<{
    keys: string[];
    prefixes: string[];
    next: string | undefined;
  }>;
}

function lister(
  client: S3Client,
  bucket: string,
  fast?: Pick<FastCopier, 'listObjectsV2'>,
): Lister {
  const self: Lister = {
    requests: 0,
    async page(prefix, options = {}) {
      self.requests++;
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
  return self;
}

/** Every common prefix below `prefix` (all pages; duplicates some servers repeat across pages removed). */
async function childPrefixes(list: Lister, prefix: string): Promise<string[]> {
  const found = new Set<string>();
  let token: string | undefined;
  do {
    const page = await list.page(prefix, {
      delimiter: '/',
      ...(token === undefined ? {} : { token }),
    });
    for (const p of page.prefixes) found.add(p);
    token = page.next;
  } while (token !== undefined);
  return [...found].sort();
}

/** Cuts `units` (sorted prefixes) into `count` contiguous groups of near-equal size. */
function group<T>(units: readonly T[], count: number): T[][] {
  const groups: T[][] = [];
  const size = Math.ceil(units.length / Math.max(1, count));
  for (let i = 0; i < units.length; i += size) groups.push(units.slice(i, i + size));
  return groups;
}

/** Blob-space boundaries: 2-hex fan-outs, or 3-hex when more than 256 shards are wanted. */
function blobBoundaries(blobsPrefix: string, shards: number): string[] {
  const points: string[] = [];
  for (const a of HEX) {
    for (const b of HEX) {
      if (shards <= 256) points.push(`${blobsPrefix}${a}${b}/`);
      else for (const c of HEX) points.push(`${blobsPrefix}${a}${b}/${a}${b}${c}`);
    }
  }
  return points;
}

/**
 * Plans a registry bucket (the Docker Distribution layout under `root`).
 * `prefix` is the location's prefix in the bucket; the registry root is below it.
 */
export async function planRegistry(
  client: S3Client,
  bucket: string,
  root: string | undefined,
  options: PlanOptions = {},
): Promise<Plan> {
  const target = options.targetObjectsPerShard ?? DEFAULT_TARGET;
  const list = lister(client, bucket, options.fast);
  const base = registryPrefix(root);
  const reposPrefix = `${base}repositories/`;
  const blobsPrefix = `${base}blobs/sha256/`;

  // The three first listings are independent: one round trip, not three.
  const [topUnits, sample, blobSample] = await Promise.all([
    childPrefixes(list, reposPrefix),
    list.page(reposPrefix),
    list.page(blobsPrefix),
  ]);
  // Repositories: whole top-level units (a namespace or a repository), sized by a sample page.
  let units = topUnits;
  const sampledUnits = new Set(sample.keys.map((k) => k.slice(reposPrefix.length).split('/')[0]));
  const linksPerUnit =
    sample.next === undefined
      ? sample.keys.length / Math.max(1, units.length)
      : sample.keys.length / Math.max(1, sampledUnits.size - 1 || 1);
  let estimatedLinks = Math.round(linksPerUnit * units.length);
  let wantedLinkShards = Math.max(1, Math.ceil(estimatedLinks / target));
  if (units.length < wantedLinkShards) {
    // Few, large namespaces: go one level down where a unit is a namespace, not a repository.
    const expanded: string[] = [];
    for (const unit of units) {
      const children = await childPrefixes(list, unit);
      const isRepository = children.some((c) => /\/_(manifests|layers|uploads)\/$/.test(c));
      expanded.push(...(isRepository ? [unit] : children));
    }
    units = expanded.sort();
    wantedLinkShards = Math.min(wantedLinkShards, units.length);
  }
  const linkShards: Shard[] = group(units, wantedLinkShards).map((members, index, all) => {
    const next = all[index + 1]?.[0];
    return {
      id: `links-${String(index).padStart(4, '0')}`,
      kind: 'links',
      prefix: reposPrefix,
      registryPrefix: base,
      ...(index === 0 ? {} : { startAt: members[0] ?? reposPrefix }),
      ...(next === undefined ? {} : { endBefore: next }),
      estimatedObjects: Math.round(linksPerUnit * members.length),
    };
  });
  if (units.length === 0) estimatedLinks = 0;

  // Blobs: estimate the count from how far one page reaches into the fan-outs.
  let estimatedBlobs = blobSample.keys.length;
  if (blobSample.next !== undefined) {
    const last = blobSample.keys[blobSample.keys.length - 1] ?? '';
    const fanout = Number.parseInt(last.slice(blobsPrefix.length, blobsPrefix.length + 2), 16);
    estimatedBlobs = Math.round(
      (blobSample.keys.length * 256) / (Number.isNaN(fanout) ? 256 : fanout + 1),
    );
  }
  const blobShardCount = Math.min(4096, Math.max(1, Math.ceil(estimatedBlobs / target)));
  const boundaries = blobBoundaries(blobsPrefix, blobShardCount);
  const blobGroups = group(boundaries, blobShardCount);
  const dataShards: Shard[] = blobGroups.map((members, index, all) => {
    const next = all[index + 1]?.[0];
    return {
      id: `blobs-${String(index).padStart(4, '0')}`,
      kind: 'blobs',
      prefix: blobsPrefix,
      registryPrefix: base,
      ...(index === 0 ? {} : { startAt: members[0] ?? blobsPrefix }),
      ...(next === undefined ? {} : { endBefore: next }),
      estimatedObjects: Math.round(estimatedBlobs / blobGroups.length),
    };
  });

  // Everything else in the bucket, in the gaps around the two registry trees.
  const gaps: Array<{ startAt?: string; endBefore?: string }> = [
    { endBefore: blobsPrefix },
    { startAt: `${blobsPrefix.slice(0, -1)}0`, endBefore: reposPrefix },
    { startAt: `${reposPrefix.slice(0, -1)}0` },
  ];
  gaps.forEach((gap, index) => {
    dataShards.push({
      id: `other-${index}`,
      kind: 'objects',
      prefix: '',
      registryPrefix: base,
      ...gap,
    });
  });

  return {
    linkShards,
    dataShards,
    requests: list.requests,
    estimatedObjects: estimatedLinks + estimatedBlobs,
  };
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
export async function planGeneric(
  client: S3Client,
  bucket: string,
  prefix: string,
  options: PlanOptions = {},
): Promise<Plan> {
  const target = options.targetObjectsPerShard ?? DEFAULT_TARGET;
  const list = lister(client, bucket, options.fast);
  const limit = new PQueue({ concurrency: options.listConcurrency ?? 16 });
  const segments = await discover(list, prefix, options.discoveryDepth ?? 2, target, limit);
  const shards: Array<{ startAt?: string; count: number }> = [];
  for (const segment of segments) {
    const open = shards.at(-1);
    if (open !== undefined && open.count + segment.count <= target) open.count += segment.count;
    else
      shards.push({
        ...(shards.length === 0 ? {} : { startAt: segment.start }),
        count: segment.count,
      });
  }
  if (shards.length === 0) shards.push({ count: 0 });
  const dataShards: Shard[] = shards.map((shard, index) => {
    const endBefore = shards[index + 1]?.startAt;
    return {
      id: `objects-${String(index).padStart(5, '0')}`,
      kind: 'objects',
      prefix,
      ...(shard.startAt === undefined ? {} : { startAt: shard.startAt }),
      ...(endBefore === undefined ? {} : { endBefore }),
      estimatedObjects: shard.count,
    };
  });
  return {
    linkShards: [],
    dataShards,
    requests: list.requests,
    estimatedObjects: shards.reduce((sum, shard) => sum + shard.count, 0),
  };
}
