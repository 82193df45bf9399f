/**
 * Exporting repositories of a snapshot as an OCI image layout, for a site
 * with no way to the vault: `oci-layout`, `index.json` with one entry per
 * tag (annotated `org.opencontainers.image.ref.name: <repository>:<tag>`)
 * and `blobs/sha256/<hex>`, every blob streamed from the vault through its
 * digest. What to take is chosen as a selective restore chooses it
 * (selective.ts): the tags' manifests, index children, configs, layers and
 * referrers. Where the bytes go (a folder, a tar file) is the caller's sink.
 */
import { createHash } from 'node:crypto';
import { InputError, VaultError } from '../errors.ts';
import { objectReader } from '../registry/fsck-sources.ts';
import { REF_NAME, REPOSITORY_ANNOTATION } from '../registry/oci-import.ts';
import { headObject } from '../s3/get-object.ts';
import type { SnapshotManifest } from '../vault/format.ts';
import { vaultKeys } from '../vault/format.ts';
import { rootOf } from '../vault/store.ts';
import type { WorkflowDeps } from './deps.ts';
import { neededBy, readSelection } from './selective-read.ts';

/** Where an exported layout's files go, in order: every blob, then `oci-layout` and `index.json`. */
export interface LayoutSink {
  /** Writes `blobs/sha256/<hex>`; `body` throws at its end when the bytes are not the digest's. */
  blob(digest: string, size: number, body: AsyncIterable<Uint8Array>): Promise<void>;
  /** Writes a file at the layout's top (`oci-layout`, then `index.json`, last). */
  file(name: string, bytes: Buffer): Promise<void>;
}

export interface ExportRequest {
  readonly snapshot: SnapshotManifest;
  /** Repository names or globs. */
  readonly repositories: readonly string[];
  /** Tag names or globs; every tag when absent. */
  readonly tags?: readonly string[];
}

export interface ExportResult {
  readonly snapshotId: string;
  readonly repositories: readonly string[];
  /** `repository:tag` of every index.json entry. */
  readonly refs: readonly string[];
  readonly blobs: number;
  readonly bytes: number;
}

/** The body of a vault blob, checked against its digest and size as it streams. */
async function* checked(
  body: AsyncIterable<Uint8Array>,
  digest: string,
  size: number,
  where: string,
): AsyncGenerator<Uint8Array> {
  const hash = createHash('sha256');
  let read = 0;
  for await (const chunk of body) {
    hash.update(chunk);
    read += chunk.byteLength;
    yield chunk;
  }
  const actual = `sha256:${hash.digest('hex')}`;
  if (actual !== digest || read !== size)
    throw new VaultError(
      `blob ${digest} is corrupt in the vault (${where} holds ${read} bytes hashing to ${actual}); nothing of it was kept. Run \`regvault fsck --deep\` on the snapshot, or export an older one`,
    );
}

/**
 * Writes the selected repositories (and tags) of a snapshot into `sink` as
 * an OCI image layout; bad input (a repository or tag the snapshot does not
 * hold) is found before the first write.
 */
export async function exportLayout(
  request: ExportRequest,
  deps: WorkflowDeps,
  sink: LayoutSink,
  onBlob?: (done: { blobs: number; bytes: number }) => void,
): Promise<ExportResult> {
  const { snapshot } = request;
  if (snapshot.layout === 'quay')
    throw new InputError('a quay snapshot cannot be exported as an OCI image layout', [
      `snapshot: ${snapshot.id} holds Quay's layout, whose manifests and tags are in its database dump, not in the vault's objects; restore it whole with the quay profile`,
    ]);
  const { selected, links, manifestOf } = await readSelection(deps, snapshot, request);
  const entries: Array<{ digest: string; annotations: Record<string, string> }> = [];
  const blobs = new Set<string>();
  for (const repository of selected) {
    const held = links.get(repository.name);
    if (held === undefined) continue;
    const needed = await neededBy(held, repository, false, manifestOf);
    for (const digest of [...needed.revisions, ...needed.layers]) blobs.add(digest);
    const tagged = new Set<string>();
    for (const tag of [...needed.tags].sort()) {
      const digest = repository.tags[tag];
      if (digest === undefined) continue;
      tagged.add(digest);
      entries.push({ digest, annotations: { [REF_NAME]: `${repository.name}:${tag}` } });
    }
    // Referrers no tag reaches (known by their subject): entries of their own, or import would miss them.
    for (const by of needed.referrers.values())
      for (const digest of by)
        if (!tagged.has(digest))
          entries.push({ digest, annotations: { [REPOSITORY_ANNOTATION]: repository.name } });
  }
  const root = rootOf(deps.vault);
  const reader = objectReader(deps.vault.client, deps.vault.location.bucket);
  let bytes = 0;
  let done = 0;
  for (const digest of [...blobs].sort()) {
    const key = vaultKeys.blob(root, digest);
    const head = await headObject(deps.vault.client, deps.vault.location.bucket, key);
    const body = head === undefined ? undefined : await reader.open(key);
    if (head === undefined || body === undefined)
      throw new VaultError(
        `blob ${digest} is missing in the vault (${key}); run \`regvault fsck --snapshot ${snapshot.id}\``,
      );
    const { size } = head;
    await sink.blob(digest, size, checked(body, digest, size, key));
    bytes += size;
    done++;
    onBlob?.({ blobs: done, bytes });
  }
  const descriptors = await Promise.all(
    entries.map(async ({ digest, annotations }) => {
      const stored = await manifestOf(digest);
      return {
        mediaType: stored.mediaType ?? 'application/vnd.oci.image.manifest.v1+json',
        digest,
        size: stored.size,
        annotations,
      };
    }),
  );
  await sink.file('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
  await sink.file(
    'index.json',
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: descriptors,
      }),
    ),
  );
  return {
    snapshotId: snapshot.id,
    repositories: selected.map((r) => r.name),
    refs: entries.flatMap((e) => e.annotations[REF_NAME] ?? []),
    blobs: done,
    bytes,
  };
}
