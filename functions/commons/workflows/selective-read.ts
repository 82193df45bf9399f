/**
 * Reading a selection of a snapshot for a selective restore or an export:
 * the repositories and tags it names (checked against the snapshot's
 * catalog), their links (only the inventory parts that hold them), and what
 * their manifests need (revisions, blobs, tag history, referrers). Nothing
 * here writes; workflows/selective.ts copies what this finds.
 */
import { createHash } from 'node:crypto';
import { InputError, VaultError } from '../errors.ts';
import { normaliseRoot, REGISTRY_V2 } from '../registry/layout.ts';
import { isForeignLayer, type ManifestRefs, parseManifest } from '../registry/manifest.ts';
import {
  fallbackSubjectOf,
  fallbackTagOf,
  isGlob,
  matching,
  repositoryFolder,
  selectionText,
} from '../registry/selection.ts';
import { catalogSchema, type SnapshotManifest, vaultKeys } from '../vault/format.ts';
import { eachRecordInRanges } from '../vault/inventory-lookup.ts';
import { getBytes, getJson, rootOf } from '../vault/store.ts';
import type { WorkflowDeps } from './deps.ts';

/** The links of one repository in a snapshot, by kind, each with its record's vault key. */
export interface RepositoryLinks {
  readonly tags: Map<string, string>;
  readonly tagHistory: Map<string, Array<{ digest: string; vaultKey: string; key: string }>>;
  readonly revisions: Map<string, string>;
  readonly layers: Map<string, string>;
  /** Source key -> record size and ETag, for the copy entries. */
  readonly objects: Map<string, { size: number; etag: string; vaultKey: string }>;
}

const TAG_CURRENT = /^_manifests\/tags\/([^/]+)\/current\/link$/;
const TAG_INDEX = /^_manifests\/tags\/([^/]+)\/index\/sha256\/([0-9a-f]{64})\/link$/;
const REVISION = /^_manifests\/revisions\/sha256\/([0-9a-f]{64})\/link$/;
const LAYER = /^_layers\/sha256\/([0-9a-f]{64})\/link$/;

const sha256Hex = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

/** The snapshot's catalog narrowed to the selection; bad input names every glob that found nothing. */
export function select(
  snapshot: SnapshotManifest,
  catalog: ReadonlyArray<{ name: string; tags: Record<string, string> }>,
  repositoryGlobs: readonly string[],
  tagGlobs: readonly string[] | undefined,
): Array<{ name: string; tags: Record<string, string>; chosen: string[] }> {
  const names = catalog.map((r) => r.name);
  const partial =
    snapshot.selection === undefined
      ? ''
      : `, a partial snapshot of ${selectionText(snapshot.selection)}`;
  const some = `it holds ${names.length} repositories${partial}${names.length === 0 ? '' : ` (${names.slice(0, 5).join(', ')}${names.length > 5 ? ', ...' : ''})`}; \`regvault snapshots show ${snapshot.id}\` lists them`;
  const issues: string[] = [];
  for (const glob of repositoryGlobs) {
    if (matching(names, [glob]).length > 0) continue;
    issues.push(
      isGlob(glob)
        ? `repositories: ${glob} matches no repository of snapshot ${snapshot.id}; ${some}`
        : `repositories: ${glob} is not in snapshot ${snapshot.id}; ${some}`,
    );
  }
  if (issues.length > 0)
    throw new InputError('the repositories to restore are not in the snapshot', issues);
  const chosen = new Set(matching(names, repositoryGlobs));
  const selected = catalog
    .filter((r) => chosen.has(r.name))
    .map((r) => ({
      ...r,
      chosen:
        tagGlobs === undefined ? Object.keys(r.tags) : matching(Object.keys(r.tags), tagGlobs),
    }));
  for (const glob of tagGlobs ?? []) {
    if (selected.some((r) => matching(Object.keys(r.tags), [glob]).length > 0)) continue;
    const tags = selected.flatMap((r) => Object.keys(r.tags).map((tag) => `${r.name}:${tag}`));
    issues.push(
      `tags: ${glob} matches no tag of ${[...chosen].join(', ')} in snapshot ${snapshot.id}; its tags are ${tags.slice(0, 8).join(', ')}${tags.length > 8 ? ', ...' : ''}`,
    );
  }
  if (issues.length > 0)
    throw new InputError('the tags to restore are not in the snapshot', issues);
  return selected;
}

/** The repositories and tags of a snapshot, as its catalog.json records them. */
export async function catalogOf(
  deps: WorkflowDeps,
  snapshot: SnapshotManifest,
): Promise<Array<{ name: string; tags: Record<string, string> }>> {
  const key = vaultKeys.catalog(rootOf(deps.vault), snapshot.id);
  const catalog = await getJson(deps.vault, key, catalogSchema);
  if (catalog === undefined)
    throw new VaultError(
      `snapshot ${snapshot.id} has no catalog.json (${key}); it cannot be read by repository`,
    );
  return catalog.repositories;
}

/**
 * The links of the selected repositories in the snapshot, reading only the
 * inventory parts that hold their folders. Unfinished uploads are left out.
 */
export async function linksOf(
  deps: WorkflowDeps,
  snapshot: SnapshotManifest,
  base: string,
  names: readonly string[],
): Promise<Map<string, RepositoryLinks>> {
  const byName = new Map<string, RepositoryLinks>();
  const ranges = names.map((name) => {
    byName.set(name, {
      tags: new Map(),
      tagHistory: new Map(),
      revisions: new Map(),
      layers: new Map(),
      objects: new Map(),
    });
    const from = `${base}${repositoryFolder(name)}`;
    return { from, to: `${from}\uffff` };
  });
  for await (const record of eachRecordInRanges(deps.vault, snapshot, ranges)) {
    const relative = record.key.slice(base.length);
    // A nested repository (team/app/sub) lies inside team/app's folder: the longest name owns a key.
    const name = names
      .filter((n) => relative.startsWith(repositoryFolder(n)))
      .sort((a, b) => b.length - a.length)
      .find((n) => relative.startsWith(`${repositoryFolder(n)}_`));
    const links = name === undefined ? undefined : byName.get(name);
    if (name === undefined || links === undefined) continue;
    const rest = relative.slice(repositoryFolder(name).length);
    const entry = { size: record.size, etag: record.etag, vaultKey: record.targetKey };
    const tag = TAG_CURRENT.exec(rest)?.[1];
    const history = TAG_INDEX.exec(rest);
    const revision = REVISION.exec(rest)?.[1];
    const layer = LAYER.exec(rest)?.[1];
    if (tag !== undefined) links.tags.set(tag, record.targetKey);
    else if (history?.[1] !== undefined) {
      const entries = links.tagHistory.get(history[1]) ?? [];
      entries.push({ digest: `sha256:${history[2]}`, vaultKey: record.targetKey, key: record.key });
      links.tagHistory.set(history[1], entries);
    } else if (revision !== undefined) links.revisions.set(`sha256:${revision}`, record.targetKey);
    else if (layer !== undefined) links.layers.set(`sha256:${layer}`, record.targetKey);
    else continue;
    links.objects.set(record.key, entry);
  }
  return byName;
}

/** What the selection of one repository needs: manifests (revisions), blobs (layers), tags, referrers. */
export interface Needed {
  readonly revisions: Set<string>;
  readonly layers: Set<string>;
  readonly tags: Set<string>;
  readonly referrers: Map<string, Set<string>>;
  /** Those the snapshot's fallback tag (`sha256-<hex>`) listed: a registry without the API lists only these. */
  readonly fallbackListed: Map<string, Set<string>>;
}

/** A manifest read from the vault: what it references (absent when it does not parse), its size and media type. */
export interface StoredManifest {
  readonly refs?: ManifestRefs;
  readonly size: number;
  readonly mediaType?: string;
}

/**
 * Reads manifests out of the vault's pool, each proven to hash to its
 * digest, parsed once: a corrupt or missing one stops the restore before it
 * writes anything.
 */
export function manifestReader(deps: WorkflowDeps, snapshot: SnapshotManifest) {
  const root = rootOf(deps.vault);
  const read = new Map<string, Promise<StoredManifest>>();
  return (digest: string): Promise<StoredManifest> => {
    let pending = read.get(digest);
    if (pending === undefined) {
      pending = (async () => {
        const key = vaultKeys.blob(root, digest);
        const bytes = await getBytes(deps.vault, key);
        if (bytes === undefined)
          throw new VaultError(
            `manifest ${digest} of snapshot ${snapshot.id} is missing in the vault (${key}); run \`regvault fsck --snapshot ${snapshot.id}\``,
          );
        if (`sha256:${sha256Hex(bytes)}` !== digest)
          throw new VaultError(
            `manifest ${digest} of snapshot ${snapshot.id} is corrupt in the vault (${key} hashes to sha256:${sha256Hex(bytes)}); run \`regvault fsck --deep --snapshot ${snapshot.id}\``,
          );
        const parsed = parseManifest(bytes);
        const mediaType = (JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown }).mediaType;
        return {
          ...(parsed.ok ? { refs: parsed.refs } : {}),
          size: bytes.length,
          ...(typeof mediaType === 'string' ? { mediaType } : {}),
        };
      })();
      read.set(digest, pending);
    }
    return pending;
  };
}

/**
 * What one repository's selection needs. The whole repository: every
 * revision, layer and tag it holds. Some tags: the manifests they reach
 * (index children too), their config and layers, and their referrers, found
 * both ways a registry keeps them: fallback tags (`sha256-<hex>`, cosign's
 * `.sig`/`.att`) and manifests whose `subject` is one of them, until no more
 * come. Referrers of restored manifests are noted for the verification,
 * from the fallback indexes and from `subject`.
 */
export async function neededBy(
  links: RepositoryLinks,
  repository: { tags: Record<string, string>; chosen: string[] },
  whole: boolean,
  manifestOf: (digest: string) => Promise<StoredManifest>,
): Promise<Needed> {
  const needed: Needed = {
    revisions: new Set(),
    layers: new Set(),
    tags: new Set(repository.chosen),
    referrers: new Map(),
    fallbackListed: new Map(),
  };
  const refer = (subject: string, referrer: string, map = needed.referrers) =>
    map.set(subject, (map.get(subject) ?? new Set()).add(referrer));
  if (whole) {
    for (const digest of links.revisions.keys()) needed.revisions.add(digest);
    for (const digest of links.layers.keys()) needed.layers.add(digest);
  } else {
    const queue = repository.chosen.flatMap((tag) => repository.tags[tag] ?? []);
    const scanned = new Set<string>();
    while (queue.length > 0) {
      while (queue.length > 0) {
        const digest = queue.pop() ?? '';
        if (needed.revisions.has(digest)) continue;
        needed.revisions.add(digest);
        const { refs } = await manifestOf(digest);
        for (const blob of refs?.blobs ?? [])
          if (!isForeignLayer(blob)) needed.layers.add(blob.digest);
        for (const child of refs?.children ?? []) queue.push(child.digest);
      }
      for (const [tag, digest] of Object.entries(repository.tags)) {
        const subject = fallbackSubjectOf(tag);
        if (subject === undefined || !needed.revisions.has(subject) || needed.tags.has(tag))
          continue;
        needed.tags.add(tag);
        queue.push(digest);
      }
      for (const digest of links.revisions.keys()) {
        if (needed.revisions.has(digest) || scanned.has(digest)) continue;
        const subject = (await manifestOf(digest)).refs?.subject;
        if (subject === undefined || !needed.revisions.has(subject)) continue;
        scanned.add(digest);
        refer(subject, digest);
        queue.push(digest);
      }
    }
  }
  // The referrers each restored fallback index lists (the `sha256-<hex>` tag without a suffix).
  for (const tag of needed.tags) {
    const subject = fallbackSubjectOf(tag);
    const digest = repository.tags[tag];
    if (subject === undefined || digest === undefined || tag !== fallbackTagOf(subject)) continue;
    for (const child of (await manifestOf(digest)).refs?.children ?? []) {
      refer(subject, child.digest);
      refer(subject, child.digest, needed.fallbackListed);
    }
  }
  return needed;
}

/**
 * A selection of a snapshot, read: its repositories and tags (bad input
 * when they are not in the snapshot), the snapshot's registry prefix, the
 * links of the selected repositories, and a reader of its manifests.
 */
export async function readSelection(
  deps: WorkflowDeps,
  snapshot: SnapshotManifest,
  request: { readonly repositories: readonly string[]; readonly tags?: readonly string[] },
) {
  const selected = select(
    snapshot,
    await catalogOf(deps, snapshot),
    request.repositories,
    request.tags,
  );
  const base = `${snapshot.source.prefix}${normaliseRoot(snapshot.source.rootDirectory)}${REGISTRY_V2}`;
  const links = await linksOf(
    deps,
    snapshot,
    base,
    selected.map((r) => r.name),
  );
  return { selected, base, links, manifestOf: manifestReader(deps, snapshot) };
}
