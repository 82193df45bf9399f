/**
 * Full pulls: every manifest of an image and every blob, each blob streamed
 * and hashed chunk by chunk and checked against its digest and size. Nothing
 * is kept, so a 5 GiB layer costs the same memory as a 5 KiB one.
 * RegistryClient.pull is the entry; this is its work.
 */
import PQueue from 'p-queue';
import type { RegistryClient } from './client.ts';
import { RegistryApiError, type RegistryHttp } from './client-http.ts';
import { type Descriptor, hasherFor, INDEX_TYPES } from './client-manifest.ts';

export interface PulledImage {
  readonly digest: string;
  readonly mediaType: string;
  /** Every blob and child manifest of the image, once each, with its verified size. */
  readonly blobs: ReadonlyArray<{ digest: string; size: number }>;
  /** Bytes of the image's config and layers (each proven by its sha256). */
  readonly bytes: number;
}

export interface PullOptions {
  /** Blob streams of this pull at once when no `limit` is given (default 4). */
  readonly concurrency?: number;
  /** Runs each blob fetch: one limiter shared by several pulls bounds their streams together. */
  readonly limit?: <T>(task: () => Promise<T>) => Promise<T>;
  /**
   * Blob verifications shared between pulls, by digest and size: a blob several
   * images use is streamed and hashed once (a registry stores it once).
   */
  readonly verified?: Map<string, Promise<void>>;
  /** Bytes as they stream in, for progress. */
  readonly onBytes?: (bytes: number) => void;
}

/**
 * Streams one blob and proves it: the bytes hash to its digest and number
 * exactly its size. Reading stops once more bytes arrive than the size
 * allows. The client's timeout is for silence (no bytes for that long), not
 * for the whole transfer, so a large blob on a slow link still completes.
 */
export async function verifyBlob(
  client: RegistryHttp,
  repository: string,
  blob: Descriptor,
  onBytes?: (bytes: number) => void,
): Promise<void> {
  const what = `${repository}@${blob.digest}`;
  const path = `/v2/${repository}/blobs/${blob.digest}`;
  const { algorithm, hash } = hasherFor(blob.digest, what);
  const idle = new AbortController();
  const timer = setTimeout(
    () => idle.abort(new Error(`no data for ${client.timeoutMs} ms`)),
    client.timeoutMs,
  );
  let bytes = 0;
  try {
    const response = await client.getOk(path, {
      scope: `repository:${repository}:pull`,
      signal: idle.signal,
    });
    try {
      for await (const chunk of response.body ?? []) {
        timer.refresh();
        bytes += chunk.byteLength;
        onBytes?.(chunk.byteLength);
        // Leaving the loop cancels the stream: a wrong blob is not read to its end.
        if (bytes > blob.size) break;
        hash.update(chunk);
      }
    } catch (err) {
      throw new RegistryApiError(
        `${what}: reading the blob stopped after ${bytes} of ${blob.size} bytes: ${err instanceof Error ? err.message : String(err)}`,
        undefined,
        { cause: err },
      );
    }
  } finally {
    clearTimeout(timer);
  }
  if (bytes > blob.size) {
    throw new RegistryApiError(
      `${what}: the registry sent more than the ${blob.size} bytes the manifest says; the stored data is corrupt`,
    );
  }
  const actual = `${algorithm}:${hash.digest('hex')}`;
  if (actual !== blob.digest || bytes !== blob.size) {
    throw new RegistryApiError(
      `${what}: the ${bytes} bytes served hash to ${actual}, the manifest says ${blob.size} bytes of ${blob.digest}; the stored data is corrupt`,
    );
  }
}

/**
 * Pulls an image completely: every manifest (index children too) and every
 * blob, streamed and checked against its digest and size, several blobs at
 * once. All blobs are tried; the first failure (in manifest order) is thrown,
 * saying how many others failed.
 */
export async function pullImage(
  client: RegistryClient,
  repository: string,
  reference: string,
  options: PullOptions = {},
): Promise<PulledImage> {
  const digest = reference.includes(':')
    ? reference
    : await client.manifestDigest(repository, reference);
  if (digest === undefined)
    throw new RegistryApiError(`${repository}:${reference} has no manifest`, 404);
  // Entries in the order the image lists them: an index's children each after their blobs.
  const entries = new Map<string, { digest: string; size: number; blob: boolean }>();
  const visit = async (manifestDigest: string): Promise<string> => {
    const manifest = await client.manifest(repository, manifestDigest);
    const isIndex = INDEX_TYPES.has(manifest.mediaType) || manifest.manifests.length > 0;
    if (isIndex) {
      for (const child of manifest.manifests) {
        if (entries.has(child.digest)) continue;
        await visit(child.digest);
        entries.set(child.digest, { digest: child.digest, size: child.size, blob: false });
      }
    }
    for (const blob of manifest.blobs) {
      const key = `${blob.digest} ${blob.size}`;
      if (!entries.has(key)) entries.set(key, { digest: blob.digest, size: blob.size, blob: true });
    }
    return manifest.mediaType;
  };
  const mediaType = await visit(digest);
  const blobs = [...entries.values()].filter((entry) => entry.blob);
  let limit = options.limit;
  if (limit === undefined) {
    const queue = new PQueue({ concurrency: options.concurrency ?? 4 });
    limit = (task) => queue.add(task);
  }
  const run = limit;
  const outcomes = await Promise.allSettled(
    blobs.map((blob) => {
      const key = `${blob.digest} ${blob.size}`;
      const known = options.verified?.get(key);
      if (known !== undefined) return known;
      const verification = run(() => verifyBlob(client, repository, blob, options.onBytes));
      options.verified?.set(key, verification);
      return verification;
    }),
  );
  const failures = outcomes.flatMap((outcome) =>
    outcome.status === 'rejected' ? [outcome.reason as unknown] : [],
  );
  if (failures[0] !== undefined) {
    if (failures.length === 1) throw failures[0];
    const first = failures[0] instanceof Error ? failures[0].message : String(failures[0]);
    throw new RegistryApiError(
      `${first} (and ${failures.length - 1} more blobs failed)`,
      undefined,
      {
        cause: failures[0],
      },
    );
  }
  return {
    digest,
    mediaType,
    blobs: [...entries.values()].map(({ digest: d, size }) => ({ digest: d, size })),
    bytes: blobs.reduce((sum, blob) => sum + blob.size, 0),
  };
}
