/**
 * Where fsck reads a registry layout from: the source interface, and its
 * three kinds (a live bucket, inventory records held in memory, a snapshot
 * in the vault read through its inventory), plus the check that the vault
 * still holds what an inventory promises. Keys are relative to
 * `docker/registry/v2/`. See docs/integrity.md.
 */
import { createHash } from 'node:crypto';
import {
  GetObjectCommand,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { cleanEtag } from '../copy/model.ts';
import { getObjectBytes, resumableBody } from '../s3/get-object.ts';
import { normaliseRoot, REGISTRY_V2 } from './layout.ts';

/** One object of a registry layout, its key relative to `docker/registry/v2/`. */
export interface RegistryObject {
  readonly key: string;
  readonly size: number;
  /**
   * The store's ETag of the object, from a listing of the store itself (not
   * an inventory's record of another copy): the MD5 of a single-part object's
   * bytes, so it proves a link's small, known content without a read.
   */
  readonly etag?: string;
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

/** The sha256 digest of an object, streamed when the source can; undefined when it does not exist. */
export async function sha256Of(source: RegistrySource, key: string): Promise<string | undefined> {
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

/** The registry data prefix under a driver root directory (`<root>/docker/registry/v2/`), tolerant of a root that already ends there. */
export function registryBase(rootPrefix: string): string {
  const root = normaliseRoot(rootPrefix);
  return root.endsWith(REGISTRY_V2) ? root : `${root}${REGISTRY_V2}`;
}

function isMissing(err: unknown): boolean {
  const name = typeof err === 'object' && err !== null && 'name' in err ? String(err.name) : '';
  return name === 'NoSuchKey' || name === 'NotFound';
}

/** Reads and streams objects of one bucket; `undefined` for a key that does not exist. */
export function objectReader(client: S3Client, bucket: string) {
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
      // A body cut mid-stream is read again (s3/retry.ts).
      try {
        const { body } = await getObjectBytes(client, { Bucket: bucket, Key: key });
        return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
      } catch (err) {
        if (isMissing(err)) return undefined;
        throw err;
      }
    },
    async open(key: string): Promise<AsyncIterable<Uint8Array> | undefined> {
      const response = await get(key);
      if (response === undefined) return undefined;
      // A body cut while it is hashed goes on from the byte reached (s3/get-object.ts).
      return resumableBody(client, { Bucket: bucket, Key: key }, response);
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
          if (key.startsWith(base))
            yield {
              key: key.slice(base.length),
              size: item.Size ?? 0,
              ...(item.ETag === undefined ? {} : { etag: cleanEtag(item.ETag) }),
            };
        }
        token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
      } while (token !== undefined);
    },
    read: (key) => objects.read(`${base}${key}`),
    open: (key) => objects.open(`${base}${key}`),
  };
}
