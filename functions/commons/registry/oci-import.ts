/**
 * Importing an OCI image layout (what `regvault export` writes, or any
 * layout whose index.json names `<repository>:<tag>`) into a registry
 * through its API, as a push does: for each entry, its blobs (unless the
 * repository already serves them), its child manifests, then the manifest
 * under its tag. Every manifest read from the layout is proven against its
 * digest; blobs are streamed, and the registry checks their digests.
 */
import { createHash } from 'node:crypto';
import { InputError } from '../errors.ts';
import type { RegistryClient } from './client.ts';
import { MANIFEST_TYPES, referencesOf } from './client-manifest.ts';
import { putManifest, uploadBlob } from './client-push.ts';

/** The annotation naming an entry of index.json (OCI image layout): `<repository>:<tag>` here. */
export const REF_NAME = 'org.opencontainers.image.ref.name';
/** The repository of an entry that has no tag (a referrer known only by its subject). */
export const REPOSITORY_ANNOTATION = 'dev.regvault.repository';

/** An OCI image layout to read: a folder, a tar file. Paths are relative (`index.json`, `blobs/sha256/<hex>`). */
export interface LayoutSource {
  read(path: string): Promise<Buffer>;
  /** A blob's bytes as a stream, and its size. */
  open(path: string): Promise<{ size: number; body: ReadableStream<Uint8Array> }>;
}

export interface ImportResult {
  /** `repository:tag` of every entry pushed under a tag. */
  readonly refs: readonly string[];
  readonly manifests: number;
  readonly blobsUploaded: number;
  /** Blobs the repository already served: not uploaded again. */
  readonly blobsPresent: number;
  readonly bytesUploaded: number;
}

const blobPath = (digest: string) => `blobs/sha256/${digest.replace(/^sha256:/, '')}`;

/** Where an index.json entry goes: its repository and tag (none for an untagged referrer). */
function targetOf(
  annotations: Record<string, string> | undefined,
  repository: string | undefined,
  index: number,
): { repository: string; tag?: string } {
  const ref = annotations?.[REF_NAME];
  const colon = ref?.lastIndexOf(':') ?? -1;
  if (ref !== undefined && colon > 0)
    return { repository: repository ?? ref.slice(0, colon), tag: ref.slice(colon + 1) };
  if (ref !== undefined && repository !== undefined) return { repository, tag: ref };
  const named = annotations?.[REPOSITORY_ANNOTATION] ?? repository;
  if (named !== undefined) return { repository: named };
  throw new InputError('the layout does not say where its images go', [
    `repository: entry ${index} of index.json is named ${JSON.stringify(ref ?? null)}, not <repository>:<tag>; name the repository to import into`,
  ]);
}

/**
 * Pushes every entry of the layout's index.json into the registry; with
 * `repository`, every entry goes there (a layout whose names are bare tags).
 */
export async function importLayout(
  client: RegistryClient,
  source: LayoutSource,
  options: { readonly repository?: string } = {},
): Promise<ImportResult> {
  const index = JSON.parse((await source.read('index.json')).toString('utf8')) as {
    manifests?: Array<{ digest: string; mediaType?: string; annotations?: Record<string, string> }>;
  };
  const result = {
    refs: [] as string[],
    manifests: 0,
    blobsUploaded: 0,
    blobsPresent: 0,
    bytesUploaded: 0,
  };
  const blobsDone = new Set<string>();
  const manifestsDone = new Set<string>();
  const ensureBlob = async (repository: string, digest: string) => {
    const id = `${repository}@${digest}`;
    if (blobsDone.has(id)) return;
    blobsDone.add(id);
    if ((await client.blobStatus(repository, digest)).served) {
      result.blobsPresent++;
      return;
    }
    const { size, body } = await source.open(blobPath(digest));
    await uploadBlob(client, repository, digest, body, size);
    result.blobsUploaded++;
    result.bytesUploaded += size;
  };
  /** Pushes a manifest and all it needs (children first), under `reference`. */
  const push = async (repository: string, digest: string, reference: string): Promise<void> => {
    const id = `${repository}@${digest}`;
    const bytes = await source.read(blobPath(digest));
    const actual = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (actual !== digest)
      throw new InputError('the layout is damaged', [
        `from: ${blobPath(digest)} hashes to ${actual}, not its name; export it again`,
      ]);
    const document = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown };
    const refs = referencesOf(document, id);
    if (!manifestsDone.has(id)) {
      for (const blob of refs.blobs) await ensureBlob(repository, blob.digest);
      for (const child of refs.manifests) await push(repository, child.digest, child.digest);
    }
    manifestsDone.add(id);
    const mediaType =
      typeof document.mediaType === 'string' ? document.mediaType : MANIFEST_TYPES[1];
    await putManifest(client, repository, reference, mediaType, bytes);
    result.manifests++;
  };
  for (const [i, entry] of (index.manifests ?? []).entries()) {
    const target = targetOf(entry.annotations, options.repository, i);
    await push(target.repository, entry.digest, target.tag ?? entry.digest);
    if (target.tag !== undefined) result.refs.push(`${target.repository}:${target.tag}`);
  }
  return result;
}
