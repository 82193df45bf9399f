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

/**
 * The layout as the listing shows it: every object classified, nothing read.
 * What it keeps grows with the blobs and links, not with every key: a link's
 * existence is its digest in its repository's set.
 */
export interface Layout {
  readonly blobs: Map<string, number>;
  readonly tags: Array<{ repository: string; tag: string; key: string }>;
  readonly revisions: Map<string, Set<string>>;
  readonly layerLinks: Map<string, Set<string>>;
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

/** Adds `digest` to the set held for `repository`. */
export function addTo(map: Map<string, Set<string>>, repository: string, digest: string): void {
  const set = map.get(repository) ?? new Set<string>();
  set.add(digest);
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
  const layout = {
    blobs: new Map<string, number>(),
    tags: [] as Layout['tags'],
    revisions: new Map<string, Set<string>>(),
    layerLinks: new Map<string, Set<string>>(),
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
        addTo(kind === KeyKind.Revision ? layout.revisions : layout.layerLinks, match[1], digest);
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

/** The manifest graph fsck walked: what each `repo@digest` names, and which tags lead to it. */
export class ManifestGraph {
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
