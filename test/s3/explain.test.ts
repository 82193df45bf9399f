/**
 * S3 failures explained at the client layer, against a real S3 server: which
 * bucket, where, whose keys and what to do; bad input becomes an InputError
 * that still carries the S3 code, everything else keeps what it is, and the
 * copy's own calls around the SDK keep their class and code too.
 */
import { CopyObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { InputError } from '../../functions/commons/errors.ts';
import { createS3Client, type S3Role } from '../../functions/commons/s3/client.ts';
import { createFastCopier, S3CallError } from '../../functions/commons/s3/fast-copy.ts';
import { NOTHING_ANSWERS } from '../../sandbox/process.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket } from '../support/s3.ts';

const ROLE: S3Role = {
  what: 'the vault',
  settings: { bucket: '--vault-bucket', endpoint: '--vault-endpoint', region: '--vault-region' },
  keys: "the vault's keys (AWS_ACCESS_KEY_ID)",
  fixKeys: 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to keys this S3 accepts',
};

let s3: S3ServerHandle;
let admin: S3Client;
const made: S3Client[] = [];

/** A client of the sandbox server, explaining its failures as `role` when given. */
function clientOf(role: S3Role | undefined, endpoint = s3.endpoint): S3Client {
  const client = createS3Client(
    { endpoint, region: s3.region, forcePathStyle: true },
    s3.credentials,
    { maxAttempts: 1, ...(role === undefined ? {} : { role }) },
  );
  made.push(client);
  return client;
}

/** What `attempt` threw. */
async function thrownBy(attempt: Promise<unknown>): Promise<unknown> {
  try {
    await attempt;
  } catch (err) {
    return err;
  }
  throw new Error('expected a failure');
}

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-explain' });
  admin = clientFor(s3);
  await createBucket(admin, 'explain-vault');
});

afterEach(() => s3.clearFaults());

afterAll(async () => {
  for (const client of made) client.destroy();
  admin?.destroy();
  await s3?.stop();
});

describe('S3 failures through a client with a role', () => {
  it('makes a bucket that does not exist bad input naming it, where, and the setting to fix', async () => {
    // Act
    const err = await thrownBy(
      clientOf(ROLE).send(new ListObjectsV2Command({ Bucket: 'explain-missing' })),
    );
    // Assess
    expect(err).toBeInstanceOf(InputError);
    expect(err).toMatchObject({ Code: 'NoSuchBucket', $metadata: { httpStatusCode: 404 } });
    expect(String((err as Error).message)).toContain(
      `the vault bucket s3://explain-missing does not exist at ${s3.endpoint} (region ${s3.region})`,
    );
    expect((err as InputError).issues).toEqual([
      's3://explain-missing: create the bucket, or fix --vault-bucket (or --vault-endpoint and --vault-region, where it is looked for)',
    ]);
  });

  it.each([
    { code: 'InvalidAccessKeyId', says: 'does not know the access key ID of' },
    { code: 'SignatureDoesNotMatch', says: 'refused the signature of' },
  ])('makes $code bad input saying whose keys and how to fix them', async ({ code, says }) => {
    // Prepare
    await s3.injectFaults({ operation: 'ListObjectsV2', status: 403, code, count: 1 });
    // Act
    const err = await thrownBy(
      clientOf(ROLE).send(new ListObjectsV2Command({ Bucket: 'explain-vault' })),
    );
    // Assess
    expect(err).toBeInstanceOf(InputError);
    expect(err).toMatchObject({ Code: code });
    expect((err as Error).message).toContain(`${says} the vault's keys (AWS_ACCESS_KEY_ID)`);
    expect((err as InputError).issues).toEqual([`${ROLE.keys}: ${ROLE.fixKeys}`]);
  });

  it('keeps AccessDenied what it is, saying which permission to grant', async () => {
    // Prepare
    await s3.injectFaults({ operation: 'CopyObject', status: 403, code: 'AccessDenied', count: 1 });
    // Act
    const err = await thrownBy(
      clientOf(ROLE).send(
        new CopyObjectCommand({ Bucket: 'explain-vault', Key: 'b', CopySource: 'explain-vault/a' }),
      ),
    );
    // Assess
    expect(err).not.toBeInstanceOf(InputError);
    expect(err).toMatchObject({ name: 'AccessDenied' });
    expect((err as Error).message).toBe(
      `the vault's keys (AWS_ACCESS_KEY_ID) may not CopyObject of b in s3://explain-vault at ${s3.endpoint} (region ${s3.region}) (AccessDenied): grant s3:PutObject (and s3:GetObject on the source) on the bucket to whoever owns these keys, or ${ROLE.fixKeys}`,
    );
  });

  it('names the endpoint nothing answers at and the setting to check', async () => {
    // Prepare
    const dead = NOTHING_ANSWERS;
    // Act
    const err = await thrownBy(
      clientOf(ROLE, dead).send(new ListObjectsV2Command({ Bucket: 'explain-vault' })),
    );
    // Assess
    expect(err).not.toBeInstanceOf(InputError);
    expect((err as Error).message).toBe(
      `cannot reach the vault at ${dead} (region ${s3.region}) for s3://explain-vault: nothing answers there (connection refused) (ECONNREFUSED); check --vault-endpoint, and that the S3 server there is running`,
    );
  });

  it('leaves the failures of a client without a role as the SDK made them', async () => {
    // Act
    const err = await thrownBy(
      clientOf(undefined).send(new ListObjectsV2Command({ Bucket: 'explain-missing' })),
    );
    // Assess
    expect(err).not.toBeInstanceOf(InputError);
    expect(err).toMatchObject({
      name: 'NoSuchBucket',
      message: 'The specified bucket does not exist.',
    });
  });
});

describe("the copy's own calls around the SDK", () => {
  it('explain a failure in the same words and keep its class, code and retryability', async () => {
    // Prepare
    const client = clientOf(ROLE);
    const fast = createFastCopier(
      client,
      { endpoint: s3.endpoint, region: s3.region, forcePathStyle: true },
      {
        maxSockets: 4,
        maxAttempts: 1,
      },
    );
    await s3.injectFaults({ operation: 'CopyObject', status: 403, code: 'AccessDenied', count: 1 });
    // Act
    const denied = await thrownBy(
      fast.copyObject({
        bucket: 'explain-vault',
        key: 'b',
        copySource: 'explain-vault/a',
        checksumSha256: false,
      }),
    );
    const missing = await thrownBy(fast.listObjectsV2({ bucket: 'explain-missing', prefix: '' }));
    fast.destroy();
    // Assess
    expect(denied).toBeInstanceOf(S3CallError);
    expect(denied).toMatchObject({ Code: 'AccessDenied', name: 'AccessDenied', $retryable: false });
    expect((denied as Error).message).toContain(
      "the vault's keys (AWS_ACCESS_KEY_ID) may not CopyObject of b",
    );
    expect(missing).toBeInstanceOf(S3CallError);
    expect(missing).toMatchObject({ Code: 'NoSuchBucket' });
    expect((missing as Error).message).toBe(
      `the vault bucket s3://explain-missing does not exist at ${s3.endpoint} (region ${s3.region}); s3://explain-missing: create the bucket, or fix --vault-bucket (or --vault-endpoint and --vault-region, where it is looked for)`,
    );
  });
});
