import {
  CreateMultipartUploadCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsCommand,
  ListObjectsV2Command,
  ListPartsCommand,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { compareKeys, sortKeys } from '../../functions/commons/copy/model.ts';
import { portInUse } from '../../sandbox/process.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, putObjects, readObject } from '../support/s3.ts';

let server: S3ServerHandle;
let client: S3Client;
const bucket = 'sandbox-checks';

beforeAll(async () => {
  server = await startS3Server({ name: 's3-sandbox-checks' });
  client = clientFor(server, 1);
  await createBucket(client, bucket);
});

afterAll(async () => {
  client?.destroy();
  await server?.stop();
});

async function startUpload(
  key: string,
  parts: number,
): Promise<{ uploadId: string; etags: string[] }> {
  const created = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
  const uploadId = created.UploadId ?? '';
  const etags: string[] = [];
  for (let part = 1; part <= parts; part += 1) {
    const body = Buffer.alloc(part === parts ? 100 : 5 * 1024 * 1024, part);
    const uploaded = await client.send(
      new UploadPartCommand({
        Bucket: bucket,
        Key: key,
        UploadId: uploadId,
        PartNumber: part,
        Body: body,
      }),
    );
    etags.push(uploaded.ETag ?? '');
  }
  return { uploadId, etags };
}

describe('the sandbox S3 server', () => {
  it('lists multipart uploads in flight and their parts, as Docker Distribution needs to push', async () => {
    // Prepare
    const { uploadId, etags } = await startUpload(
      'docker/registry/v2/repositories/app/_uploads/u1/data',
      2,
    );
    // Act
    const uploads = await client.send(
      new ListMultipartUploadsCommand({
        Bucket: bucket,
        Prefix: 'docker/registry/v2/repositories/app/',
      }),
    );
    const parts = await client.send(
      new ListPartsCommand({
        Bucket: bucket,
        Key: 'docker/registry/v2/repositories/app/_uploads/u1/data',
        UploadId: uploadId,
      }),
    );
    // Assess
    expect(uploads.Uploads?.map((upload) => [upload.Key, upload.UploadId])).toEqual([
      ['docker/registry/v2/repositories/app/_uploads/u1/data', uploadId],
    ]);
    expect(parts.Parts?.map((part) => [part.PartNumber, part.ETag, part.Size])).toEqual([
      [1, etags[0], 5 * 1024 * 1024],
      [2, etags[1], 100],
    ]);
  });

  it('answers NoSuchUpload for the parts of an unknown upload', async () => {
    // Act
    const attempt = client.send(
      new ListPartsCommand({ Bucket: bucket, Key: 'nothing', UploadId: 'no-such-upload' }),
    );
    // Assess
    await expect(attempt).rejects.toMatchObject({
      name: 'NoSuchUpload',
      $metadata: { httpStatusCode: 404 },
    });
  });

  it('completes an upload whose part ETags are quoted as &#34;, the way Go encodes them', async () => {
    // Prepare
    const key = 'go-client/object';
    const { uploadId, etags } = await startUpload(key, 2);
    const body = [
      '<CompleteMultipartUpload>',
      ...etags.map(
        (etag, index) =>
          `<Part><PartNumber>${index + 1}</PartNumber><ETag>${etag.replaceAll('"', '&#34;')}</ETag></Part>`,
      ),
      '</CompleteMultipartUpload>',
    ].join('');
    // Act
    const response = await fetch(`${server.endpoint}/${bucket}/${key}?uploadId=${uploadId}`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/xml' },
    });
    // Assess
    expect(response.status).toBe(200);
    expect(await response.text()).toContain('<ETag>');
    expect((await readObject(client, bucket, key)).length).toBe(5 * 1024 * 1024 + 100);
  });

  it('counts requests per operation, faulted ones included, and resets the counts', async () => {
    // Prepare
    await putObjects(client, bucket, [{ key: 'counted/a', body: 'a' }]);
    await server.resetCounters();
    await server.injectFaults({
      operation: 'GetObject',
      status: 503,
      code: 'SlowDown',
      count: 1,
      keyPrefix: 'counted/',
    });
    // Act
    const first = client.send(new GetObjectCommand({ Bucket: bucket, Key: 'counted/a' }));
    await expect(first).rejects.toMatchObject({
      name: 'SlowDown',
      $metadata: { httpStatusCode: 503 },
    });
    const second = await readObject(client, bucket, 'counted/a');
    const counted = await server.counters();
    await server.resetCounters();
    // Assess
    expect(second.toString()).toBe('a');
    expect(counted).toEqual({ GetObject: 2 });
    expect(await server.counters()).toEqual({});
  });

  it('faults only the keys and operations a rule names', async () => {
    // Prepare
    await putObjects(client, bucket, [
      { key: 'faulted/x', body: 'x' },
      { key: 'healthy/y', body: 'y' },
    ]);
    await server.injectFaults({
      operation: 'GetObject',
      status: 403,
      code: 'AccessDenied',
      count: 5,
      keyPrefix: 'faulted/',
    });
    // Act
    const healthy = await readObject(client, bucket, 'healthy/y');
    const faulted = client.send(new GetObjectCommand({ Bucket: bucket, Key: 'faulted/x' }));
    // Assess
    expect(healthy.toString()).toBe('y');
    await expect(faulted).rejects.toMatchObject({ name: 'AccessDenied' });
    await server.clearFaults();
    expect((await readObject(client, bucket, 'faulted/x')).toString()).toBe('x');
  });

  it('serves SQS on the same endpoint', async () => {
    // Prepare
    const { CreateQueueCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } =
      await import('@aws-sdk/client-sqs');
    const sqs = new SQSClient({
      endpoint: server.endpoint,
      region: server.region,
      credentials: server.credentials,
    });
    // Act
    const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: 'sandbox-check' }));
    await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: 'hello' }));
    const received = await sqs.send(new ReceiveMessageCommand({ QueueUrl, WaitTimeSeconds: 1 }));
    sqs.destroy();
    // Assess
    expect(received.Messages?.map((message) => message.Body)).toEqual(['hello']);
  });

  it('leaves nothing listening once stopped', async () => {
    // Prepare
    const extra = await startS3Server({ name: 's3-stopped' });
    expect(await portInUse(extra.port)).toBe(true);
    // Act
    await extra.stop();
    // Assess
    expect(await portInUse(extra.port)).toBe(false);
    expect(extra.process.running()).toBe(false);
  });

  // The server sorts a bucket's keys natively when none holds a code unit at
  // or above U+D800 (sortKeys), and through compareKeys when one does: a
  // bucket of each.
  it.each([
    ['below U+D800 only', 'order-plain', ['a', 'B', '+', '0', 'é', '\u00ff', 'ab', 'a+']],
    ['beyond U+FFFF and near it', 'order-high', ['a', 'B', '+', '0', 'é', '\u{1F600}', '\uFFFD']],
  ])(
    'lists keys in UTF-8 byte order, as S3 does, not in locale order (%s)',
    async (_name, name, names) => {
      // Prepare
      const keys = names.map((n) => `order/${n}`);
      await createBucket(client, name);
      await putObjects(
        client,
        name,
        keys.map((key) => ({ key, body: key })),
      );
      // Act
      const page = await client.send(new ListObjectsV2Command({ Bucket: name, Prefix: 'order/' }));
      // Assess
      const listed = (page.Contents ?? []).map((item) => item.Key);
      const bytewise = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
      expect(listed).toEqual(bytewise);
      expect(listed.slice(0, 4)).toEqual(['order/+', 'order/0', 'order/B', 'order/a']);
    },
  );

  it('sorts keys as compareKeys orders them, natively where the two orders agree', () => {
    // Prepare
    const plain = ['b/2', 'a', 'B', '+', 'é', 'a/b', 'a+', '\u00ff', '\u07ff', '\u0800'];
    const high = [...plain, '\u{1F600}', '\uFFFD', '\uE000', '\uD7FF'];
    // Act and Assess
    for (const keys of [plain, high]) {
      const bytewise = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
      expect(sortKeys([...keys])).toEqual(bytewise);
      expect([...keys].sort(compareKeys)).toEqual(bytewise);
    }
    expect(compareKeys('\u{1F600}', '\uFFFD')).toBeGreaterThan(0);
  });

  it.each([
    ['ListObjectsV2', 2],
    ['ListObjects', 1],
  ] as const)(
    'pages a delimiter listing through %s without repeating or losing an entry',
    async (_name, version) => {
      // Prepare: objects and common prefixes interleave in key order.
      const seeded: string[] = [];
      for (let i = 0; i < 25; i += 1) {
        const n = String(i).padStart(2, '0');
        seeded.push(`pages/${n}-file`, `pages/${n}-dir/x`, `pages/${n}-dir/y`);
      }
      await putObjects(
        client,
        bucket,
        seeded.map((key) => ({ key, body: 'x' })),
      );
      // Act
      const seen: string[] = [];
      let token: string | undefined;
      let pages = 0;
      do {
        pages += 1;
        if (version === 2) {
          const page = await client.send(
            new ListObjectsV2Command({
              Bucket: bucket,
              Prefix: 'pages/',
              Delimiter: '/',
              MaxKeys: 7,
              ...(token === undefined ? {} : { ContinuationToken: token }),
            }),
          );
          seen.push(...(page.Contents ?? []).map((c) => c.Key ?? ''));
          seen.push(...(page.CommonPrefixes ?? []).map((c) => c.Prefix ?? ''));
          expect(page.KeyCount).toBeLessThanOrEqual(7);
          token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
        } else {
          const page = await client.send(
            new ListObjectsCommand({
              Bucket: bucket,
              Prefix: 'pages/',
              Delimiter: '/',
              MaxKeys: 7,
              ...(token === undefined ? {} : { Marker: token }),
            }),
          );
          seen.push(...(page.Contents ?? []).map((c) => c.Key ?? ''));
          seen.push(...(page.CommonPrefixes ?? []).map((c) => c.Prefix ?? ''));
          token = page.IsTruncated === true ? page.NextMarker : undefined;
        }
      } while (token !== undefined);
      // Assess
      const expected = Array.from({ length: 25 }, (_, i) => String(i).padStart(2, '0')).flatMap(
        (n) => [`pages/${n}-dir/`, `pages/${n}-file`],
      );
      expect([...seen].sort()).toEqual(expected.sort());
      expect(new Set(seen).size).toBe(seen.length);
      expect(pages).toBe(Math.ceil(50 / 7));
    },
  );

  it('url-encodes keys when the client asks for encoding-type=url', async () => {
    // Prepare
    const key = 'encoded/a b+c%d=é';
    await putObjects(client, bucket, [{ key, body: 'x' }]);
    // Act
    const page = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: 'encoded/', EncodingType: 'url' }),
    );
    // Assess
    expect(page.EncodingType).toBe('url');
    expect(page.Contents?.map((c) => c.Key)).toEqual([encodeURIComponent(key)]);
    expect(decodeURIComponent(page.Contents?.[0]?.Key ?? '')).toBe(key);
  });

  it('lists an overwritten object as it is now, in either encoding, after listing it before', async () => {
    // Prepare: both encodings listed once, so the server has made each entry.
    const key = 'relisted/a b';
    await putObjects(client, bucket, [{ key, body: 'first' }]);
    const list = (encoded: boolean) =>
      client.send(
        new ListObjectsV2Command({
          Bucket: bucket,
          Prefix: 'relisted/',
          ...(encoded ? { EncodingType: 'url' } : {}),
        }),
      );
    const before = await list(false);
    await list(true);
    // Act
    await putObjects(client, bucket, [{ key, body: 'the second body' }]);
    const plain = await list(false);
    const encoded = await list(true);
    // Assess
    expect(before.Contents?.map((c) => c.Size)).toEqual([5]);
    for (const page of [plain, encoded]) {
      expect(page.Contents?.map((c) => c.Size)).toEqual([15]);
      expect(page.Contents?.[0]?.ETag).not.toBe(before.Contents?.[0]?.ETag);
    }
    expect(plain.Contents?.map((c) => c.Key)).toEqual([key]);
    expect(encoded.Contents?.map((c) => c.Key)).toEqual([encodeURIComponent(key)]);
  });

  it('answers NoSuchBucket for a listing of a bucket that does not exist', async () => {
    // Act
    const listing = client.send(new ListObjectsV2Command({ Bucket: 'no-such-bucket-here' }));
    // Assess
    await expect(listing).rejects.toMatchObject({ name: 'NoSuchBucket' });
  });

  it('takes a single PutObject over 11 MiB, as S3 takes one up to 5 GiB', async () => {
    // Prepare: fauxqs alone answers 413 past 11 MiB (a backup's inventory file of 300,000 objects is larger).
    const body = Buffer.alloc(24 * 1024 * 1024, 7);
    // Act
    await client.send(
      new PutObjectCommand({ Bucket: bucket, Key: 'large/inventory.jsonl.gz', Body: body }),
    );
    // Assess
    const read = await readObject(client, bucket, 'large/inventory.jsonl.gz');
    expect(read.length).toBe(body.length);
    expect(read.equals(body)).toBe(true);
  });
});
