/**
 * A directory behind S3's protocol (functions/commons/s3/directory.ts) lists,
 * reads and writes as the sandbox's real S3 server does: the same keys put
 * into both give the same listings (order, delimiters the copy policies use,
 * pages, start-after), ranges, multipart uploads and deletes.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createS3Client } from '../../functions/commons/s3/client.ts';
import { DIRECTORY_BUCKET, directoryEndpoint } from '../../functions/commons/s3/directory.ts';
import { getObjectBytes } from '../../functions/commons/s3/get-object.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { serverWithBuckets } from '../support/s3.ts';

const BUCKET = 'directory-twin';
const KEYS = [
  'a-b',
  'a/b',
  'a0',
  'docker/registry/v2/blobs/sha256/ab/abcd/data',
  'docker/registry/v2/repositories/team/app/_layers/sha256/abcd/link',
  'docker/registry/v2/repositories/team/app/_manifests/tags/v1/current/link',
  'docker/registry/v2/repositories/team/app-2/_manifests/revisions/sha256/ef/link',
  'docker/registry/v2/repositories/team/app/sub/_layers/sha256/ff/link',
  'docker/registry/v2/repositories/zeta/_uploads/u1/data',
  'z\u00e9/x',
  'z\u{1f600}',
  'zz',
];

let s3: S3ServerHandle;
let bucketClient: S3Client;
let dirClient: S3Client;
let dir: string;

interface Listed {
  keys: string[];
  prefixes: string[];
  pages: number;
}

async function listEvery(
  client: S3Client,
  bucket: string,
  input: { Prefix?: string; Delimiter?: string; MaxKeys?: number; StartAfter?: string },
): Promise<Listed> {
  const found: Listed = { keys: [], prefixes: [], pages: 0 };
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        ...input,
        ...(token === undefined ? {} : { ContinuationToken: token }),
      }),
    );
    found.pages++;
    for (const item of page.Contents ?? []) found.keys.push(`${item.Key}:${item.Size}`);
    // The sandbox server can repeat a common prefix across pages (FACTS.md): count it once.
    for (const common of page.CommonPrefixes ?? [])
      if (found.prefixes.at(-1) !== common.Prefix) found.prefixes.push(common.Prefix ?? '');
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return found;
}

beforeAll(async () => {
  ({ server: s3, client: bucketClient } = await serverWithBuckets('s3-directory-twin', [BUCKET]));
  dir = await mkdtemp(join(tmpdir(), 'regvault-twin-'));
  dirClient = createS3Client(
    { endpoint: directoryEndpoint(dir), region: 'us-east-1', forcePathStyle: true },
    undefined,
  );
  for (const [index, key] of KEYS.entries()) {
    const body = Buffer.alloc(index + 1, key);
    await bucketClient.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: body }));
    await dirClient.send(new PutObjectCommand({ Bucket: DIRECTORY_BUCKET, Key: key, Body: body }));
  }
}, 60_000);

afterAll(async () => {
  bucketClient?.destroy();
  await s3?.stop();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
});

describe('a directory behind S3 protocol', () => {
  it.each([
    { name: 'everything, in key order', input: {} },
    { name: 'pages of two', input: { MaxKeys: 2 } },
    { name: 'a prefix that ends inside a name', input: { Prefix: 'a' } },
    { name: "the planner's '/' delimiter", input: { Delimiter: '/' } },
    {
      name: "a link pass's '/_' delimiter",
      input: { Prefix: 'docker/registry/v2/repositories/', Delimiter: '/_' },
    },
    {
      name: 'a rolled-up reserved directory, in pages of one',
      input: { Prefix: 'docker/registry/v2/repositories/', Delimiter: '/_layers/', MaxKeys: 1 },
    },
    { name: 'start-after inside a directory', input: { StartAfter: 'a/b' } },
    { name: 'start-after with a delimiter', input: { StartAfter: 'a/b', Delimiter: '/' } },
  ])('lists $name as the S3 server does', async ({ input }) => {
    // Act
    const [bucket, directory] = await Promise.all([
      listEvery(bucketClient, BUCKET, input),
      listEvery(dirClient, DIRECTORY_BUCKET, input),
    ]);
    // Assess
    expect(directory.keys).toEqual(bucket.keys);
    expect(directory.prefixes).toEqual(bucket.prefixes);
    expect(directory.keys.length + directory.prefixes.length).toBeGreaterThan(0);
  });

  it('reads ranges, joins multipart uploads in part order, copies with a SHA-256 and deletes, leaving no empty directories or internal files, and refuses keys a file system cannot hold', async () => {
    // Prepare
    const key = 'big/part/object';
    const parts = [Buffer.alloc(5, 'x'), Buffer.alloc(3, 'y')];
    const { UploadId } = await dirClient.send(
      new CreateMultipartUploadCommand({ Bucket: DIRECTORY_BUCKET, Key: key }),
    );
    const etags = [];
    for (const [index, body] of parts.entries())
      etags.push(
        (
          await dirClient.send(
            new UploadPartCommand({
              Bucket: DIRECTORY_BUCKET,
              Key: key,
              UploadId,
              PartNumber: index + 1,
              Body: body,
            }),
          )
        ).ETag,
      );
    // Act
    await dirClient.send(
      new CompleteMultipartUploadCommand({
        Bucket: DIRECTORY_BUCKET,
        Key: key,
        UploadId,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
    );
    const range = await getObjectBytes(dirClient, {
      Bucket: DIRECTORY_BUCKET,
      Key: key,
      Range: 'bytes=3-6',
    });
    const copy = await dirClient.send(
      new CopyObjectCommand({
        Bucket: DIRECTORY_BUCKET,
        Key: 'big/copy',
        CopySource: `${DIRECTORY_BUCKET}/${key}`,
        ChecksumAlgorithm: 'SHA256',
      }),
    );
    await dirClient.send(new DeleteObjectCommand({ Bucket: DIRECTORY_BUCKET, Key: key }));
    await dirClient.send(new DeleteObjectCommand({ Bucket: DIRECTORY_BUCKET, Key: 'big/copy' }));
    const missing = await dirClient
      .send(new DeleteObjectCommand({ Bucket: DIRECTORY_BUCKET, Key: '../escape' }))
      .catch((err: unknown) => err);
    // Assess
    expect(Buffer.from(range.body).toString()).toBe('xxyy');
    expect(copy.CopyObjectResult?.ChecksumSHA256).toBe(
      (await import('node:crypto')).createHash('sha256').update('xxxxxyyy').digest('base64'),
    );
    expect(await readdir(dir)).not.toContain('big');
    expect((await readdir(dir)).filter((name) => name.startsWith('.regvault-'))).toEqual([]);
    expect(missing).toMatchObject({ name: 'InvalidArgument' });
    expect(
      await dirClient
        .send(new PutObjectCommand({ Bucket: DIRECTORY_BUCKET, Key: 'a/b/c', Body: 'x' }))
        .catch((err: unknown) => String(err)),
    ).toContain('needs a directory where');
  });
});
