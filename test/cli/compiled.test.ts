/**
 * The compiled CLI (dist/, what `npm run regvault` and the package's bin run)
 * is the same program: it prints its version without loading any command,
 * and runs a real command against the sandbox S3 server.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor } from '../support/s3.ts';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
let s3: S3ServerHandle;

beforeAll(async () => {
  await run(process.execPath, ['scripts/build-cli.mjs'], { cwd: root });
  s3 = await startS3Server({ name: 's3-compiled-cli' });
  const client = clientFor(s3);
  await client.send(new CreateBucketCommand({ Bucket: 'compiled-vault' }));
  client.destroy();
}, 120_000);

afterAll(async () => {
  await s3?.stop();
});

describe('the compiled CLI', () => {
  it('prints the package version', async () => {
    // Act
    const { stdout } = await run(process.execPath, ['dist/regvault.mjs', '--version'], {
      cwd: root,
    });
    // Assess
    expect(stdout.trim()).toBe(process.env['npm_package_version'] ?? '0.1.0');
  });

  it('lists the snapshots of an empty vault as JSON lines', async () => {
    // Act
    const { stdout } = await run(
      process.execPath,
      ['dist/regvault.mjs', 'snapshots', 'list', '--json'],
      {
        cwd: root,
        env: {
          PATH: process.env['PATH'],
          HOME: process.env['HOME'],
          REGVAULT_VAULT_BUCKET: 'compiled-vault',
          REGVAULT_VAULT_REGION: s3.region,
          REGVAULT_VAULT_ENDPOINT: s3.endpoint,
          AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
          AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
        },
      },
    );
    // Assess
    const last = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
    expect(last).toMatchObject({ event: 'result', ok: true, snapshots: 0, exitCode: 0 });
  });
});
