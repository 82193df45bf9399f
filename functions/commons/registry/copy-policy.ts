/**
 * The registry's copy policy (copy/policy.ts): how a bucket in the Docker
 * Distribution layout is cut into shards and in what order their keys are
 * listed, so that every captured reference points at content captured after
 * it (docs/consistency.md).
 *
 * Shards: link shards are contiguous ranges of whole repositories (a
 * repository is never split, so its three passes stay ordered), blob shards
 * are ranges of the 256 two-hex fan-outs (split further by the third hex
 * digit for very large registries), and whatever else is in the bucket goes
 * in "objects" shards. Link shards are listed before any blob shard.
 *
 * Passes: a link shard is listed three times, in the reverse of the
 * registry's write order (tags, then revisions, then layer links), the second
 * only once every tag of the first is copied. Unfinished uploads are left out;
 * a blob's key names its digest.
 */
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { keyJustBefore, type Location, PAGE_SIZE, type Shard } from '../copy/model.ts';
import {
  COPY,
  type CopyPolicy,
  type KeyTreatment,
  type Lister,
  type Pass,
  type RollUp,
  type ShardRoute,
  type Split,
  type SplitOptions,
} from '../copy/policy.ts';
import {
  blobDigestOf,
  classifyRegistryKey,
  KeyKind,
  registryPrefix,
  reservedSegmentOf,
  uploadIdOf,
} from './layout.ts';

const HEX = '0123456789abcdef';

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
 * One shard of `kind` per group of sorted boundaries below `prefix`: from the
 * group's first boundary (the first shard from the start) up to the next
 * group's first (the last shard to the end).
 */
function rangeShards(
  kind: 'links' | 'blobs',
  prefix: string,
  base: string,
  groups: readonly string[][],
  estimate: (members: readonly string[]) => number,
): Shard[] {
  return groups.map((members, index) => {
    const next = groups[index + 1]?.[0];
    return {
      id: `${kind}-${String(index).padStart(4, '0')}`,
      kind,
      prefix,
      registryPrefix: base,
      ...(index === 0 ? {} : { startAt: members[0] ?? prefix }),
      ...(next === undefined ? {} : { endBefore: next }),
      estimatedObjects: estimate(members),
    };
  });
}

/** A key range outside the registry's trees: from `startAt` (inclusive) to `endBefore`. */
interface Gap {
  readonly startAt?: string;
  readonly endBefore?: string;
}

/** Whether a gap holds any key: the first key of one listing page from its start. */
async function gapHoldsKeys(list: Lister, gap: Gap): Promise<boolean> {
  const page = await list.page(
    '',
    gap.startAt === undefined ? {} : { startAfter: keyJustBefore(gap.startAt) },
  );
  const first = page.keys[0];
  return first !== undefined && (gap.endBefore === undefined || first < gap.endBefore);
}

/** Splits the Docker Distribution layout under the root directory `root`. */
async function splitRegistry(list: Lister, root: string, options: SplitOptions): Promise<Split> {
  const target = options.targetObjectsPerShard;
  const base = registryPrefix(root);
  const reposPrefix = `${base}repositories/`;
  const blobsPrefix = `${base}blobs/sha256/`;

  // Everything else in the bucket lies in the gaps around the two registry trees.
  const gaps: Gap[] = [
    { endBefore: blobsPrefix },
    { startAt: `${blobsPrefix.slice(0, -1)}0`, endBefore: reposPrefix },
    { startAt: `${reposPrefix.slice(0, -1)}0` },
  ];
  // The first listings are independent: one round trip, not six.
  const [topUnits, sample, blobSample, ...gapHolds] = await Promise.all([
    childPrefixes(list, reposPrefix),
    list.page(reposPrefix),
    list.page(blobsPrefix),
    ...gaps.map((gap) => gapHoldsKeys(list, gap)),
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
  const linkShards = rangeShards(
    'links',
    reposPrefix,
    base,
    group(units, wantedLinkShards),
    (members) => Math.round(linksPerUnit * members.length),
  );
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
  const dataShards = rangeShards('blobs', blobsPrefix, base, blobGroups, () =>
    Math.round(estimatedBlobs / blobGroups.length),
  );

  // A shard for each gap that held a key when planned (a registry writes only
  // inside its two trees, so usually none): an empty gap's shard would cost
  // its LIST and run files on every backup for nothing.
  gaps.forEach((gap, index) => {
    if (gapHolds[index] !== true) return;
    dataShards.push({
      id: `other-${index}`,
      kind: 'objects',
      prefix: '',
      registryPrefix: base,
      ...gap,
    });
  });

  return { linkShards, dataShards, estimatedObjects: estimatedLinks + estimatedBlobs };
}

/**
 * Whether a common prefix is the directory a link pass's delimiter is meant
 * to roll up: `<prefix><repository name><delimiter>`, where no name component
 * starts with `_`. Anything else (the delimiter inside another reserved
 * directory) may hold keys the pass copies, so it is listed without the delimiter.
 */
function isRolledUpDirectory(common: string, prefix: string, delimiter: string): boolean {
  const name = common.slice(prefix.length, common.length - delimiter.length);
  return name !== '' && !name.startsWith('_') && !name.includes('/_');
}

/** A link pass that rolls up one of a repository's reserved directories. */
function rollingUp(delimiter: string): RollUp {
  return {
    delimiter,
    covers: (common, prefix) => isRolledUpDirectory(common, prefix, delimiter),
  };
}

/** A pass of a registry shard, with which keys (below the registry prefix) it copies. */
interface RegistryPass extends Pass {
  copies(kind: KeyKind, relativeKey: string): boolean;
}

const underManifests = (relativeKey: string) =>
  reservedSegmentOf(relativeKey)?.segment === '_manifests';

/**
 * A link shard's passes: tags, then revisions, then layer links. Tags and
 * revisions live in `_manifests/`, layer links in `_layers/`, and the two
 * passes that need only one of the directories roll the other one up, so each
 * link is listed about twice, not three times (in the benchmark's registry,
 * 19,000 listed entries instead of 36,000). Other keys go with the directory
 * they are in. Tag links change when an image is re-tagged, so the revisions
 * are listed only after every tag link is copied (a re-pointed tag is copied
 * with its new value, whose revision the next listing then finds); revision
 * and layer links never change (their content is their own digest): for
 * them, listing in order is enough and copies may trail.
 */
const LINK_PASSES: readonly RegistryPass[] = [
  { rollUp: rollingUp('/_layers/'), barrier: true, copies: (kind) => kind === KeyKind.Tag },
  {
    rollUp: rollingUp('/_layers/'),
    copies: (kind, key) =>
      kind === KeyKind.Revision || (kind === KeyKind.Other && underManifests(key)),
  },
  {
    rollUp: rollingUp('/_manifests/'),
    copies: (kind, key) =>
      kind === KeyKind.Layer ||
      kind === KeyKind.Blob ||
      (kind === KeyKind.Other && !underManifests(key)),
  },
];

const ONE_PASS: readonly RegistryPass[] = [{ copies: () => true }];

/**
 * Link copies a link shard may have queued before it lists its next page
 * (about 5 MB of entries), so that every link is listed, and blob listing can
 * start, while link copies still run. At a deadline they are finished before
 * the run hands on: small files, an estimated 10 s at 32 in flight on S3
 * (30 ms a copy, not measured there), inside the 90 s a copy worker keeps
 * back (functions/copy-worker.ts).
 */
export const LINK_LOOKAHEAD = 10 * PAGE_SIZE;

/** How a shard of a registry plan is listed, and what each of its keys is. */
function routeOf(shard: Shard): ShardRoute {
  const base = shard.registryPrefix;
  const passes = shard.kind === 'links' ? LINK_PASSES : ONE_PASS;
  return {
    passes,
    ...(shard.kind === 'links' ? { lookahead: LINK_LOOKAHEAD } : {}),
    treat(key: string, pass: number): KeyTreatment | undefined {
      const relative = base !== undefined && key.startsWith(base) ? key.slice(base.length) : key;
      const kind = base === undefined ? KeyKind.Other : classifyRegistryKey(relative);
      if (kind === KeyKind.Upload) {
        // Counted once, in the first pass, though every pass lists it.
        if (pass !== 0) return undefined;
        const uploadId = uploadIdOf(relative);
        return { leaveOut: true, ...(uploadId === undefined ? {} : { uploadId }) };
      }
      if (passes[pass]?.copies(kind, relative) === false) return undefined;
      if (kind !== KeyKind.Blob) return COPY;
      const digest = blobDigestOf(relative);
      return digest === undefined ? COPY : { digest };
    },
  };
}

/** A bucket in the Docker Distribution layout: links before blobs, each link shard in three passes. */
export const registryCopyPolicy: CopyPolicy = { split: splitRegistry, route: routeOf };

/** True when the location holds a Docker Distribution layout under `root`. */
export async function looksLikeRegistry(
  client: S3Client,
  location: Location,
  root?: string,
): Promise<boolean> {
  const response = await client.send(
    new ListObjectsV2Command({
      Bucket: location.bucket,
      Prefix: `${location.prefix}${registryPrefix(root)}`,
      MaxKeys: 1,
    }),
  );
  return (response.KeyCount ?? 0) > 0;
}
