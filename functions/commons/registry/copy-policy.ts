/**
 * The registry's copy policy (copy/policy.ts): how a bucket in the Docker
 * Distribution layout is cut into shards and in what order their keys are
 * listed, so that every captured reference points at content captured after
 * it (docs/consistency.md).
 *
 * Shards: link shards are contiguous ranges of whole repositories (a
 * repository is never split, so its three passes stay ordered), blob shards
 * are ranges of the 256 two-hex fan-outs, a fan-out larger than a shard cut
 * at hex points inside it, and whatever else is in the bucket goes in
 * "objects" shards. Link shards are listed before any blob shard. Both are
 * sized from counts: every repository's links and every fan-out's blobs are
 * counted by walking the trees in parallel stripes, a dense fan-out estimated
 * from one page by how far into it the page reached, and past about two
 * million links the repositories are sampled (copy/key-ranges.ts).
 *
 * Passes: a link shard is listed three times, in the reverse of the
 * registry's write order (tags, then revisions, then layer links), the second
 * only once every tag of the first is copied. Unfinished uploads are left out;
 * a blob's key names its digest.
 */
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import {
  COUNT_PAGES,
  countRanges,
  packRuns,
  type RangeTree,
  runRanges,
  type ShardRange,
} from '../copy/key-ranges.ts';
import { type Location, PAGE_SIZE, type Shard, sortKeys } from '../copy/model.ts';
import {
  COPY,
  type CopyPolicy,
  type KeyTreatment,
  type ListedPage,
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
import { otherShards } from './plan-gaps.ts';
import { reuseRegistryPlan } from './plan-reuse.ts';
import { type RepositorySelection, repositoryOfKey, selects } from './selection.ts';

/** The 256 two-hex fan-outs of the blob tree, in order. */
const FAN_OUTS = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Hex digits of a blob's digest read for its position in its fan-out (48 bits: exact in a double). */
const POSITION_DIGITS = 12;

/**
 * The blob tree as one range per fan-out. A blob's key is its sha256, uniform
 * over the hex space, so where a key lies in its fan-out (the digest's digits
 * after the fan-out's two) says how much of the fan-out a listing has passed.
 */
function blobTree(blobsPrefix: string): RangeTree {
  return {
    prefix: blobsPrefix,
    starts: FAN_OUTS.map((fanOut) => `${blobsPrefix}${fanOut}/`),
    position(index, key) {
      const fanOut = FAN_OUTS[index] ?? '';
      const head = `${blobsPrefix}${fanOut}/${fanOut}`;
      const digits = key.slice(head.length, head.length + POSITION_DIGITS);
      if (!key.startsWith(head) || !/^[0-9a-f]+$/.test(digits)) return undefined;
      return (Number.parseInt(digits, 16) + 1) / 16 ** digits.length;
    },
  };
}

/**
 * The blob tree's fan-outs as pieces of at most `target` blobs: a larger
 * fan-out is cut into equal parts of its uniform key space, at hex points
 * (`ab/ab8` halves fan-out `ab`).
 */
function blobPieces(
  blobsPrefix: string,
  counts: Float64Array,
  target: number,
): { starts: string[]; weights: number[] } {
  const starts: string[] = [];
  const weights: number[] = [];
  FAN_OUTS.forEach((fanOut, index) => {
    const count = counts[index] ?? 0;
    const pieces = Math.max(1, Math.ceil(count / target));
    // Enough digits that no two points round together.
    const digits = Math.ceil(Math.log2(pieces) / 4) + 1;
    const scale = 16 ** digits;
    let at = 0;
    for (let piece = 0; piece < pieces; piece++) {
      const end = piece + 1 === pieces ? scale : Math.round(((piece + 1) * scale) / pieces);
      const point = at.toString(16).padStart(digits, '0').replace(/0+$/, '');
      starts.push(`${blobsPrefix}${fanOut}/${piece === 0 ? '' : `${fanOut}${point}`}`);
      weights.push((count * (end - at)) / scale);
      at = end;
    }
  });
  return { starts, weights };
}

/**
 * The delimiter that rolls a repository up into one common prefix: its keys
 * all lie in its reserved directories (`_manifests/`, `_layers/`,
 * `_uploads/`), and no component of a repository name starts with `_`.
 */
const REPOSITORY_DELIMITER = '/_';

/**
 * Where each repository's keys start (`<repositories/><name>/`), sorted: one
 * delimiter listing from `first` on, about one page per 1,000 repositories.
 */
async function repositoryStarts(
  list: Lister,
  reposPrefix: string,
  first: ListedPage,
): Promise<string[]> {
  // Some servers repeat a common prefix across pages.
  const found = new Set<string>();
  for (let page = first; ; ) {
    for (const common of page.prefixes) found.add(common.slice(0, -1));
    if (page.next === undefined) break;
    page = await list.page(reposPrefix, { delimiter: REPOSITORY_DELIMITER, token: page.next });
  }
  return sortKeys([...found]);
}

/** One shard of `kind` below `prefix` per range. */
function shardsOf(
  kind: 'links' | 'blobs',
  prefix: string,
  base: string,
  ranges: readonly ShardRange[],
): Shard[] {
  return ranges.map((range, index) => ({
    id: `${kind}-${String(index).padStart(4, '0')}`,
    kind,
    prefix,
    registryPrefix: base,
    ...range,
  }));
}

/** How a tree is counted: shard target, the LIST requests in flight, the pages a count may take. */
export interface Counting {
  readonly target: number;
  readonly limit: PQueue;
  readonly pages: number;
}

/**
 * Link shards: runs of whole repositories (a repository is never split, so
 * its three passes stay ordered) of about `target` links each, counted by
 * repository (countRanges). None where the tree holds no key.
 */
async function planLinks(
  list: Lister,
  reposPrefix: string,
  base: string,
  firsts: { readonly repositories: ListedPage; readonly links: ListedPage },
  { target, limit, pages }: Counting,
): Promise<Shard[]> {
  if (firsts.links.keys.length === 0) return [];
  const starts = await repositoryStarts(list, reposPrefix, firsts.repositories);
  const tree: RangeTree = {
    prefix: reposPrefix,
    starts: starts.length > 0 ? starts : [reposPrefix],
  };
  const counts = await countRanges(list, tree, firsts.links, limit, pages);
  const runs = packRuns(counts, target);
  return shardsOf(
    'links',
    reposPrefix,
    base,
    runRanges(runs, (item) => tree.starts[item] ?? reposPrefix),
  );
}

/**
 * Blob shards: runs of fan-outs and pieces of fan-outs of about `target`
 * blobs each; at least one. Any layout whose blob keys are
 * `<blobsPrefix><2 hex>/<hex>...` (Distribution's, Quay's) is cut this way.
 */
export async function planBlobs(
  list: Lister,
  blobsPrefix: string,
  base: string,
  first: ListedPage,
  { target, limit, pages }: Counting,
): Promise<Shard[]> {
  const counts = await countRanges(list, blobTree(blobsPrefix), first, limit, pages);
  const pieces = blobPieces(blobsPrefix, counts, target);
  const runs = packRuns(pieces.weights, target);
  return shardsOf(
    'blobs',
    blobsPrefix,
    base,
    runRanges(runs, (item) => pieces.starts[item] ?? blobsPrefix),
  );
}

/**
 * Splits the Docker Distribution layout under the root directory `root`:
 * link and blob shards sized from counts (exact where a tree is walked,
 * estimated where it is sampled: copy/key-ranges.ts), and a shard for each
 * key range around the two trees that holds a key.
 */
async function splitRegistry(list: Lister, root: string, options: SplitOptions): Promise<Split> {
  const counting = countingOf(options);
  const base = registryPrefix(root);
  const reposPrefix = `${base}repositories/`;
  const blobsPrefix = `${base}blobs/sha256/`;

  // The first listings are independent: one round trip. A small registry is counted by them.
  const [repositories, links, blobs, others] = await Promise.all([
    list.page(reposPrefix, { delimiter: REPOSITORY_DELIMITER }),
    list.page(reposPrefix),
    list.page(blobsPrefix),
    otherShards(list, base, [blobsPrefix, reposPrefix]),
  ]);
  const [linkShards, blobShards] = await Promise.all([
    planLinks(list, reposPrefix, base, { repositories, links }, counting),
    planBlobs(list, blobsPrefix, base, blobs, counting),
  ]);
  const dataShards = [...blobShards, ...others];
  const estimatedObjects = [...linkShards, ...dataShards].reduce(
    (sum, shard) => sum + (shard.estimatedObjects ?? 0),
    0,
  );
  return { linkShards, dataShards, estimatedObjects };
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
 * them, listing in order is enough and copies may trail. When the tag pass
 * copied nothing, the revision pass takes its pages again (`relists`).
 */
const LINK_PASSES: readonly RegistryPass[] = [
  { rollUp: rollingUp('/_layers/'), barrier: true, copies: (kind) => kind === KeyKind.Tag },
  {
    rollUp: rollingUp('/_layers/'),
    relists: 0,
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

/** A tag's index entry, `_manifests/tags/<tag>/index/sha256/<digest>/link`. */
const TAG_INDEX_ENTRY = /\/_manifests\/tags\/[^/]+\/index\/sha256\/[0-9a-f]{64}\/link$/;

/** Copied, and the tag pass need not wait for it: the key names what it holds. */
const TRAILS: KeyTreatment = { trails: true };

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
      // A tag's index entry names its manifest: only the current link must be copied before the revisions are listed.
      if (kind === KeyKind.Tag && TAG_INDEX_ENTRY.test(relative)) return TRAILS;
      if (kind !== KeyKind.Blob) return COPY;
      const digest = blobDigestOf(relative);
      return digest === undefined ? COPY : { digest };
    },
  };
}

/** How a tree is counted, from a split's options. */
export const countingOf = (options: SplitOptions): Counting => ({
  target: options.targetObjectsPerShard,
  limit: new PQueue({ concurrency: options.listConcurrency ?? 16 }),
  pages: options.countPages ?? COUNT_PAGES,
});

/** A bucket in the Docker Distribution layout: links before blobs, each link shard in three passes. */
export const registryCopyPolicy: CopyPolicy = {
  split: splitRegistry,
  route: routeOf,
  reuse: reuseRegistryPlan,
};

/** Every key of a listing below `prefix` (or its common prefixes, with a delimiter), page by page. */
async function* listed(list: Lister, prefix: string, delimiter?: string): AsyncGenerator<string> {
  let page = await list.page(prefix, delimiter === undefined ? {} : { delimiter });
  for (;;) {
    yield* delimiter === undefined ? page.keys : page.prefixes;
    if (page.next === undefined) return;
    page = await list.page(prefix, {
      ...(delimiter === undefined ? {} : { delimiter }),
      token: page.next,
    });
  }
}

/**
 * The digests the selected repositories link to (revision and layer links),
 * found by listing their folders in the source: one LIST per 1,000 links.
 * Listed when the first blob shard starts, after every link shard has listed
 * its links, so every captured link's blob is among them.
 */
async function linkedDigests(
  list: Lister,
  base: string,
  selection: RepositorySelection,
): Promise<Set<string>> {
  const reposPrefix = `${base}repositories/`;
  const digests = new Set<string>();
  for await (const common of listed(list, reposPrefix, REPOSITORY_DELIMITER)) {
    // `repositories/<name>/_`: one per repository (some servers repeat one across pages).
    const name = common.slice(reposPrefix.length, -REPOSITORY_DELIMITER.length);
    if (!selects(selection, name)) continue;
    for (const folder of ['_layers/sha256/', '_manifests/revisions/sha256/'])
      for await (const key of listed(list, `${reposPrefix}${name}/${folder}`)) {
        const hex = /\/([0-9a-f]{64})\/link$/.exec(key)?.[1];
        if (hex !== undefined) digests.add(`sha256:${hex}`);
      }
  }
  return digests;
}

/**
 * The registry's policy for a partial backup: the same shards and passes,
 * but a link of a repository the selection does not take is not copied, and
 * a blob is copied only when a selected repository links to it (its digest
 * set is listed once per context, before the first blob shard runs).
 */
export function selectiveRegistryPolicy(selection: RepositorySelection): CopyPolicy {
  let linked: Promise<Set<string>> | undefined;
  let known: Set<string> | undefined;
  return {
    split: splitRegistry,
    reuse: reuseRegistryPlan,
    async prepare(shard, list) {
      if (shard.kind !== 'blobs' || shard.registryPrefix === undefined) return;
      const base = shard.registryPrefix;
      linked ??= linkedDigests(list, base, selection);
      // A listing that failed is not kept: the next run asks again.
      linked.catch(() => {
        linked = undefined;
      });
      known = await linked;
    },
    route(shard) {
      const route = routeOf(shard);
      const base = shard.registryPrefix ?? '';
      return {
        ...route,
        treat(key, pass) {
          const relative = key.startsWith(base) ? key.slice(base.length) : key;
          const repository = repositoryOfKey(relative);
          if (repository !== undefined && !selects(selection, repository)) return undefined;
          const digest = blobDigestOf(relative);
          if (digest !== undefined && known?.has(digest) !== true) return undefined;
          return route.treat(key, pass);
        },
      };
    },
  };
}

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
