/**
 * A database dump streamed into the vault (issue 20's backup of Quay's
 * database): `pg_dump` of the sandbox's real PostgreSQL written as it comes,
 * in 5 MiB parts, with its size and SHA-256; read back, it loads into
 * another database with every row. A stream that fails leaves nothing.
 */

import { createHash } from 'node:crypto';
import { ListMultipartUploadsCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { Vault } from '../../functions/commons/vault/store.ts';
import { uploadStream } from '../../functions/commons/vault/stream-upload.ts';
import { type PostgresHandle, startPostgres } from '../../sandbox/postgres.ts';
import { quayRows, seedQuayDatabase } from '../../sandbox/quay-schema.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { listAll, locationOn, readObject, serverWithBuckets } from '../support/s3.ts';

const PART = 5 * 1024 ** 2;

let s3: S3ServerHandle;
let client: S3Client;
let postgres: PostgresHandle;
let vault: Vault;

beforeAll(async () => {
  ({ server: s3, client } = await serverWithBuckets('s3-stream-upload', ['vault']));
  vault = { client, location: locationOn(s3, 'vault') };
  postgres = await startPostgres({ name: 'postgres-stream-upload' });
  await seedQuayDatabase(postgres, 'quay', [
    {
      namespace: 'team',
      repository: 'web',
      tag: 'v1',
      manifestDigest: `sha256:${'a'.repeat(64)}`,
      blobs: [{ digest: `sha256:${'b'.repeat(64)}`, size: 10 }],
    },
  ]);
  // About 14 MB of dump: three parts.
  await postgres.sql(
    'quay',
    "INSERT INTO imagestorage (content_checksum, image_size) SELECT 'sha256:' || md5(i::text) || md5((i + 1)::text), i FROM generate_series(1, 150000) AS i;",
  );
}, 120_000);

afterAll(async () => {
  await postgres?.stop();
  client?.destroy();
  await s3?.stop();
});

describe('uploadStream', () => {
  it("writes pg_dump's output in parts, with the size and SHA-256 of what it wrote", async () => {
    // Act
    const dump = postgres.spawn('pg_dump', ['-U', postgres.user, '--no-owner', 'quay']);
    if (dump.stdout === null) throw new Error('pg_dump has no stdout');
    const exited = new Promise<number | null>((resolve) => dump.once('close', resolve));
    const written = await uploadStream(
      vault,
      'dumps/quay.sql',
      'application/sql',
      dump.stdout,
      PART,
    );
    const code = await exited;

    // Assess: the object is the dump, and it loads with every row.
    expect(code).toBe(0);
    expect(written.bytes).toBeGreaterThan(2 * PART);
    const stored = await readObject(client, 'vault', 'dumps/quay.sql');
    expect(stored.length).toBe(written.bytes);
    expect(createHash('sha256').update(stored).digest('hex')).toBe(written.sha256);
    await postgres.sql('postgres', 'CREATE DATABASE restored;');
    await postgres.sql('restored', stored.toString('utf8'));
    expect(await quayRows(postgres, 'restored')).toEqual(await quayRows(postgres, 'quay'));
    expect(await postgres.sql('restored', 'SELECT count(*) FROM imagestorage;')).toBe('150001\n');
  }, 120_000);

  it('leaves nothing, not even an unfinished upload, when the stream fails midway', async () => {
    // Prepare: two parts' worth, then the source breaks.
    async function* breaking() {
      yield Buffer.alloc(PART, 1);
      yield Buffer.alloc(PART, 2);
      throw new Error('the exec stream was cut');
    }

    // Act
    const failed = uploadStream(vault, 'dumps/broken.sql', 'application/sql', breaking(), PART);

    // Assess
    await expect(failed).rejects.toThrow('the exec stream was cut');
    expect([...(await listAll(client, 'vault')).keys()]).not.toContain('dumps/broken.sql');
    const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: 'vault' }));
    expect(uploads.Uploads ?? []).toEqual([]);
  }, 60_000);
});
