/** Small S3 helpers for tests: a client for a sandbox server, seeding and reading buckets. */
import {
  CopyObjectCommand,
  CreateBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import type { Location } from '../../functions/commons/copy/model.ts';
import { copySourceOf } from '../../functions/commons/copy/transfer.ts';
import { createLocalDeps, type LocalDepsOptions } from '../../functions/commons/local/deps.ts';
import { createS3Client } from '../../functions/commons/s3/client.ts';
import { type S3ServerOptions, startS3Server } from '../../sandbox/s3/index.ts';

export interface S3Endpointish {
  readonly endpoint: string;
  readonly region: string;
  readonly credentials: { accessKeyId: string; secretAccessKey: string };
}

/** A client for a sandbox server; `maxAttempts: 1` when a test wants to see raw errors. */
export function clientFor(server: S3Endpointish, maxAttempts = 6): S3Client {
  return createS3Client(
    { endpoint: server.endpoint, region: server.region, forcePathStyle: true },
    server.credentials,
    {
      maxAttempts,
    },
  );
}

/** A location on a sandbox server. */
export function locationOn(
  server: S3Endpointish,
  bucket: string,
  prefix = '',
  access = 'sandbox',
): Location {
  return {
    endpoint: server.endpoint,
    region: server.region,
    bucket,
    prefix,
    forcePathStyle: true,
    access,
  };
}

/** A registry's storage on a sandbox server, reached with the server's keys (what a fake cluster's Secret holds). */
export function storageOn(server: S3Endpointish, bucket: string) {
  return {
    bucket,
    endpoint: server.endpoint,
    region: server.region,
    accessKey: server.credentials.accessKeyId,
    secretKey: server.credentials.secretAccessKey,
  };
}

export async function createBucket(client: S3Client, bucket: string): Promise<void> {
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
}

/** Runs `task` on every item, at most `concurrency` at a time. */
export async function eachLimited<T>(
  items: readonly T[],
  concurrency: number,
  task: (item: T) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (let item = items[next++]; item !== undefined; item = items[next++]) await task(item);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/** Puts objects with limited concurrency. */
export async function putObjects(
  client: S3Client,
  bucket: string,
  objects: ReadonlyArray<{ key: string; body: string | Uint8Array }>,
  concurrency = 16,
): Promise<void> {
  await eachLimited(objects, concurrency, (object) =>
    client.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: object.key,
        Body: object.body,
        ContentLength:
          typeof object.body === 'string' ? Buffer.byteLength(object.body) : object.body.byteLength,
      }),
    ),
  );
}

/** Every key with its size and ETag. */
export async function listAll(
  client: S3Client,
  bucket: string,
  prefix = '',
): Promise<Map<string, { size: number; etag: string }>> {
  const found = new Map<string, { size: number; etag: string }>();
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        Prefix: prefix,
        ...(token === undefined ? {} : { ContinuationToken: token }),
      }),
    );
    for (const item of page.Contents ?? [])
      found.set(item.Key ?? '', { size: item.Size ?? 0, etag: item.ETag ?? '' });
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return found;
}

/** Deletes the keys, 1,000 to a request. */
export async function deleteKeys(
  client: S3Client,
  bucket: string,
  keys: readonly string[],
): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    await client.send(
      new DeleteObjectsCommand({
        Bucket: bucket,
        Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) },
      }),
    );
  }
}

/** Copies every object of `from` into the existing bucket `to` server-side, so a test can change a copy of shared state. */
export async function copyAllObjects(client: S3Client, from: string, to: string): Promise<void> {
  const keys = [...(await listAll(client, from)).keys()];
  await eachLimited(keys, 16, (key) =>
    client.send(
      new CopyObjectCommand({ Bucket: to, Key: key, CopySource: copySourceOf(from, key) }),
    ),
  );
}

export async function readObject(client: S3Client, bucket: string, key: string): Promise<Buffer> {
  const response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from((await response.Body?.transformToByteArray()) ?? new Uint8Array());
}

/** Local workflow dependencies with the vault at `prefix` of `bucket` on a sandbox server, its keys the server's. */
export function vaultDeps(
  server: S3Endpointish,
  bucket: string,
  prefix: string,
  more: Omit<LocalDepsOptions, 'vault'> = {},
) {
  return createLocalDeps({
    vault: {
      location: locationOn(server, bucket, prefix, 'vault'),
      credentials: server.credentials,
    },
    ...more,
  });
}

/** A sandbox S3 server named `name` holding these (empty) buckets, and a client for it. */
export async function serverWithBuckets(
  name: string,
  buckets: readonly string[],
  options: S3ServerOptions = {},
) {
  const server = await startS3Server({ name, ...options });
  const client = clientFor(server);
  for (const bucket of buckets) await createBucket(client, bucket);
  return { server, client };
}
