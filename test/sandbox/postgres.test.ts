/**
 * The sandbox's real PostgreSQL (issue 20's test bed): a private server with
 * Quay's tables, whose `pg_dump` streams out and whose `psql` takes the dump
 * back into another database with every row, as a backup and restore of
 * Quay's database through the postgres pod will.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type PostgresHandle, startPostgres } from '../../sandbox/postgres.ts';
import { type QuayImage, quayRows, seedQuayDatabase } from '../../sandbox/quay-schema.ts';

const digest = (seed: string) => `sha256:${createHash('sha256').update(seed).digest('hex')}`;
const IMAGES: QuayImage[] = [
  {
    namespace: 'team',
    repository: 'web',
    tag: 'v1',
    manifestDigest: digest('m1'),
    blobs: [
      { digest: digest('base'), size: 700 },
      { digest: digest('web1'), size: 12 },
    ],
  },
  {
    namespace: 'team',
    repository: 'web',
    tag: 'v2',
    manifestDigest: digest('m2'),
    blobs: [
      { digest: digest('base'), size: 700 },
      { digest: digest('web2'), size: 14 },
    ],
  },
  {
    namespace: 'team',
    repository: 'db',
    tag: 'latest',
    manifestDigest: digest('m3'),
    blobs: [{ digest: digest('db'), size: 9 }],
  },
];

let postgres: PostgresHandle;

beforeAll(async () => {
  postgres = await startPostgres({ name: 'postgres-test' });
  await seedQuayDatabase(postgres, 'quay', IMAGES);
}, 60_000);

afterAll(async () => {
  await postgres?.stop();
});

/** Runs `pg_dump` of `database` and feeds its output to `psql` on `into`, streamed; the dump's size and SHA-256. */
async function dumpInto(
  database: string,
  into: string,
): Promise<{ bytes: number; sha256: string }> {
  const dump = postgres.spawn('pg_dump', ['-U', postgres.user, '--no-owner', database]);
  const load = postgres.spawn('psql', [
    '-U',
    postgres.user,
    '-d',
    into,
    '-X',
    '-q',
    '-v',
    'ON_ERROR_STOP=1',
  ]);
  const hash = createHash('sha256');
  let bytes = 0;
  dump.stdout?.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    hash.update(chunk);
  });
  const exit = (child: typeof dump) =>
    new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const [dumped, loaded] = await Promise.all([
    exit(dump),
    exit(load),
    dump.stdout === null || load.stdin === null ? undefined : pipeline(dump.stdout, load.stdin),
  ]);
  if (dumped !== 0 || loaded !== 0) throw new Error(`pg_dump exited ${dumped}, psql ${loaded}`);
  return { bytes, sha256: hash.digest('hex') };
}

describe('the sandbox PostgreSQL', () => {
  it("holds Quay's tables: each tag with its manifest and the blobs it needs", async () => {
    // Act
    const rows = await quayRows(postgres, 'quay');

    // Assess
    expect(rows).toEqual([
      `team/db:latest ${digest('m3')} ${digest('db')}=9`,
      `team/web:v1 ${digest('m1')} ${[`${digest('base')}=700`, `${digest('web1')}=12`].sort().join(',')}`,
      `team/web:v2 ${digest('m2')} ${[`${digest('base')}=700`, `${digest('web2')}=14`].sort().join(',')}`,
    ]);
  });

  it('streams a pg_dump into psql on another database with every row', async () => {
    // Prepare
    await postgres.sql('postgres', 'CREATE DATABASE restored;');

    // Act
    const dump = await dumpInto('quay', 'restored');

    // Assess
    expect(dump.bytes).toBeGreaterThan(1000);
    expect(await quayRows(postgres, 'restored')).toEqual(await quayRows(postgres, 'quay'));
    expect(await postgres.sql('restored', 'SELECT count(*) FROM imagestorage;')).toBe('4\n');
  });

  it('says which database is missing when a client names one that is not there', async () => {
    // Act
    const refused = postgres.sql('nothing_here', 'SELECT 1;');

    // Assess
    await expect(refused).rejects.toThrow(/nothing_here/);
  });

  it('stops and removes its files', async () => {
    // Prepare
    const other = await startPostgres({ name: 'postgres-stop-test' });

    // Act
    await other.stop();

    // Assess
    expect(existsSync(other.socketDir)).toBe(false);
  }, 60_000);
});
