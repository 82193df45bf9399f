/**
 * Each place the one retry policy (functions/commons/s3/retry.ts) covers,
 * against a real S3 server behind the fault proxy: a body cut mid-stream is
 * read again (the SDK's GET, the lean GET and listing), throttling and resets
 * of SDK calls are retried and counted (in the process, and in the sink of a
 * client view or lean path made for a run), and a CompleteMultipartUpload
 * whose answer was lost is not a failure when the object is there.
 */
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import type { ListedObject } from '../../functions/commons/copy/model.ts';
import {
  ByteBudget,
  CopyMode,
  S3_LIMITS,
  transferObject,
} from '../../functions/commons/copy/transfer.ts';
import { objectReader } from '../../functions/commons/registry/fsck-sources.ts';
import { createS3Client } from '../../functions/commons/s3/client.ts';
import { createFastCopier } from '../../functions/commons/s3/fast-copy.ts';
import { getObjectBytes } from '../../functions/commons/s3/get-object.ts';
import {
  countingRetries,
  isRetryable,
  type RetrySink,
  retriesSoFar,
} from '../../functions/commons/s3/retry.ts';
import { getBytes, listKeys, openUpload } from '../../functions/commons/vault/store.ts';
import { seededBytes } from '../../sandbox/dataset.ts';
import { type FaultProxy, startFaultProxy } from '../../sandbox/s3/fault-proxy.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, locationOn, putObjects, readObject } from '../support/s3.ts';

let s3: S3ServerHandle;
let proxy: FaultProxy;
let admin: S3Client;
/** A client that reaches the server through the proxy. */
let client: S3Client;

const OBJECTS = Array.from({ length: 20 }, (_, i) => ({
  key: `data/object-${String(i).padStart(2, '0')}`,
  body: seededBytes(`object-${i}`, 4096 + i),
}));

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-retry-paths' });
  proxy = await startFaultProxy({ upstream: s3.endpoint, seed: 5 });
  admin = clientFor(s3);
  client = createS3Client(
    { endpoint: proxy.endpoint, region: s3.region, forcePathStyle: true },
    s3.credentials,
  );
  await createBucket(admin, 'bucket');
  await putObjects(admin, 'bucket', OBJECTS);
});

afterEach(() => proxy.setRates({}));

afterAll(async () => {
  client?.destroy();
  admin?.destroy();
  await proxy?.stop();
  await s3?.stop();
});

/**
 * Runs `task` with a sink, returning its result, the retries counted in the
 * sink and the process's count of them (the two must agree: a retry made
 * for the task and not counted in its sink is a run's retry lost).
 */
async function counting<T>(
  task: (sink: RetrySink) => Promise<T>,
): Promise<{ value: T; retries: number }> {
  let retries = 0;
  const before = retriesSoFar();
  const value = await task(() => retries++);
  expect(retriesSoFar() - before).toBe(retries);
  return { value, retries };
}

describe('a body cut mid-stream', () => {
  it('is read again from the start by the SDK path (getObjectBytes, vault getBytes)', async () => {
    // Prepare: the first 10 GETs lose the second half of their body
    proxy.setRates({ resetMidBody: 1, operations: ['GetObject'], limit: 10 });
    // Act
    const { value, retries } = await counting((sink) => {
      const counted = countingRetries(client, sink);
      const vault = { location: locationOn(s3, 'bucket'), client: counted };
      return Promise.all(
        OBJECTS.map(async ({ key }, i) =>
          i % 2 === 0
            ? Buffer.from((await getObjectBytes(counted, { Bucket: 'bucket', Key: key })).body)
            : getBytes(vault, key),
        ),
      );
    });
    // Assess
    expect(value.map((body, i) => body?.equals(OBJECTS[i]?.body ?? Buffer.alloc(0)))).toEqual(
      OBJECTS.map(() => true),
    );
    expect(retries).toBe(10);
  });

  it('that keeps breaking fails after every attempt, saying where', async () => {
    // Prepare: more cuts than attempts, through a client that knows its role
    proxy.setRates({ resetMidBody: 1, operations: ['GetObject'], limit: 6 });
    const vaultClient = createS3Client(
      { endpoint: proxy.endpoint, region: s3.region, forcePathStyle: true },
      s3.credentials,
      { role: { what: 'the vault', keys: "the vault's keys", fixKeys: 'give other keys' } },
    );
    try {
      // Act
      const { value: err, retries } = await counting((sink) =>
        getObjectBytes(countingRetries(vaultClient, sink), {
          Bucket: 'bucket',
          Key: OBJECTS[0]?.key ?? '',
        }).catch((failure: unknown) => failure),
      );
      // Assess
      expect(retries).toBe(5);
      expect((err as Error).message).toContain(`cannot reach the vault at ${proxy.endpoint}`);
      expect((err as Error).message).toContain('the connection was reset, on every attempt');
    } finally {
      vaultClient.destroy();
    }
  });

  it('goes on by Range from the byte reached in a streamed read (fsck)', async () => {
    // Prepare: a body large enough to arrive in pieces, cut twice
    const bytes = seededBytes('streamed', 512 * 1024);
    await admin.send(new PutObjectCommand({ Bucket: 'bucket', Key: 'stream/blob', Body: bytes }));
    proxy.setRates({ resetMidBody: 1, operations: ['GetObject'], limit: 2 });
    // Act
    const { value, retries } = await counting(async (sink) => {
      const stream = await objectReader(countingRetries(client, sink), 'bucket').open(
        'stream/blob',
      );
      const chunks: Uint8Array[] = [];
      for await (const chunk of stream ?? []) chunks.push(chunk);
      return Buffer.concat(chunks);
    });
    // Assess
    expect(value.equals(bytes)).toBe(true);
    expect(retries).toBe(2);
  });

  it('is read again in a listing page through the SDK (vault listKeys)', async () => {
    // Prepare
    proxy.setRates({ resetMidBody: 1, operations: ['ListObjectsV2'], limit: 3 });
    // Act
    const { value, retries } = await counting((sink) =>
      listKeys(
        { location: locationOn(s3, 'bucket'), client: countingRetries(client, sink) },
        'data/',
      ),
    );
    // Assess
    expect(value.map((k) => k.key)).toEqual(OBJECTS.map((o) => o.key));
    expect(retries).toBe(3);
  });

  it('is read again by the lean path (GetObject and ListObjectsV2)', async () => {
    // Prepare
    const fast = createFastCopier(
      client,
      { endpoint: proxy.endpoint, region: s3.region, forcePathStyle: true },
      { maxSockets: 8 },
    );
    proxy.setRates({ resetMidBody: 1, operations: ['GetObject', 'ListObjectsV2'], limit: 4 });
    try {
      // Act
      const { value, retries } = await counting(async (sink) => {
        const counted = fast.withRetrySink(sink);
        return {
          listed: await counted.listObjectsV2({ bucket: 'bucket', prefix: 'data/' }),
          bodies: await Promise.all(
            OBJECTS.slice(0, 5).map(({ key }) => counted.getObject({ bucket: 'bucket', key })),
          ),
        };
      });
      // Assess
      expect(value.listed.contents.map((c) => c.key)).toEqual(OBJECTS.map((o) => o.key));
      value.bodies.forEach(({ body }, i) => {
        expect(body.equals(OBJECTS[i]?.body ?? Buffer.alloc(0))).toBe(true);
      });
      expect(retries).toBe(4);
    } finally {
      fast.destroy();
    }
  });
});

describe('SDK calls', () => {
  it.each([
    { fault: 'slowDown' as const },
    { fault: 'internalError' as const },
    { fault: 'resetBefore' as const },
    { fault: 'resetAfter' as const },
  ])('are retried after $fault and the retries counted', async ({ fault }) => {
    // Prepare
    proxy.setRates({ [fault]: 1, operations: ['PutObject'], limit: 3 });
    // Act
    const { retries } = await counting((sink) =>
      countingRetries(client, sink).send(
        new PutObjectCommand({ Bucket: 'bucket', Key: `sdk/${fault}`, Body: Buffer.from(fault) }),
      ),
    );
    // Assess
    expect(retries).toBe(3);
    expect((await readObject(admin, 'bucket', `sdk/${fault}`)).toString()).toBe(fault);
  });

  it('are not retried after a 4xx answer', async () => {
    // Act
    const { retries } = await counting((sink) =>
      getObjectBytes(countingRetries(client, sink), { Bucket: 'bucket', Key: 'missing' }).catch(
        (err: unknown) => err,
      ),
    );
    // Assess
    expect(retries).toBe(0);
    expect(isRetryable({ name: 'NoSuchKey', $metadata: { httpStatusCode: 404 } })).toBe(false);
  });
});

describe('a multipart copy whose CompleteMultipartUpload answer is lost', () => {
  const size = S3_LIMITS.minPartBytes + 4096;
  const object: ListedObject = { key: 'big/object', size, etag: '' };

  beforeAll(async () => {
    await admin.send(
      new PutObjectCommand({ Bucket: 'bucket', Key: object.key, Body: seededBytes('big', size) }),
    );
  });

  it.each([
    { mode: CopyMode.ServerSide, target: 'copied/server-side' },
    { mode: CopyMode.Stream, target: 'copied/streamed' },
  ])('completes ($mode): the object the first Complete made is found', async ({ mode, target }) => {
    // Prepare: the server completes the upload, the answer never arrives
    proxy.setRates({ resetAfter: 1, operations: ['CompleteMultipartUpload'], limit: 1 });
    const side = { client, bucket: 'bucket' };
    // Act
    const result = await transferObject(
      {
        source: side,
        target: side,
        settings: {
          mode,
          multipartCopyThreshold: S3_LIMITS.minPartBytes,
          partSize: S3_LIMITS.minPartBytes,
          partConcurrency: 2,
        },
        budget: new ByteBudget(64 * 1024 ** 2),
      },
      object,
      target,
    );
    // Assess
    expect(proxy.counts().byOperation['CompleteMultipartUpload resetAfter']).toBeGreaterThan(0);
    expect(result.targetEtag).toMatch(/-2$/);
    expect((await readObject(admin, 'bucket', target)).equals(seededBytes('big', size))).toBe(true);
  });
});

describe("a vault upload whose CompleteMultipartUpload answer is lost (a large inventory's)", () => {
  it('completes: the object the first Complete made is found', async () => {
    // Prepare: two parts of 5 MiB and a last piece; the server completes, the answer never arrives
    proxy.setRates({ resetAfter: 1, operations: ['CompleteMultipartUpload'], limit: 1 });
    const vault = { client, location: locationOn(s3, 'bucket') };
    const pieces = [0, 1, 2].map((i) => seededBytes(`piece-${i}`, S3_LIMITS.minPartBytes));
    const upload = openUpload(
      vault,
      'vault/inventory-part',
      'application/gzip',
      S3_LIMITS.minPartBytes,
    );

    // Act
    for (const piece of pieces) await upload.write(piece);
    await upload.close();

    // Assess
    expect(proxy.counts().byOperation['CompleteMultipartUpload resetAfter']).toBeGreaterThan(0);
    expect(
      (await readObject(admin, 'bucket', 'vault/inventory-part')).equals(Buffer.concat(pieces)),
    ).toBe(true);
  });
});
