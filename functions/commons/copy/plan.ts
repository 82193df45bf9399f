/**
 * Planning a copy into bounded shards with a handful of LIST requests.
 *
 * Registry buckets (Docker Distribution layout): link shards are contiguous
 * ranges of whole repositories (a repository is never split, so its three
 * phases stay ordered), blob shards are ranges of the 256 two-hex fan-outs
 * (split further by the third hex digit for very large registries), and
 * whatever else is in the bucket goes in "objects" shards.
 *
 * Any bucket: top-level prefixes are found by delimiter listings, and each is
 * walked and cut into key ranges of at most `targetObjectsPerShard` keys.
 */
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { registryPrefix } from '../registry/layout.ts';
import { PAGE_SIZE, type Shard } from './model.ts';

export interface PlanOptions {
  /** Objects a shard should hold at most (an estimate for registry shards). */
  readonly targetObjectsPerShard?: number;
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

function lister(client: S3Client, bucket: string): Lister {
  const self: Lister = {
    requests: 0,
    async page(prefix, options = {}) {
      const response = await client.send(
        new ListObjectsV2Command({
          Bucket: bucket,
          Prefix: prefix,
          MaxKeys: PAGE_SIZE,
          ...(options.delimiter === undefined ? {} : { Delimiter: options.delimiter }),
          ...(options.token === undefined ? {} : { ContinuationToken: options.token }),
          ...(options.startAfter === undefined ? {} : { StartAfter: options.startAfter }),
        }),
      );
      self.requests++;
      return {
        keys: (response.Contents ?? []).map((c) => c.Key ?? ''),
        prefixes: (response.CommonPrefixes ?? []).map((p) => p.Prefix ?? ''),
        next: response.IsTruncated === true ? response.NextContinuationToken : undefined,
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
  const list = lister(client, bucket);
  const base = registryPrefix(root);
  const reposPrefix = `${base}repositories/`;
  const blobsPrefix = `${base}blobs/sha256/`;

  // Repositories: whole top-level units (a namespace or a repository), sized by a sample page.
  let units = await childPrefixes(list, reposPrefix);
  const sample = await list.page(reposPrefix);
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
  const blobSample = await list.page(blobsPrefix);
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

/**
 * Plans any bucket below `prefix`: one flat walk of the keys, cut into
 * contiguous ranges of at most `targetObjectsPerShard` keys, so no shard is
 * unbounded and no key falls between two shards. Planning costs one LIST per
 * 1,000 keys; the walk also yields the exact object count.
 */
export async function planGeneric(
  client: S3Client,
  bucket: string,
  prefix: string,
  options: PlanOptions = {},
): Promise<Plan> {
  const target = options.targetObjectsPerShard ?? DEFAULT_TARGET;
  const list = lister(client, bucket);
  const starts: Array<string | undefined> = [undefined];
  let count = 0;
  let total = 0;
  let token: string | undefined;
  do {
    const page = await list.page(prefix, token === undefined ? {} : { token });
    for (const key of page.keys) {
      if (count === target) {
        starts.push(key);
        count = 0;
      }
      count++;
      total++;
    }
    token = page.next;
  } while (token !== undefined);
  const shards: Shard[] = starts.map((startAt, index) => {
    const endBefore = starts[index + 1];
    const isLast = index === starts.length - 1;
    return {
      id: `objects-${String(index).padStart(5, '0')}`,
      kind: 'objects',
      prefix,
      ...(startAt === undefined ? {} : { startAt }),
      ...(endBefore === undefined ? {} : { endBefore }),
      estimatedObjects: isLast ? count : target,
    };
  });
  return { linkShards: [], dataShards: shards, requests: list.requests, estimatedObjects: total };
}
