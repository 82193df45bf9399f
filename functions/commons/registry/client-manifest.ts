/**
 * Manifests as the registry API serves them: the media types the client
 * accepts, and a served manifest proven (its bytes hash to the digest it was
 * asked for) and parsed into what it references. Manifests are needed as
 * JSON, so they are the one thing the client reads whole, and only up to
 * MAX_MANIFEST_BYTES.
 *
 * registry/manifest.ts reads manifests out of storage for fsck; this reads
 * them off the wire, where every descriptor must carry a size to check.
 */
import { createHash } from 'node:crypto';
import { RegistryApiError } from './client-http.ts';

export const MANIFEST_TYPES = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
] as const;

/** Media types of manifests that list other manifests (an OCI index, a Docker manifest list). */
export const INDEX_TYPES = new Set<string>([MANIFEST_TYPES[0], MANIFEST_TYPES[2]]);

/** Manifests are read whole to parse them; a larger answer is refused rather than buffered. */
export const MAX_MANIFEST_BYTES = 4 * 1024 ** 2;

/** A content descriptor as manifests write it. */
export interface Descriptor {
  readonly mediaType?: string;
  readonly digest: string;
  readonly size: number;
  readonly urls?: readonly string[];
}

/** A manifest fetched by digest, its bytes proven to hash to it, and what it references. */
export interface FetchedManifest {
  readonly digest: string;
  readonly mediaType: string;
  readonly size: number;
  /** Child manifests (of an index or manifest list). */
  readonly manifests: readonly Descriptor[];
  /** Blobs the registry must serve under `/blobs/`: config and layers (foreign layers left out). */
  readonly blobs: readonly Descriptor[];
}

/** A hash of the digest's algorithm, or an error saying the digest cannot be checked. */
export function hasherFor(digest: string, what: string) {
  const algorithm = digest.slice(0, digest.indexOf(':'));
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new RegistryApiError(
      `${what}: digest ${digest} uses an algorithm regvault cannot check (sha256 and sha512 only)`,
    );
  }
  return { algorithm, hash: createHash(algorithm) };
}

const isDescriptor = (value: unknown): value is Descriptor =>
  typeof value === 'object' &&
  value !== null &&
  typeof (value as { digest?: unknown }).digest === 'string' &&
  typeof (value as { size?: unknown }).size === 'number';

/**
 * Non-distributable ("foreign") layers live at their `urls`, not in the
 * registry: a registry answers 404 for them by design.
 */
const isForeign = (blob: Descriptor): boolean =>
  (blob.urls?.length ?? 0) > 0 && /foreign|nondistributable/.test(blob.mediaType ?? '');

/** The child manifests and blobs a parsed manifest references, each descriptor checked for shape. */
export function referencesOf(
  document: unknown,
  what: string,
): { mediaType: string | undefined; manifests: Descriptor[]; blobs: Descriptor[] } {
  if (typeof document !== 'object' || document === null)
    throw new RegistryApiError(`${what}: the manifest is not a JSON object`);
  const parsed = document as {
    mediaType?: unknown;
    manifests?: unknown;
    config?: unknown;
    layers?: unknown;
    blobs?: unknown;
  };
  const list = (field: string, value: unknown): Descriptor[] => {
    if (value === undefined) return [];
    const items = Array.isArray(value) ? value : [value];
    for (const item of items) {
      if (!isDescriptor(item))
        throw new RegistryApiError(
          `${what}: the manifest's ${field} holds a descriptor without a digest and a size`,
        );
    }
    return items as Descriptor[];
  };
  return {
    mediaType: typeof parsed.mediaType === 'string' ? parsed.mediaType : undefined,
    manifests: list('manifests', parsed.manifests),
    // `blobs` is the OCI 1.1 artifact manifest's list.
    blobs: [
      ...list('config', parsed.config),
      ...list('layers', parsed.layers),
      ...list('blobs', parsed.blobs),
    ].filter((blob) => !isForeign(blob)),
  };
}

/** Reads a body whole, refusing (and cancelling) one larger than `limit` bytes. */
async function readCapped(response: Response, limit: number, what: string): Promise<Buffer> {
  const tooLarge = (size: string) =>
    new RegistryApiError(
      `${what}: the registry sent ${size} bytes, more than the ${limit} a manifest may have; it is not a manifest, or the registry is broken`,
    );
  const declared = Number(response.headers.get('content-length') ?? Number.NaN);
  if (declared > limit) {
    await response.body?.cancel();
    throw tooLarge(String(declared));
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of response.body ?? []) {
    total += chunk.byteLength;
    if (total > limit) throw tooLarge(`over ${limit}`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/**
 * Reads the manifest a successful GET by `digest` answered, proves its bytes
 * hash to the digest, and parses what it references. Refuses an answer over
 * MAX_MANIFEST_BYTES. `what` names the manifest in errors.
 */
export async function provenManifest(
  response: Response,
  digest: string,
  what: string,
): Promise<FetchedManifest> {
  const { algorithm, hash } = hasherFor(digest, what);
  const body = await readCapped(response, MAX_MANIFEST_BYTES, what);
  const actual = `${algorithm}:${hash.update(body).digest('hex')}`;
  if (actual !== digest) {
    throw new RegistryApiError(
      `${what}: the manifest served hashes to ${actual}; the stored data is corrupt`,
    );
  }
  let document: unknown;
  try {
    document = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new RegistryApiError(`${what}: the manifest is not JSON`, undefined, { cause: err });
  }
  const references = referencesOf(document, what);
  return {
    digest,
    mediaType: references.mediaType ?? response.headers.get('content-type') ?? '',
    size: body.length,
    manifests: references.manifests,
    blobs: references.blobs,
  };
}
