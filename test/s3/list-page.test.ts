/**
 * The lean request path reads a ListObjectsV2 page in place
 * (functions/commons/s3/fast-copy.ts, `parseListPage`): keys with XML
 * specials and quotes, and ETags (which S3 writes as `&quot;<hex>&quot;`,
 * read on a shortcut), come out as the SDK's own parser reads them from the
 * same server.
 */
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createFastCopier, parseListPage } from '../../functions/commons/s3/fast-copy.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { putObjects, serverWithBuckets } from '../support/s3.ts';

const BUCKET = 'list-page';
const KEYS = [
  'plain/key',
  '"quoted"',
  '""',
  '"',
  '"a&b"',
  '&quot;literal&quot;',
  'xml/a&b<c>"d\'e&amp;',
  'ünïcödé/日本',
];

let server: S3ServerHandle;
let client: S3Client;

beforeAll(async () => {
  ({ server, client } = await serverWithBuckets('s3-list-page', [BUCKET]));
  await putObjects(
    client,
    BUCKET,
    KEYS.map((key, i) => ({ key, body: 'x'.repeat(i) })),
  );
});

afterAll(async () => {
  client?.destroy();
  await server?.stop();
});

describe('reading a listing page in place', () => {
  it('reads keys, sizes and ETags as the SDK does from the same server', async () => {
    // Prepare
    const fast = createFastCopier(client, {
      endpoint: server.endpoint,
      region: server.region,
      forcePathStyle: true,
    });
    // Act
    const page = await fast.listObjectsV2({ bucket: BUCKET, prefix: '' });
    const sdk = await client.send(new ListObjectsV2Command({ Bucket: BUCKET }));
    fast.destroy();
    // Assess
    expect(page.contents).toEqual(
      (sdk.Contents ?? []).map((c) => ({ key: c.Key, size: c.Size, etag: c.ETag })),
    );
    expect(page.contents.map((c) => c.key).sort()).toEqual([...KEYS].sort());
    for (const entry of page.contents) expect(entry.etag).toMatch(/^"[0-9a-f]{32}"$/);
  });

  it.each([
    ['an ETag as S3 writes it', '&quot;0a1b&quot;', '"0a1b"'],
    ['quotes around other entities', '&quot;a&amp;b&quot;', '"a&b"'],
    ['one quote', '&quot;', '"'],
    ['two quotes', '&quot;&quot;', '""'],
    ['a quote inside', 'a&quot;b', 'a"b'],
    ['numeric entities', '&#x41;&#66;', 'AB'],
    ['no entity', 'plain', 'plain'],
  ])('reads %s', (_what, written, read) => {
    // Act
    const page = parseListPage(
      `<ListBucketResult><Contents><Key>${written}</Key><ETag>${written}</ETag><Size>3</Size></Contents></ListBucketResult>`,
    );
    // Assess
    expect(page.contents).toEqual([{ key: read, etag: read, size: 3 }]);
    expect(page.isTruncated).toBe(false);
  });
});
