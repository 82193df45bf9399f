/**
 * A source and a target with keys of their own: `regvault copy` and
 * `backup --source-bucket` against a sandbox S3 server that knows three key
 * pairs, each allowed its own buckets only (the vault's, the source's, the
 * target's), as two accounts or two providers would be.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createS3Client } from '../../functions/commons/s3/client.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { createBucket, listAll, putObjects } from '../support/s3.ts';

const VAULT_KEYS = { accessKeyId: 'vault-key', secretAccessKey: 'vault-secret' };
const SOURCE_KEYS = { accessKeyId: 'source-key', secretAccessKey: 'source-secret' };
const TARGET_KEYS = { accessKeyId: 'target-key', secretAccessKey: 'target-secret' };
const OBJECTS = 25;

let s3: S3ServerHandle;
/** Signs as a key that may use every bucket, to seed and read them. */
let admin: S3Client;

beforeAll(async () => {
  s3 = await startS3Server({
    name: 's3-own-keys',
    keyBuckets: {
      admin: ['vault', 'source', 'target', 'target-2'],
      [VAULT_KEYS.accessKeyId]: ['vault'],
      [SOURCE_KEYS.accessKeyId]: ['source'],
      [TARGET_KEYS.accessKeyId]: ['target', 'target-2'],
    },
  });
  admin = createS3Client(
    { endpoint: s3.endpoint, region: s3.region, forcePathStyle: true },
    { accessKeyId: 'admin', secretAccessKey: 'admin' },
  );
  for (const bucket of ['vault', 'source', 'target', 'target-2']) await createBucket(admin, bucket);
  await putObjects(
    admin,
    'source',
    Array.from({ length: OBJECTS }, (_, i) => ({ key: `files/${i}`, body: `object ${i}` })),
  );
}, 60_000);

afterAll(async () => {
  admin?.destroy();
  await s3?.stop();
});

/** The CLI's environment: the vault's keys as AWS_*, and `more`. */
const envWith = (more: NodeJS.ProcessEnv) =>
  sandboxEnv({ ...s3, credentials: VAULT_KEYS }, 'vault', more);
const sourceEnv = {
  REGVAULT_SOURCE_ACCESS_KEY_ID: SOURCE_KEYS.accessKeyId,
  REGVAULT_SOURCE_SECRET_ACCESS_KEY: SOURCE_KEYS.secretAccessKey,
};
const targetEnv = {
  REGVAULT_TARGET_ACCESS_KEY_ID: TARGET_KEYS.accessKeyId,
  REGVAULT_TARGET_SECRET_ACCESS_KEY: TARGET_KEYS.secretAccessKey,
};
const result = (stdout: string) => jsonLines(stdout).find((line) => line['event'] === 'result');

describe('copying between buckets whose keys differ', () => {
  it('copies with the source keys for reading and the target keys for writing', async () => {
    // Act
    const run = await runRegvault(
      ['copy', '--from', 's3://source/files/', '--to', 's3://target/files/', '--json'],
      envWith({ ...sourceEnv, ...targetEnv }),
    );
    // Assess
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(result(run.stdout)).toMatchObject({ ok: true, copied: OBJECTS });
    expect((await listAll(admin, 'target', 'files/')).size).toBe(OBJECTS);
  });

  it('refuses, naming the vault keys it used, when no source keys are given', async () => {
    // Act
    const run = await runRegvault(
      ['copy', '--from', 's3://source/files/', '--to', 's3://target-2/files/', '--json'],
      envWith(targetEnv),
    );
    // Assess
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      "the vault's keys (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) may not ListObjectsV2 in s3://source",
    );
    expect((await listAll(admin, 'target-2')).size).toBe(0);
  });

  it('refuses one half of a key pair before anything runs, naming the missing variable', async () => {
    // Act
    const run = await runRegvault(
      ['copy', '--from', 's3://source/files/', '--to', 's3://target-2/files/'],
      envWith({ REGVAULT_SOURCE_ACCESS_KEY_ID: SOURCE_KEYS.accessKeyId }),
    );
    // Assess
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('REGVAULT_SOURCE_SECRET_ACCESS_KEY: set it too');
    expect(run.stderr).not.toContain(SOURCE_KEYS.accessKeyId);
    expect((await listAll(admin, 'target-2')).size).toBe(0);
  });
});

describe('backing up a plain bucket with its own keys', () => {
  it('reads --source-bucket with the source keys and writes the vault with its own', async () => {
    // Act
    const run = await runRegvault(
      ['backup', '--source-bucket', 'source', '--source-endpoint', s3.endpoint, '--json'],
      envWith(sourceEnv),
    );
    // Assess
    expect(run.code).toBe(0);
    const snapshot = result(run.stdout)?.['snapshot'] as { objects?: number; status?: string };
    expect(snapshot).toMatchObject({ objects: OBJECTS, status: 'complete' });
  });
});
