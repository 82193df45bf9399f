/**
 * fsck of a Docker Distribution storage layout: does every reference the
 * registry follows lead somewhere, and (deep mode) does every blob hold the
 * bytes its digest names? It works on relative keys (`blobs/...`,
 * `repositories/...`) through a small source interface, so the same check
 * runs on a live bucket and on a snapshot in the vault. See docs/integrity.md.
 */
import { createHash } from 'node:crypto';
import {
  addTo,
  indexLayout,
  type Layout,
  layerKey,
  ManifestGraph,
  revisionKey,
  SHA256_DIGEST,
} from './fsck-layout.ts';
import {
  type Corruption,
  type DanglingReference,
  type FsckReport,
  fsckReport,
} from './fsck-report.ts';
import { type RegistrySource, sha256Of, type UnbackedObject } from './fsck-sources.ts';
import { blobDigestOf, blobKeyOf } from './layout.ts';
import { type Descriptor, isForeignLayer, type ParsedManifest, parseManifest } from './manifest.ts';

export interface FsckOptions {
  /** Hash blobs and compare with their digests (and read every link). Off by default. */
  readonly deep?: boolean;
  /** In deep mode, hash only this many blobs, picked at random; all when omitted. */
  readonly sample?: number;
  /** Reads in flight at once (default 16). */
  readonly concurrency?: number;
  /** Picks the deep sample (tests pass a deterministic one); default: uniform at random. */
  readonly pick?: (digests: readonly string[], count: number) => string[];
  /** Deep mode skips hashing these blobs: their content was already checked against the digest (e.g. by the server's SHA-256 of the copy). */
  readonly alreadyHashed?: (digest: string) => boolean;
  /** Called as blobs are hashed, for progress: blobs and bytes done of the total. */
  readonly onHash?: (
    done: { blobs: number; bytes: number },
    total: { blobs: number; bytes: number },
  ) => void;
}

export type { DanglingReference, FsckReport } from './fsck-report.ts';

/** Runs `fn` over `items` with at most `limit` calls in flight. */
async function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++];
      if (item !== undefined) await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

/** `count` items picked uniformly at random (a partial Fisher-Yates shuffle). */
export function randomSample<T>(items: readonly T[], count: number): T[] {
  const pool = [...items];
  const take = Math.max(0, Math.min(count, pool.length));
  for (let i = 0; i < take; i++) {
    const j = i + Math.floor(Math.random() * (pool.length - i));
    const a = pool[i];
    const b = pool[j];
    if (a === undefined || b === undefined) continue;
    pool[i] = b;
    pool[j] = a;
  }
  return pool.slice(0, take);
}

/** What the steps of one check share: the source, the layout, and what they find. */
interface FsckRun {
  readonly source: RegistrySource;
  readonly options: FsckOptions;
  readonly concurrency: number;
  /** How problems name the store. */
  readonly label: string;
  readonly layout: Layout;
  /** Reads an object of the source, counted in `reads`. */
  readonly read: (key: string) => Promise<Buffer | undefined>;
  reads: number;
  readonly dangling: DanglingReference[];
  readonly invalidManifests: FsckReport['invalidManifests'];
  /** Blobs something refers to, by digest id: the rest are orphans. */
  readonly referenced: Set<number>;
  readonly graph: ManifestGraph;
  readonly tagDigests: FsckReport['tagDigests'];
  readonly corrupt: Map<string, Corruption>;
}

/**
 * A manifest to check in a repository (its digest's id), and what refers to
 * it, for messages: its revision link when `from` is not given.
 */
interface ManifestToCheck {
  readonly repository: string;
  readonly id: number;
  readonly from?: string;
}

/** Counts `digest` as referred to, if the layout has a blob of it (only those can be orphans). */
function refer(run: FsckRun, digest: string): void {
  const id = run.layout.digests.find(digest);
  if (id !== undefined) run.referenced.add(id);
}

/**
 * Checks a registry layout. Fast mode reads tag links and manifest blobs only
 * (never a layer) and, for a source that can list its store (a snapshot),
 * proves every object it promises is there at its size; deep mode also hashes
 * blobs (all, or `sample` of them) and proves every revision and layer link:
 * by the store's ETag where its listing gives one that matches, else by a read.
 */
export async function fsckRegistry(
  source: RegistrySource,
  options: FsckOptions = {},
): Promise<FsckReport> {
  const listed = await readLayout(source, options.deep === true);
  const run = startRun(source, options, listed.layout);
  const roots = await checkTags(run);
  const manifests = await checkManifests(run, roots);
  checkSizes(run, listed.unbacked);
  const deep =
    options.deep === true
      ? await checkDeep(run)
      : { badLinks: [], blobsVerified: 0, linksProvenByEtag: 0 };
  // 6. The report: who each problem breaks, and where it lives.
  return fsckReport({
    ...run,
    locate: (key) => source.locate?.(key) ?? key,
    deep: options.deep === true,
    objects: listed.objects,
    absent: listed.absent,
    manifests,
    ...deep,
  });
}

/** 1. The layout from the listing alone; objects the store lacks are left out of it. */
async function readLayout(
  source: RegistrySource,
  deep: boolean,
): Promise<{
  objects: number;
  unbacked: readonly UnbackedObject[];
  absent: Set<string>;
  layout: Layout;
}> {
  const unbacked = (await source.unbacked?.()) ?? [];
  const absent = new Set(unbacked.filter((u) => u.actualSize === undefined).map((u) => u.key));
  const listing = source.list();
  // Only deep mode reads links: a fast check keeps no list of them.
  const { layout, objects } = await indexLayout(
    Symbol.asyncIterator in listing ? listing : await listing,
    absent,
    { keepLinksToRead: deep },
  );
  return { objects, unbacked, absent, layout };
}

function startRun(source: RegistrySource, options: FsckOptions, layout: Layout): FsckRun {
  const run: FsckRun = {
    source,
    options,
    concurrency: options.concurrency ?? 16,
    label: source.label ?? 'the bucket',
    layout,
    read: async (key) => {
      run.reads++;
      return source.read(key);
    },
    reads: 0,
    dangling: [],
    invalidManifests: [],
    referenced: new Set<number>(),
    graph: new ManifestGraph(layout.digests),
    tagDigests: [],
    corrupt: new Map<string, Corruption>(),
  };
  return run;
}

/**
 * 2. Tags: each current link names a digest with a revision link and a
 * manifest blob. Returns the manifests to check: every revision's, and every
 * tag's (a manifest only a tag names, its revision link missing, is reported
 * as the tag's).
 */
async function checkTags(run: FsckRun): Promise<ManifestToCheck[]> {
  const { layout, dangling } = run;
  const toCheck = new Map<string, Set<number>>();
  /** `repo@digest id` -> `repo:tag`, to name a tag as the referrer when its revision link is missing. */
  const tagged = new Map<string, string>();
  for (const [repository, id] of layout.revisions.entries()) addTo(toCheck, repository, id);
  await forEachLimit(layout.tags, run.concurrency, async ({ repository, tag, key }) => {
    const body = (await run.read(key))?.toString('utf8').trim();
    const from = `${repository}:${tag}`;
    if (body === undefined) {
      dangling.push({ from, to: key, reason: 'the tag link vanished while checking' });
      return;
    }
    if (!SHA256_DIGEST.test(body)) {
      dangling.push({
        from,
        to: key,
        reason: `the tag link holds ${JSON.stringify(body.slice(0, 80))}, not a sha256 digest`,
      });
      return;
    }
    refer(run, body);
    run.tagDigests.push({ repository, tag, digest: body });
    run.graph.tag(repository, body, tag);
    const id = layout.digests.id(body);
    if (!layout.revisions.has(repository, body)) {
      dangling.push({
        from,
        to: revisionKey(repository, body),
        reason: 'tag without its revision link',
      });
      tagged.set(`${repository}@${id}`, from);
    }
    addTo(toCheck, repository, id);
  });
  const roots: ManifestToCheck[] = [];
  for (const [repository, ids] of toCheck) {
    for (const id of ids) {
      const from = tagged.get(`${repository}@${id}`);
      roots.push({ repository, id, ...(from === undefined ? {} : { from }) });
    }
  }
  return roots;
}

/**
 * 3. Manifests: each one hashes to its digest and parses, and what it names
 * exists as a blob and as a link in its repository; child manifests are
 * checked in turn. Returns how many manifest blobs were read.
 */
async function checkManifests(run: FsckRun, roots: ManifestToCheck[]): Promise<number> {
  // Manifests shared between repositories are read once while they stay in
  // the cache; it keeps the last PARSED_KEPT, so a million-object registry's
  // hundred thousand manifests are not all held at once.
  const parsed = new Map<string, Promise<ParsedManifest | undefined>>();
  let read = 0;
  const parse = (digest: string): Promise<ParsedManifest | undefined> => {
    let pending = parsed.get(digest);
    if (pending === undefined) {
      read++;
      if (parsed.size >= PARSED_KEPT) parsed.delete(parsed.keys().next().value ?? '');
      pending = run.read(blobKeyOf(digest)).then((body) => {
        if (body === undefined) return undefined;
        // Read in full anyway: hashing it costs no request.
        const actual = `sha256:${createHash('sha256').update(body).digest('hex')}`;
        if (actual !== digest) run.corrupt.set(digest, { actual, size: body.length });
        return parseManifest(body);
      });
      parsed.set(digest, pending);
    }
    return pending;
  };
  const visited = new Map<string, Set<number>>();
  const invalid = new Set<string>();
  let queue = roots;
  while (queue.length > 0) {
    const batch = queue.filter((item) => {
      const seen = visited.get(item.repository) ?? new Set<number>();
      visited.set(item.repository, seen);
      if (seen.has(item.id)) return false;
      seen.add(item.id);
      return true;
    });
    queue = [];
    await forEachLimit(batch, run.concurrency, async (item) => {
      queue.push(...(await checkManifest(run, item, parse, invalid)));
    });
  }
  return read;
}

/** Parsed manifests kept for other repositories that name them. */
const PARSED_KEPT = 4_096;

const missingBlob = (
  label: string,
  from: string,
  digest: string,
  what: string,
): DanglingReference => ({
  from,
  to: blobKeyOf(digest),
  reason: `${what} missing in ${label}`,
  digest,
});

/** One manifest and what it names; returns its child manifests, to check next. */
async function checkManifest(
  run: FsckRun,
  item: ManifestToCheck,
  parse: (digest: string) => Promise<ParsedManifest | undefined>,
  invalid: Set<string>,
): Promise<ManifestToCheck[]> {
  const { dangling, label } = run;
  const { repository } = item;
  const digest = run.layout.digests.digest(item.id);
  const from = item.from ?? revisionKey(repository, digest);
  run.referenced.add(item.id);
  if (!run.layout.blobs.has(digest)) {
    dangling.push(missingBlob(label, from, digest, 'manifest blob'));
    return [];
  }
  const result = await parse(digest);
  if (result === undefined) {
    dangling.push({
      from,
      to: blobKeyOf(digest),
      reason: 'manifest blob vanished while checking',
      digest,
    });
    return [];
  }
  if (!result.ok) {
    if (!invalid.has(digest)) {
      invalid.add(digest);
      run.invalidManifests.push({ digest, reason: result.reason });
    }
    return [];
  }
  run.graph.record(repository, digest, result.refs);
  const manifestName = `${repository}@${digest}`;
  checkBlobRefs(run, repository, manifestName, result.refs.blobs);
  return checkChildRefs(run, repository, manifestName, result.refs.children);
}

/** A manifest's config and layers: each a blob of the layout, linked in its repository. */
function checkBlobRefs(
  run: FsckRun,
  repository: string,
  manifestName: string,
  refs: readonly Descriptor[],
): void {
  const { dangling, label, layout } = run;
  for (const blob of refs) {
    if (!SHA256_DIGEST.test(blob.digest)) {
      dangling.push({ from: manifestName, to: blob.digest, reason: 'not a sha256 digest' });
      continue;
    }
    refer(run, blob.digest);
    if (isForeignLayer(blob)) continue;
    if (!layout.blobs.has(blob.digest))
      dangling.push(missingBlob(label, manifestName, blob.digest, 'blob'));
    if (!layout.layerLinks.has(repository, blob.digest)) {
      dangling.push({
        from: manifestName,
        to: layerKey(repository, blob.digest),
        reason: `layer link missing in ${label}`,
      });
    }
  }
}

/** An index's child manifests: each with a revision link in its repository; returns them to check. */
function checkChildRefs(
  run: FsckRun,
  repository: string,
  manifestName: string,
  refs: readonly Descriptor[],
): ManifestToCheck[] {
  const children: ManifestToCheck[] = [];
  for (const child of refs) {
    if (!SHA256_DIGEST.test(child.digest)) {
      run.dangling.push({ from: manifestName, to: child.digest, reason: 'not a sha256 digest' });
      continue;
    }
    if (!run.layout.revisions.has(repository, child.digest)) {
      run.dangling.push({
        from: manifestName,
        to: revisionKey(repository, child.digest),
        reason: `child manifest's revision link missing in ${run.label}`,
      });
    }
    children.push({ repository, id: run.layout.digests.id(child.digest), from: manifestName });
  }
  return children;
}

/** 4. Sizes the store holds against the ones the source promised (no read). */
function checkSizes(run: FsckRun, unbacked: readonly UnbackedObject[]): void {
  for (const object of unbacked) {
    const digest = blobDigestOf(object.key);
    if (object.actualSize === undefined || digest === undefined) continue;
    run.corrupt.set(digest, {
      actual: `${object.actualSize} bytes where ${object.expectedSize} were recorded`,
      size: object.actualSize,
    });
  }
}

/** 5. Deep: blobs hash to their digests; links hold the digest their key names. */
async function checkDeep(run: FsckRun): Promise<{
  badLinks: FsckReport['badLinks'];
  blobsVerified: number;
  linksProvenByEtag: number;
}> {
  const blobsVerified = await hashBlobs(run);
  const badLinks: FsckReport['badLinks'] = [];
  // A link holds exactly its digest: links whose listed ETag is the MD5 of it
  // were proven as the listing was indexed; the others are read.
  await forEachLimit(run.layout.linksToRead, run.concurrency, async ({ key, digest }) => {
    const body = (await run.read(key))?.toString('utf8').trim();
    if (body !== undefined && body !== digest) badLinks.push({ key, found: body.slice(0, 80) });
  });
  return { badLinks, blobsVerified, linksProvenByEtag: run.layout.linksProvenByEtag };
}

/** Hashes every blob (or the sample) not already found corrupt or hashed; returns how many were. */
async function hashBlobs(run: FsckRun): Promise<number> {
  const { options, corrupt } = run;
  const { blobs, digests } = run.layout;
  const all = [...blobs.ids()]
    .map((id) => digests.digest(id))
    .filter((d) => !corrupt.has(d) && !options.alreadyHashed?.(d));
  all.sort();
  const chosen =
    options.sample === undefined || options.sample >= all.length
      ? all
      : (options.pick ?? randomSample)(all, options.sample);
  const total = {
    blobs: chosen.length,
    bytes: chosen.reduce((sum, digest) => sum + (blobs.get(digest) ?? 0), 0),
  };
  const done = { blobs: 0, bytes: 0 };
  let verified = 0;
  options.onHash?.(done, total);
  await forEachLimit(chosen, run.concurrency, async (digest) => {
    run.reads++;
    const actual = await sha256Of(run.source, blobKeyOf(digest));
    done.blobs++;
    done.bytes += blobs.get(digest) ?? 0;
    options.onHash?.(done, total);
    if (actual === undefined) return; // deleted since the listing (a registry GC): nothing left to be corrupt
    verified++;
    if (actual !== digest) corrupt.set(digest, { actual, size: blobs.get(digest) ?? 0 });
  });
  return verified;
}
