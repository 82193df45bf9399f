/**
 * fsck of a Docker Distribution storage layout: does every reference the
 * registry follows lead somewhere, and (deep mode) does every blob hold the
 * bytes its digest names? It works on relative keys (`blobs/...`,
 * `repositories/...`) through a small source interface, so the same check
 * runs on a live bucket and on a snapshot in the vault. See docs/integrity.md.
 */
import { createHash } from 'node:crypto';
import {
  GetObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { z } from 'zod';
import type { InventoryRecord } from '../copy/model.ts';
import { issueLines, messageOf, VaultError } from '../errors.ts';
import type { SnapshotManifest } from '../vault/format.ts';
import { listKeys, readInventory, type Vault } from '../vault/store.ts';
import {
  blobDigestOf,
  blobKeyOf,
  classifyRegistryKey,
  KeyKind,
  normaliseRoot,
  REGISTRY_V2,
  uploadIdOf,
} from './layout.ts';

/** One object of a registry layout, its key relative to `docker/registry/v2/`. */
export interface RegistryObject {
  readonly key: string;
  readonly size: number;
}

/** An object a source promises (a snapshot's inventory lists it) that its store lacks or holds at another size. */
export interface UnbackedObject {
  readonly key: string;
  readonly expectedSize: number;
  /** The size the store holds; undefined when the object is missing. */
  readonly actualSize?: number;
}

/** Where fsck reads a registry layout from: a bucket, a snapshot, anything keyed alike. */
export interface RegistrySource {
  /** How problems name the store: "the vault", "the target", "the bucket" (default). */
  readonly label?: string;
  /** Every object, keys relative to the registry prefix (`blobs/...`, `repositories/...`). */
  list(): AsyncIterable<RegistryObject> | Promise<readonly RegistryObject[]>;
  /** Where a key lives in the store (its full key), for messages. */
  locate?(key: string): string;
  /**
   * Objects `list` promised that the store lacks or holds at another size,
   * found by listing the store (no read). Missing ones are left out of the
   * layout; ones of another size are corrupt.
   */
  unbacked?(): Promise<readonly UnbackedObject[]>;
  /** An object's bytes, or undefined when it does not exist. */
  read(key: string): Promise<Buffer | undefined>;
  /** An object's bytes as a stream, so deep mode hashes large layers without holding them; falls back to `read`. */
  open?(key: string): Promise<AsyncIterable<Uint8Array> | undefined>;
}

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

/** A reference the registry would follow that leads nowhere. */
export interface DanglingReference {
  /** What refers: `repo:tag`, `repo@sha256:...` (a manifest) or a link key. */
  readonly from: string;
  /** What it refers to: a key that is missing or unusable. */
  readonly to: string;
  readonly reason: string;
  /** The blob it names, when it names one. */
  readonly digest?: string;
  /** The `repo:tag`s whose pull needs that blob. */
  readonly usedBy?: string[];
}

export interface FsckReport {
  /** No dangling reference, unreadable manifest, corrupt blob or bad link. Orphans and uploads do not fail it. */
  readonly ok: boolean;
  readonly mode: 'fast' | 'deep';
  readonly counts: {
    readonly objects: number;
    readonly bytes: number;
    readonly blobs: number;
    readonly repositories: number;
    readonly tags: number;
    readonly revisions: number;
    readonly layerLinks: number;
    /** Manifest blobs read and parsed. */
    readonly manifests: number;
    /** Blobs hashed (deep mode). */
    readonly blobsVerified: number;
    /** Objects read in all. */
    readonly reads: number;
  };
  readonly dangling: DanglingReference[];
  /** Objects the source promised that its store lacks (a snapshot's inventory against the vault). */
  readonly missingObjects: Array<{ key: string; location: string; usedBy: string[] }>;
  /** Manifests (by digest) that are not a JSON object. */
  readonly invalidManifests: Array<{ digest: string; reason: string }>;
  /**
   * Blobs whose content does not hash to their digest (deep mode; manifests in
   * every mode, as they are read anyway) or whose size differs from the one
   * the source promised (every mode).
   */
  readonly corruptBlobs: Array<{
    digest: string;
    actual: string;
    size: number;
    location: string;
    usedBy: string[];
  }>;
  /** Tag -> manifest digest, as the tag links hold them. */
  readonly tagDigests: Array<{ repository: string; tag: string; digest: string }>;
  /** Revision and layer links whose content is not the digest in their key (deep mode). */
  readonly badLinks: Array<{ key: string; found: string }>;
  /** Blobs no manifest, revision link or tag refers to (a registry GC would remove them). */
  readonly orphanBlobs: string[];
  /** Unfinished pushes left in `_uploads/`. */
  readonly uploads: Array<{ repository: string; id: string; objects: number; bytes: number }>;
  /** One line per failure, at most `PROBLEM_LINES` (the rest counted on the last line). */
  readonly problems: string[];
  /** Orphans and leftover uploads: worth knowing, not a failure. */
  readonly notices: string[];
}

/** Lines of `problems` and `notices` before the rest is summarised. */
export const PROBLEM_LINES = 20;

const TAG_CURRENT = /^repositories\/(.+)\/_manifests\/tags\/([^/]+)\/current\/link$/;
const REVISION_LINK = /^repositories\/(.+)\/_manifests\/revisions\/sha256\/([0-9a-f]{64})\/link$/;
const LAYER_LINK = /^repositories\/(.+)\/_layers\/sha256\/([0-9a-f]{64})\/link$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

/**
 * Media types of layers the registry never stores (Windows base layers fetched
 * from `urls`): a manifest may name them without the blob existing.
 */
const FOREIGN_LAYER = /foreign|nondistributable/;

interface Descriptor {
  readonly digest: string;
  readonly mediaType?: string;
  readonly hasUrls: boolean;
}

/** What a manifest refers to: blobs (config and layers) and child manifests (an index). */
interface ManifestRefs {
  readonly blobs: Descriptor[];
  readonly children: Descriptor[];
}

type Parsed =
  | { readonly ok: true; readonly refs: ManifestRefs }
  | { readonly ok: false; readonly reason: string };

const descriptorSchema = z.looseObject({
  digest: z.string().optional(),
  /** Schema 1 names its layers by `blobSum`. */
  blobSum: z.string().optional(),
  mediaType: z.string().optional(),
  urls: z.array(z.string()).optional(),
});
const descriptorsSchema = z.array(descriptorSchema).optional();

/** The parts of any manifest format the registry stores that name other content. */
const manifestSchema = z.looseObject({
  config: descriptorSchema.optional(),
  layers: descriptorsSchema,
  fsLayers: descriptorsSchema,
  blobs: descriptorsSchema,
  manifests: descriptorsSchema,
});

function descriptorsOf(
  items: ReadonlyArray<z.infer<typeof descriptorSchema>> | undefined,
): Descriptor[] {
  const descriptors: Descriptor[] = [];
  for (const item of items ?? []) {
    const digest = item.digest ?? item.blobSum;
    if (digest === undefined) continue;
    descriptors.push({
      digest,
      ...(item.mediaType === undefined ? {} : { mediaType: item.mediaType }),
      hasUrls: (item.urls ?? []).length > 0,
    });
  }
  return descriptors;
}

/**
 * References of any manifest format the registry stores: OCI and Docker v2
 * image manifests (config, layers), OCI indexes and Docker manifest lists
 * (manifests), schema 1 (fsLayers) and OCI artifact manifests (blobs).
 * `subject` is left out: a referrer may name a manifest that was never pushed.
 */
export function parseManifest(bytes: Buffer): Parsed {
  let document: unknown;
  try {
    document = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    return { ok: false, reason: `not JSON (${messageOf(err)})` };
  }
  const parsed = manifestSchema.safeParse(document);
  if (!parsed.success) {
    return {
      ok: false,
      reason: `not a manifest: ${issueLines(parsed.error, '(document)').join('; ')}`,
    };
  }
  const manifest = parsed.data;
  return {
    ok: true,
    refs: {
      blobs: descriptorsOf([
        ...(manifest.config === undefined ? [] : [manifest.config]),
        ...(manifest.layers ?? []),
        ...(manifest.fsLayers ?? []),
        ...(manifest.blobs ?? []),
      ]),
      children: descriptorsOf(manifest.manifests),
    },
  };
}

const hexOf = (digest: string) => digest.replace(/^sha256:/, '');
const revisionKey = (repository: string, digest: string) =>
  `repositories/${repository}/_manifests/revisions/sha256/${hexOf(digest)}/link`;
const layerKey = (repository: string, digest: string) =>
  `repositories/${repository}/_layers/sha256/${hexOf(digest)}/link`;

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

/** Summarises a long list into at most `limit` lines. */
function capped(lines: readonly string[], limit = PROBLEM_LINES): string[] {
  if (lines.length <= limit) return [...lines];
  return [...lines.slice(0, limit - 1), `... and ${lines.length - limit + 1} more`];
}

async function collect(
  listing: AsyncIterable<RegistryObject> | Promise<readonly RegistryObject[]>,
): Promise<RegistryObject[]> {
  if (Symbol.asyncIterator in listing) {
    const objects: RegistryObject[] = [];
    for await (const object of listing) objects.push(object);
    return objects;
  }
  return [...(await listing)];
}

async function sha256Of(source: RegistrySource, key: string): Promise<string | undefined> {
  const hash = createHash('sha256');
  if (source.open !== undefined) {
    const stream = await source.open(key);
    if (stream === undefined) return undefined;
    for await (const chunk of stream) hash.update(chunk);
  } else {
    const bytes = await source.read(key);
    if (bytes === undefined) return undefined;
    hash.update(bytes);
  }
  return `sha256:${hash.digest('hex')}`;
}

/** The layout as the listing shows it: every object classified, nothing read. */
interface Layout {
  readonly keys: Set<string>;
  readonly blobs: Map<string, number>;
  readonly tags: Array<{ repository: string; tag: string; key: string }>;
  readonly revisions: Map<string, Set<string>>;
  readonly layerLinks: Map<string, Set<string>>;
  readonly linkKeys: Array<{ key: string; digest: string }>;
  readonly uploads: FsckReport['uploads'];
  readonly repositories: Set<string>;
  readonly bytes: number;
}

function addTo(map: Map<string, Set<string>>, repository: string, digest: string): void {
  const set = map.get(repository) ?? new Set<string>();
  set.add(digest);
  map.set(repository, set);
}

function indexLayout(objects: readonly RegistryObject[]): Layout {
  const layout = {
    keys: new Set<string>(),
    blobs: new Map<string, number>(),
    tags: [] as Layout['tags'],
    revisions: new Map<string, Set<string>>(),
    layerLinks: new Map<string, Set<string>>(),
    linkKeys: [] as Layout['linkKeys'],
    repositories: new Set<string>(),
  };
  const uploads = new Map<string, FsckReport['uploads'][number]>();
  let bytes = 0;
  for (const object of objects) {
    layout.keys.add(object.key);
    bytes += object.size;
    const kind = classifyRegistryKey(object.key);
    if (kind === KeyKind.Blob) {
      const digest = blobDigestOf(object.key);
      if (digest !== undefined) layout.blobs.set(digest, object.size);
    } else if (kind === KeyKind.Tag) {
      const match = TAG_CURRENT.exec(object.key);
      if (match?.[1] !== undefined && match[2] !== undefined) {
        layout.tags.push({ repository: match[1], tag: match[2], key: object.key });
        layout.repositories.add(match[1]);
      }
    } else if (kind === KeyKind.Revision || kind === KeyKind.Layer) {
      const match = (kind === KeyKind.Revision ? REVISION_LINK : LAYER_LINK).exec(object.key);
      if (match?.[1] !== undefined && match[2] !== undefined) {
        const digest = `sha256:${match[2]}`;
        addTo(kind === KeyKind.Revision ? layout.revisions : layout.layerLinks, match[1], digest);
        layout.linkKeys.push({ key: object.key, digest });
        layout.repositories.add(match[1]);
      }
    } else if (kind === KeyKind.Upload) {
      const repository = /^repositories\/(.+?)\/_uploads\//.exec(object.key)?.[1] ?? '';
      const id = uploadIdOf(object.key) ?? '';
      const entry = uploads.get(`${repository}\0${id}`) ?? { repository, id, objects: 0, bytes: 0 };
      entry.objects++;
      entry.bytes += object.size;
      uploads.set(`${repository}\0${id}`, entry);
    }
  }
  const uploadList = [...uploads.values()].sort((a, b) =>
    `${a.repository}/${a.id}`.localeCompare(`${b.repository}/${b.id}`),
  );
  return { ...layout, uploads: uploadList, bytes };
}

/** The manifest graph fsck walked: what each `repo@digest` names, and which tags lead to it. */
class ManifestGraph {
  readonly #refs = new Map<string, { blobs: string[]; children: string[] }>();
  readonly #roots = new Map<string, Set<string>>();

  tag(repository: string, digest: string, tag: string): void {
    const id = `${repository}@${digest}`;
    const set = this.#roots.get(id) ?? new Set<string>();
    set.add(`${repository}:${tag}`);
    this.#roots.set(id, set);
  }

  record(repository: string, digest: string, refs: ManifestRefs): void {
    this.#refs.set(`${repository}@${digest}`, {
      blobs: refs.blobs.map((b) => b.digest),
      children: refs.children.map((c) => `${repository}@${c.digest}`),
    });
  }

  /** Blob digest (config, layer, or a manifest itself) -> the `repo:tag`s whose pull needs it. */
  users(): Map<string, string[]> {
    const users = new Map<string, Set<string>>();
    const add = (digest: string, user: string) => {
      const set = users.get(digest) ?? new Set<string>();
      set.add(user);
      users.set(digest, set);
    };
    for (const [root, tags] of this.#roots) {
      const seen = new Set<string>();
      const stack = [root];
      while (stack.length > 0) {
        const id = stack.pop() ?? '';
        if (seen.has(id)) continue;
        seen.add(id);
        const digest = id.slice(id.lastIndexOf('@') + 1);
        for (const tag of tags) add(digest, tag);
        const refs = this.#refs.get(id);
        for (const blob of refs?.blobs ?? []) for (const tag of tags) add(blob, tag);
        stack.push(...(refs?.children ?? []));
      }
    }
    return new Map([...users].map(([digest, set]) => [digest, [...set].sort()]));
  }
}

/** At most three users by name, the rest counted. */
function usersText(users: readonly string[]): string {
  if (users.length === 0) return 'no tag';
  const named = users.slice(0, 3).join(', ');
  return users.length > 3 ? `${named} and ${users.length - 3} more` : named;
}

/**
 * Checks a registry layout. Fast mode reads tag links and manifest blobs only
 * (never a layer) and, for a source that can list its store (a snapshot),
 * proves every object it promises is there at its size; deep mode also hashes
 * blobs (all, or `sample` of them) and reads every revision and layer link.
 */
export async function fsckRegistry(
  source: RegistrySource,
  options: FsckOptions = {},
): Promise<FsckReport> {
  const deep = options.deep ?? false;
  const concurrency = options.concurrency ?? 16;
  const label = source.label ?? 'the bucket';
  const where = (key: string) => source.locate?.(key) ?? key;
  let reads = 0;
  const read = async (key: string): Promise<Buffer | undefined> => {
    reads++;
    return source.read(key);
  };

  // 1. The layout from the listing alone; objects the store lacks are left out of it.
  const objects = await collect(source.list());
  const unbacked = (await source.unbacked?.()) ?? [];
  const absent = new Set(unbacked.filter((u) => u.actualSize === undefined).map((u) => u.key));
  const layout = indexLayout(objects.filter((object) => !absent.has(object.key)));
  const { keys, blobs, revisions, layerLinks } = layout;

  const dangling: DanglingReference[] = [];
  const invalidManifests: FsckReport['invalidManifests'] = [];
  const referenced = new Set<string>();
  const graph = new ManifestGraph();
  const tagDigests: FsckReport['tagDigests'] = [];
  /** A corrupt blob as found, before its users are known. */
  const corrupt = new Map<string, { actual: string; size: number }>();

  // 2. Tags: each current link names a digest with a revision link and a manifest blob.
  const toCheck = new Map<string, Set<string>>();
  /** `repo@digest` -> `repo:tag`, to name a tag as the referrer when its revision link is missing. */
  const tagged = new Map<string, string>();
  for (const [repository, digests] of revisions)
    for (const digest of digests) addTo(toCheck, repository, digest);
  await forEachLimit(layout.tags, concurrency, async ({ repository, tag, key }) => {
    const body = (await read(key))?.toString('utf8').trim();
    const from = `${repository}:${tag}`;
    if (body === undefined) {
      dangling.push({ from, to: key, reason: 'the tag link vanished while checking' });
      return;
    }
    if (!DIGEST.test(body)) {
      dangling.push({
        from,
        to: key,
        reason: `the tag link holds ${JSON.stringify(body.slice(0, 80))}, not a sha256 digest`,
      });
      return;
    }
    referenced.add(body);
    tagDigests.push({ repository, tag, digest: body });
    graph.tag(repository, body, tag);
    if (!keys.has(revisionKey(repository, body))) {
      dangling.push({
        from,
        to: revisionKey(repository, body),
        reason: 'tag without its revision link',
      });
    }
    addTo(toCheck, repository, body);
    tagged.set(`${repository}@${body}`, from);
  });

  // 3. Manifests: each one hashes to its digest and parses, and what it names
  // exists as a blob and as a link in its repository.
  const parsed = new Map<string, Promise<Parsed | undefined>>();
  const parse = (digest: string): Promise<Parsed | undefined> => {
    let pending = parsed.get(digest);
    if (pending === undefined) {
      pending = read(blobKeyOf(digest)).then((body) => {
        if (body === undefined) return undefined;
        // Read in full anyway: hashing it costs no request.
        const actual = `sha256:${createHash('sha256').update(body).digest('hex')}`;
        if (actual !== digest) corrupt.set(digest, { actual, size: body.length });
        return parseManifest(body);
      });
      parsed.set(digest, pending);
    }
    return pending;
  };
  const missingBlob = (from: string, digest: string, what: string): DanglingReference => ({
    from,
    to: blobKeyOf(digest),
    reason: `${what} missing in ${label}`,
    digest,
  });
  const visited = new Set<string>();
  const invalid = new Set<string>();
  let queue: Array<{ repository: string; digest: string; from: string }> = [];
  for (const [repository, digests] of toCheck) {
    for (const digest of digests) {
      // A manifest only a tag names (its revision link is missing) is reported as the tag's.
      const revision = revisionKey(repository, digest);
      const from = keys.has(revision)
        ? revision
        : (tagged.get(`${repository}@${digest}`) ?? revision);
      queue.push({ repository, digest, from });
    }
  }
  while (queue.length > 0) {
    const batch = queue.filter((item) => {
      const id = `${item.repository}@${item.digest}`;
      if (visited.has(id)) return false;
      visited.add(id);
      return true;
    });
    queue = [];
    await forEachLimit(batch, concurrency, async ({ repository, digest, from }) => {
      referenced.add(digest);
      const manifestName = `${repository}@${digest}`;
      if (!blobs.has(digest)) {
        dangling.push(missingBlob(from, digest, 'manifest blob'));
        return;
      }
      const result = await parse(digest);
      if (result === undefined) {
        dangling.push({
          from,
          to: blobKeyOf(digest),
          reason: 'manifest blob vanished while checking',
          digest,
        });
        return;
      }
      if (!result.ok) {
        if (!invalid.has(digest)) {
          invalid.add(digest);
          invalidManifests.push({ digest, reason: result.reason });
        }
        return;
      }
      graph.record(repository, digest, result.refs);
      for (const blob of result.refs.blobs) {
        if (!DIGEST.test(blob.digest)) {
          dangling.push({ from: manifestName, to: blob.digest, reason: 'not a sha256 digest' });
          continue;
        }
        referenced.add(blob.digest);
        const foreign =
          blob.hasUrls || (blob.mediaType !== undefined && FOREIGN_LAYER.test(blob.mediaType));
        if (foreign) continue;
        if (!blobs.has(blob.digest)) dangling.push(missingBlob(manifestName, blob.digest, 'blob'));
        if (!layerLinks.get(repository)?.has(blob.digest)) {
          dangling.push({
            from: manifestName,
            to: layerKey(repository, blob.digest),
            reason: `layer link missing in ${label}`,
          });
        }
      }
      for (const child of result.refs.children) {
        if (!DIGEST.test(child.digest)) {
          dangling.push({ from: manifestName, to: child.digest, reason: 'not a sha256 digest' });
          continue;
        }
        if (!revisions.get(repository)?.has(child.digest)) {
          dangling.push({
            from: manifestName,
            to: revisionKey(repository, child.digest),
            reason: `child manifest's revision link missing in ${label}`,
          });
        }
        queue.push({ repository, digest: child.digest, from: manifestName });
      }
    });
  }

  // 4. Sizes the store holds against the ones the source promised (no read).
  for (const object of unbacked) {
    const digest = blobDigestOf(object.key);
    if (object.actualSize === undefined || digest === undefined) continue;
    corrupt.set(digest, {
      actual: `${object.actualSize} bytes where ${object.expectedSize} were recorded`,
      size: object.actualSize,
    });
  }

  // 5. Deep: blobs hash to their digests; links hold the digest their key names.
  const badLinks: FsckReport['badLinks'] = [];
  let blobsVerified = 0;
  if (deep) {
    const all = [...blobs.keys()].filter((d) => !corrupt.has(d) && !options.alreadyHashed?.(d));
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
    options.onHash?.(done, total);
    await forEachLimit(chosen, concurrency, async (digest) => {
      reads++;
      const actual = await sha256Of(source, blobKeyOf(digest));
      done.blobs++;
      done.bytes += blobs.get(digest) ?? 0;
      options.onHash?.(done, total);
      if (actual === undefined) return; // deleted since the listing (a registry GC): nothing left to be corrupt
      blobsVerified++;
      if (actual !== digest) corrupt.set(digest, { actual, size: blobs.get(digest) ?? 0 });
    });
    await forEachLimit(layout.linkKeys, concurrency, async ({ key, digest }) => {
      const body = (await read(key))?.toString('utf8').trim();
      if (body !== undefined && body !== digest) badLinks.push({ key, found: body.slice(0, 80) });
    });
  }

  // 6. The report: who each problem breaks, and where it lives.
  const users = graph.users();
  const usedBy = (digest: string | undefined) =>
    digest === undefined ? [] : (users.get(digest) ?? []);
  const corruptBlobs: FsckReport['corruptBlobs'] = [...corrupt]
    .map(([digest, found]) => ({
      digest,
      ...found,
      location: where(blobKeyOf(digest)),
      usedBy: usedBy(digest),
    }))
    .sort((a, b) => a.digest.localeCompare(b.digest));
  const missingObjects: FsckReport['missingObjects'] = [...absent]
    .sort()
    .map((key) => ({ key, location: where(key), usedBy: usedBy(blobDigestOf(key)) }));
  const orphanBlobs = [...blobs.keys()].filter((digest) => !referenced.has(digest)).sort();
  const byFrom = (a: DanglingReference, b: DanglingReference) =>
    `${a.from} ${a.to}`.localeCompare(`${b.from} ${b.to}`);
  dangling.sort(byFrom);
  invalidManifests.sort((a, b) => a.digest.localeCompare(b.digest));
  badLinks.sort((a, b) => a.key.localeCompare(b.key));
  // A blob missing from the store is named once, by the object line, not by every reference to it.
  const danglingLines = dangling
    .filter((d) => !(d.digest !== undefined && absent.has(blobKeyOf(d.digest))))
    .map((d) =>
      d.digest === undefined
        ? `dangling: ${d.from} -> ${d.to} (${d.reason})`
        : `${d.reason}: ${d.digest} (${where(d.to)}), needed by ${usersText(usedBy(d.digest).length > 0 ? usedBy(d.digest) : [d.from])}`,
    );
  const problems = capped([
    ...missingObjects.map((m) => {
      const digest = blobDigestOf(m.key);
      return digest === undefined
        ? `missing in ${label}: ${m.key} (${m.location})`
        : `missing in ${label}: blob ${digest} (${m.location}), needed by ${usersText(m.usedBy)}`;
    }),
    ...danglingLines,
    ...invalidManifests.map((m) => `unreadable manifest ${m.digest}: ${m.reason}`),
    ...corruptBlobs.map(
      (c) =>
        `corrupt in ${label}: blob ${c.digest} (${c.location}) holds ${c.actual.startsWith('sha256:') ? `content hashing to ${c.actual}` : c.actual}; needed by ${usersText(c.usedBy)}`,
    ),
    ...badLinks.map((l) => `bad link ${l.key}: holds ${JSON.stringify(l.found)}`),
  ]);
  const notices = capped([
    ...(orphanBlobs.length === 0
      ? []
      : [
          `${orphanBlobs.length} orphan blobs (no manifest refers to them), e.g. ${orphanBlobs.slice(0, 3).join(', ')}`,
        ]),
    ...layout.uploads.map(
      (u) =>
        `leftover upload ${u.repository}/_uploads/${u.id} (${u.objects} objects, ${u.bytes} bytes)`,
    ),
  ]);
  return {
    ok:
      dangling.length === 0 &&
      missingObjects.length === 0 &&
      invalidManifests.length === 0 &&
      corruptBlobs.length === 0 &&
      badLinks.length === 0,
    mode: deep ? 'deep' : 'fast',
    counts: {
      objects: objects.length,
      bytes: layout.bytes,
      blobs: blobs.size,
      repositories: layout.repositories.size,
      tags: layout.tags.length,
      revisions: [...revisions.values()].reduce((sum, set) => sum + set.size, 0),
      layerLinks: [...layerLinks.values()].reduce((sum, set) => sum + set.size, 0),
      manifests: parsed.size,
      blobsVerified,
      reads,
    },
    dangling: dangling.map((d) =>
      d.digest === undefined ? d : { ...d, usedBy: usedBy(d.digest) },
    ),
    missingObjects,
    invalidManifests,
    corruptBlobs,
    tagDigests: tagDigests.sort((a, b) =>
      `${a.repository}:${a.tag}`.localeCompare(`${b.repository}:${b.tag}`),
    ),
    badLinks,
    orphanBlobs,
    uploads: layout.uploads,
    problems,
    notices,
  };
}

/** The registry data prefix under a driver root directory (`<root>/docker/registry/v2/`), tolerant of a root that already ends there. */
function registryBase(rootPrefix: string): string {
  const root = normaliseRoot(rootPrefix);
  return root.endsWith(REGISTRY_V2) ? root : `${root}${REGISTRY_V2}`;
}

function isMissing(err: unknown): boolean {
  const name = typeof err === 'object' && err !== null && 'name' in err ? String(err.name) : '';
  return name === 'NoSuchKey' || name === 'NotFound';
}

/** Reads and streams objects of one bucket; `undefined` for a key that does not exist. */
function objectReader(client: S3Client, bucket: string) {
  const get = async (key: string) => {
    try {
      return await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  };
  return {
    async read(key: string): Promise<Buffer | undefined> {
      const response = await get(key);
      if (response === undefined) return undefined;
      return Buffer.from((await response.Body?.transformToByteArray()) ?? new Uint8Array());
    },
    async open(key: string): Promise<AsyncIterable<Uint8Array> | undefined> {
      const response = await get(key);
      if (response === undefined) return undefined;
      const body = response.Body;
      if (body === undefined) return (async function* () {})();
      // In Node the SDK's body is a Readable, which is async-iterable.
      if (Symbol.asyncIterator in body) return body as AsyncIterable<Uint8Array>;
      const whole = await body.transformToByteArray();
      return (async function* () {
        yield whole;
      })();
    },
  };
}

/**
 * A registry bucket as a source. `rootPrefix` is the storage driver's root
 * directory (the key prefix before `docker/registry/v2/`), '' for none.
 */
export function bucketSource(
  client: S3Client,
  bucket: string,
  rootPrefix: string,
  label = 'the bucket',
): RegistrySource {
  const base = registryBase(rootPrefix);
  const objects = objectReader(client, bucket);
  return {
    label,
    locate: (key) => `s3://${bucket}/${base}${key}`,
    async *list() {
      let token: string | undefined;
      do {
        const page: ListObjectsV2CommandOutput = await client.send(
          new ListObjectsV2Command({
            Bucket: bucket,
            Prefix: base,
            ...(token === undefined ? {} : { ContinuationToken: token }),
          }),
        );
        for (const item of page.Contents ?? []) {
          const key = item.Key ?? '';
          if (key.startsWith(base)) yield { key: key.slice(base.length), size: item.Size ?? 0 };
        }
        token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
      } while (token !== undefined);
    },
    read: (key) => objects.read(`${base}${key}`),
    open: (key) => objects.open(`${base}${key}`),
  };
}

/**
 * Inventory records of a registry backup as a source: listing is the records
 * (no request), reads go to each record's vault key (a pool blob, or an object
 * under this or an earlier snapshot). `base` is the source key prefix up to
 * and including `docker/registry/v2/`. Backup finalize can call this with the
 * records it holds, before the inventory is even written.
 */
export function recordsSource(
  vault: Vault,
  records: readonly InventoryRecord[],
  base: string,
): RegistrySource {
  const targets = new Map<string, string>();
  const objects: RegistryObject[] = [];
  for (const record of records) {
    if (!record.key.startsWith(base)) continue;
    const key = record.key.slice(base.length);
    targets.set(key, record.targetKey);
    objects.push({ key, size: record.size });
  }
  const reader = objectReader(vault.client, vault.location.bucket);
  return {
    label: 'the vault',
    locate: (key) => `vault key ${targets.get(key) ?? key}`,
    list: async () => objects,
    async read(key) {
      const target = targets.get(key);
      return target === undefined ? undefined : reader.read(target);
    },
    async open(key) {
      const target = targets.get(key);
      return target === undefined ? undefined : reader.open(target);
    },
  };
}

/** A snapshot in the vault as a source, read through its inventory. */
export function snapshotSource(vault: Vault, manifest: SnapshotManifest): RegistrySource {
  if (manifest.layout !== 'registry') {
    throw new VaultError(
      `snapshot ${manifest.id} holds a plain bucket, not a registry layout; fsck checks registry snapshots only`,
    );
  }
  const base = `${manifest.source.prefix}${normaliseRoot(manifest.source.rootDirectory)}${REGISTRY_V2}`;
  let loaded: Promise<RegistrySource> | undefined;
  const inner = () => {
    loaded ??= readInventory(vault, manifest).then((records) =>
      recordsSource(vault, records, base),
    );
    return loaded;
  };
  let records: Promise<readonly InventoryRecord[]> | undefined;
  const recordsOf = () => {
    records ??= readInventory(vault, manifest);
    return records;
  };
  let located: Map<string, string> | undefined;
  return {
    label: 'the vault',
    locate: (key) => `vault key ${located?.get(key) ?? key}`,
    list: async () => {
      const source = await inner();
      located = new Map(
        (await recordsOf())
          .filter((r) => r.key.startsWith(base))
          .map((r) => [r.key.slice(base.length), r.targetKey]),
      );
      return collect(source.list());
    },
    read: async (key) => (await inner()).read(key),
    open: async (key) => (await inner()).open?.(key),
    unbacked: async () => unbackedRecords(vault, await recordsOf(), base),
  };
}

/**
 * Inventory records whose vault object is missing or of another size, found
 * by listing the vault prefixes the records point into (the blob pool, the
 * snapshots' object trees): one LIST per 1,000 vault objects, no read.
 */
export async function unbackedRecords(
  vault: Vault,
  records: readonly InventoryRecord[],
  base: string,
): Promise<UnbackedObject[]> {
  const prefixes = new Set<string>();
  for (const record of records) {
    const match = /^(.*?(?:blobs\/sha256\/|snapshots\/[^/]+\/objects\/))/.exec(record.targetKey);
    prefixes.add(match?.[1] ?? record.targetKey);
  }
  const held = new Map<string, number>();
  for (const prefix of prefixes)
    for (const object of await listKeys(vault, prefix)) held.set(object.key, object.size);
  const unbacked: UnbackedObject[] = [];
  for (const record of records) {
    const size = held.get(record.targetKey);
    if (size === record.size) continue;
    unbacked.push({
      key: record.key.startsWith(base) ? record.key.slice(base.length) : record.key,
      expectedSize: record.size,
      ...(size === undefined ? {} : { actualSize: size }),
    });
  }
  return unbacked;
}
