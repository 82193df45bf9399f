/**
 * What fsck knows before and while it reads: the layout indexed from a
 * listing alone (blobs, tags, revision and layer links, leftover uploads)
 * and the graph of manifests it walked, which says whose pull needs a blob.
 */
import { createHash } from 'node:crypto';
import type { RegistryObject } from './fsck-sources.ts';
import { blobDigestOf, classifyRegistryKey, KeyKind, uploadIdOf } from './layout.ts';
import type { ManifestRefs } from './manifest.ts';

/** An unfinished push left in `_uploads/`. */
export interface LeftoverUpload {
  repository: string;
  id: string;
  objects: number;
  bytes: number;
}

const TAG_CURRENT = /^repositories\/(.+)\/_manifests\/tags\/([^/]+)\/current\/link$/;
const REVISION_LINK = /^repositories\/(.+)\/_manifests\/revisions\/sha256\/([0-9a-f]{64})\/link$/;
const LAYER_LINK = /^repositories\/(.+)\/_layers\/sha256\/([0-9a-f]{64})\/link$/;

const hexOf = (digest: string) => digest.replace(/^sha256:/, '');
const md5Hex = (text: string) => createHash('md5').update(text).digest('hex');
/** The revision link key of a manifest in a repository, relative to the registry prefix. */
export const revisionKey = (repository: string, digest: string) =>
  `repositories/${repository}/_manifests/revisions/sha256/${hexOf(digest)}/link`;
/** The layer link key of a blob in a repository, relative to the registry prefix. */
export const layerKey = (repository: string, digest: string) =>
  `repositories/${repository}/_layers/sha256/${hexOf(digest)}/link`;

/** A sha256 digest as manifests and links write it. */
export const SHA256_DIGEST = /^sha256:[0-9a-f]{64}$/;

/** A sha256 digest's 32 bytes as a Latin-1 string: 48 bytes in V8, where `sha256:<hex>` takes 88. */
const packed = (digest: string) => Buffer.from(digest.slice(7), 'hex').toString('latin1');

/** A set of sha256 digests held as their bytes. */
export class DigestSet {
  readonly #set = new Set<string>();

  add(digest: string): void {
    if (SHA256_DIGEST.test(digest)) this.#set.add(packed(digest));
  }

  has(digest: string): boolean {
    return SHA256_DIGEST.test(digest) && this.#set.has(packed(digest));
  }

  get size(): number {
    return this.#set.size;
  }
}

/**
 * The digests fsck has met, each held once, as a small integer id and the
 * digest's 32 bytes in a Latin-1 string (48 bytes in V8 where
 * `sha256:<hex>` takes 88): a set of digests is then a set of numbers. At a
 * million objects the layout met about 400,000 digests, most of them in
 * several sets.
 */
export class Digests {
  readonly #ids = new Map<string, number>();
  readonly #packed: string[] = [];

  /** The id of `digest` (`sha256:<64 hex>`), added if it is new. */
  id(digest: string): number {
    const bytes = packed(digest);
    let id = this.#ids.get(bytes);
    if (id === undefined) {
      id = this.#packed.length;
      this.#packed.push(bytes);
      this.#ids.set(bytes, id);
    }
    return id;
  }

  /** The id of `digest` if it was met; undefined for one never met or not a sha256 digest. */
  find(digest: string): number | undefined {
    return SHA256_DIGEST.test(digest) ? this.#ids.get(packed(digest)) : undefined;
  }

  /** The digest of id `id`, `sha256:<hex>`. */
  digest(id: number): string {
    return `sha256:${Buffer.from(this.#packed[id] ?? '', 'latin1').toString('hex')}`;
  }
}

/** Per repository, the digests of its revision or layer links, by id. */
export class LinkSets {
  readonly #digests: Digests;
  readonly #byRepository = new Map<string, Set<number>>();

  constructor(digests: Digests) {
    this.#digests = digests;
  }

  add(repository: string, digest: string): void {
    addTo(this.#byRepository, repository, this.#digests.id(digest));
  }

  has(repository: string, digest: string): boolean {
    const id = this.#digests.find(digest);
    return id !== undefined && (this.#byRepository.get(repository)?.has(id) ?? false);
  }

  /** Every link: its repository and its digest's id. */
  *entries(): Generator<[string, number]> {
    for (const [repository, ids] of this.#byRepository)
      for (const id of ids) yield [repository, id];
  }

  get size(): number {
    let size = 0;
    for (const ids of this.#byRepository.values()) size += ids.size;
    return size;
  }
}

/** The blobs of the layout: their sizes by digest id. */
export class BlobSizes {
  readonly #digests: Digests;
  readonly #sizes: number[] = [];
  #count = 0;

  constructor(digests: Digests) {
    this.#digests = digests;
  }

  set(digest: string, size: number): void {
    const id = this.#digests.id(digest);
    while (this.#sizes.length <= id) this.#sizes.push(-1);
    if ((this.#sizes[id] ?? -1) < 0) this.#count++;
    this.#sizes[id] = size;
  }

  /** The blob's size; undefined when the layout has no such blob. */
  get(digest: string): number | undefined {
    const id = this.#digests.find(digest);
    return id === undefined ? undefined : this.sizeOf(id);
  }

  has(digest: string): boolean {
    return this.get(digest) !== undefined;
  }

  /** The size of the blob of digest id `id`, if the layout has it. */
  sizeOf(id: number): number | undefined {
    const size = this.#sizes[id] ?? -1;
    return size < 0 ? undefined : size;
  }

  /** Every blob's digest id. */
  *ids(): Generator<number> {
    for (let id = 0; id < this.#sizes.length; id++) if ((this.#sizes[id] ?? -1) >= 0) yield id;
  }

  get size(): number {
    return this.#count;
  }
}

/**
 * The layout as the listing shows it: every object classified, nothing read.
 * What it keeps grows with the blobs and links, not with every key: a link's
 * existence is its digest's id in its repository's set.
 */
export interface Layout {
  readonly digests: Digests;
  readonly blobs: BlobSizes;
  readonly tags: Array<{ repository: string; tag: string; key: string }>;
  readonly revisions: LinkSets;
  readonly layerLinks: LinkSets;
  /**
   * Revision and layer links deep mode must read: those whose ETag in the
   * store's listing is not the MD5 of the digest they hold (a link is
   * exactly its digest). Empty unless the index was asked to keep them.
   */
  readonly linksToRead: Array<{ key: string; digest: string }>;
  /** Links the listing's ETag proved (counted where links to read are kept). */
  readonly linksProvenByEtag: number;
  readonly uploads: LeftoverUpload[];
  readonly repositories: Set<string>;
  readonly bytes: number;
}

/** Adds `item` to the set held for `repository`. */
export function addTo<T>(map: Map<string, Set<T>>, repository: string, item: T): void {
  const set = map.get(repository) ?? new Set<T>();
  set.add(item);
  map.set(repository, set);
}

/** The objects of a listing, and how many it had. */
export interface Indexed {
  readonly layout: Layout;
  readonly objects: number;
}

/**
 * Indexes a listing into the layout as it comes, leaving out the objects
 * `absent` names (the store lacks them); the listing itself is not kept.
 */
export async function indexLayout(
  objects: AsyncIterable<RegistryObject> | Iterable<RegistryObject>,
  absent: ReadonlySet<string> = new Set(),
  options: { readonly keepLinksToRead?: boolean } = {},
): Promise<Indexed> {
  const digests = new Digests();
  const layout = {
    digests,
    blobs: new BlobSizes(digests),
    tags: [] as Layout['tags'],
    revisions: new LinkSets(digests),
    layerLinks: new LinkSets(digests),
    linksToRead: [] as Layout['linksToRead'],
    repositories: new Set<string>(),
  };
  const uploads = new Map<string, LeftoverUpload>();
  let bytes = 0;
  let listed = 0;
  let linksProvenByEtag = 0;
  for await (const object of objects) {
    listed++;
    if (absent.has(object.key)) continue;
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
        (kind === KeyKind.Revision ? layout.revisions : layout.layerLinks).add(match[1], digest);
        if (options.keepLinksToRead === true) {
          if (object.etag !== undefined && object.etag === md5Hex(digest)) linksProvenByEtag++;
          else layout.linksToRead.push({ key: object.key, digest });
        }
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
  return { layout: { ...layout, uploads: uploadList, bytes, linksProvenByEtag }, objects: listed };
}

/**
 * The manifest graph fsck walked: what each manifest of a repository names,
 * and which tags lead to it, digests by their ids in the layout's table.
 */
export class ManifestGraph {
  readonly #digests: Digests;
  /** Repository -> manifest -> the blobs it names and its child manifests. */
  readonly #refs = new Map<string, Map<number, { blobs: number[]; children: number[] }>>();
  /** Repository -> manifest -> the tags that name it. */
  readonly #roots = new Map<string, Map<number, string[]>>();

  constructor(digests: Digests) {
    this.#digests = digests;
  }

  tag(repository: string, digest: string, tag: string): void {
    const roots = this.#roots.get(repository) ?? new Map<number, string[]>();
    this.#roots.set(repository, roots);
    const id = this.#digests.id(digest);
    const tags = roots.get(id);
    if (tags === undefined) roots.set(id, [tag]);
    else tags.push(tag);
  }

  record(repository: string, digest: string, refs: ManifestRefs): void {
    const ids = (descriptors: readonly { digest: string }[]) =>
      descriptors
        .filter((d) => SHA256_DIGEST.test(d.digest))
        .map((d) => this.#digests.id(d.digest));
    const manifests = this.#refs.get(repository) ?? new Map();
    this.#refs.set(repository, manifests);
    manifests.set(this.#digests.id(digest), {
      blobs: ids(refs.blobs),
      children: ids(refs.children),
    });
  }

  /**
   * Blob digest (config, layer, or a manifest itself) -> the `repo:tag`s
   * whose pull needs it, for the `wanted` digests only: the problems' blobs.
   * Every blob's users at once would hold an entry per blob and tag, and a
   * base layer every tag shares; a report needs a handful.
   */
  users(wanted: ReadonlySet<string>): Map<string, string[]> {
    const wantedIds = new Map<number, string>();
    for (const digest of wanted) {
      const id = this.#digests.find(digest);
      if (id !== undefined) wantedIds.set(id, digest);
    }
    const users = new Map<string, Set<string>>();
    if (wantedIds.size === 0) return new Map();
    for (const [repository, roots] of this.#roots) {
      const manifests = this.#refs.get(repository);
      for (const [root, tags] of roots) {
        const named = tags.map((tag) => `${repository}:${tag}`);
        const add = (id: number) => {
          const digest = wantedIds.get(id);
          if (digest === undefined) return;
          const set = users.get(digest) ?? new Set<string>();
          for (const user of named) set.add(user);
          users.set(digest, set);
        };
        const seen = new Set<number>();
        const stack = [root];
        while (stack.length > 0) {
          const id = stack.pop() ?? -1;
          if (seen.has(id)) continue;
          seen.add(id);
          add(id);
          const refs = manifests?.get(id);
          for (const blob of refs?.blobs ?? []) add(blob);
          stack.push(...(refs?.children ?? []));
        }
      }
    }
    return new Map([...users].map(([digest, set]) => [digest, [...set].sort()]));
  }
}
