/**
 * Shared set-up for the integrity tests: a registry on the test's S3 server,
 * bucket copies, registry key lookups, a recording source.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { copySourceOf } from '../../functions/commons/copy/transfer.ts';
import type { RegistrySource } from '../../functions/commons/registry/fsck-sources.ts';
import { blobKeyOf, REGISTRY_V2 } from '../../functions/commons/registry/layout.ts';
import { type PopulatedRegistry, populateRegistry } from '../../sandbox/images/index.ts';
import { type RegistryHandle, startRegistry } from '../../sandbox/registry/index.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import {
  createBucket,
  deleteKeys,
  eachLimited,
  listAll,
  putObjects,
  readObject,
  storageOn,
} from '../support/s3.ts';

/**
 * A real registry keeping its data in a new bucket `bucket` of the test's S3
 * server, with `repositories` repositories of two multi-arch tags pushed
 * into it (layers of two sizes over a shared base layer). The registry is
 * stopped again when pushing fails, so a failed set-up leaves no process.
 */
export async function registryOnS3(
  s3: S3ServerHandle,
  client: S3Client,
  bucket: string,
  repositories: number,
): Promise<{ registry: RegistryHandle; images: PopulatedRegistry }> {
  await createBucket(client, bucket);
  const registry = await startRegistry({
    storage: { kind: 's3', ...storageOn(s3, bucket) },
  });
  try {
    const images = await populateRegistry(registry.host, {
      repositories,
      tagsPerRepository: 2,
      multiArch: true,
      layerSizes: [3000, 20_000],
      sharedBaseSize: 8000,
    });
    return { registry, images };
  } catch (err) {
    await registry.stop();
    throw err;
  }
}

/** Copies every object of `from` into a new bucket `to`. */
export async function copyBucket(client: S3Client, from: string, to: string): Promise<void> {
  await createBucket(client, to);
  const keys = [...(await listAll(client, from)).keys()];
  const objects = await Promise.all(
    keys.map(async (key) => ({ key, body: await readObject(client, from, key) })),
  );
  await putObjects(client, to, objects);
}

/**
 * Makes bucket `to` hold exactly what `from` holds, with server-side copies:
 * deletes what `from` lacks and copies only what `to` lacks or holds with
 * other bytes, so restoring a shared fixture after a test costs what the test changed.
 */
export async function mirrorBucket(client: S3Client, from: string, to: string): Promise<void> {
  const [wanted, held] = await Promise.all([listAll(client, from), listAll(client, to)]);
  await deleteKeys(
    client,
    to,
    [...held.keys()].filter((key) => !wanted.has(key)),
  );
  const stale = [...wanted.entries()].filter(([key, object]) => {
    const current = held.get(key);
    return current?.etag !== object.etag || current.size !== object.size;
  });
  await eachLimited(stale, 16, ([key]) =>
    client.send(
      new CopyObjectCommand({ Bucket: to, Key: key, CopySource: copySourceOf(from, key) }),
    ),
  );
}

export const registryKey = (relative: string) => `${REGISTRY_V2}${relative}`;

export async function put(
  client: S3Client,
  bucket: string,
  key: string,
  body: Uint8Array | string,
): Promise<void> {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  await client.send(
    new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: bytes,
      ContentLength: bytes.byteLength,
    }),
  );
}

export async function remove(client: S3Client, bucket: string, key: string): Promise<void> {
  await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
}

/** Random bytes and their digest. */
export function randomBlob(size = 1000): { bytes: Buffer; digest: string } {
  const bytes = randomBytes(size);
  return { bytes, digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` };
}

/** Puts a well-formed blob no manifest names at its registry key; returns its digest. */
export async function putOrphanBlob(
  client: S3Client,
  bucket: string,
  size = 1000,
): Promise<string> {
  const blob = randomBlob(size);
  await put(client, bucket, registryKey(blobKeyOf(blob.digest)), blob.bytes);
  return blob.digest;
}

/** Wraps a source and records every key read (through `read` or `open`). */
export function recording(source: RegistrySource): { source: RegistrySource; reads: string[] } {
  const reads: string[] = [];
  return {
    reads,
    source: {
      list: () => source.list(),
      read: async (key) => {
        reads.push(key);
        return source.read(key);
      },
      ...(source.open === undefined
        ? {}
        : {
            open: async (key: string) => {
              reads.push(key);
              return source.open?.(key);
            },
          }),
    },
  };
}
