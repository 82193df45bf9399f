/**
 * The compiled CLI (dist/, what `npm run regvault` and the package's bin run)
 * is the same program: it prints its version without loading any command,
 * and runs a real command against the sandbox S3 server.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { cliVaultEnv } from '../../scripts/bench-workflow.ts';
import { clientFor, putObjects } from '../support/s3.ts';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
let s3: S3ServerHandle;

beforeAll(async () => {
  await run(process.execPath, ['scripts/build-cli.mjs'], { cwd: root });
  s3 = await startS3Server({ name: 's3-compiled-cli' });
  const client = clientFor(s3);
  await client.send(new CreateBucketCommand({ Bucket: 'compiled-vault' }));
  await client.send(new CreateBucketCommand({ Bucket: 'compiled-source' }));
  await putObjects(client, 'compiled-source', [
    { key: 'a/one', body: 'one' },
    { key: 'b/two', body: 'two' },
  ]);
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

  it('takes node:http without an ES module view of it (scripts/node-http.mjs)', () => {
    // Prepare
    const dist = join(root, 'dist');
    const files = [
      ...readdirSync(dist).filter((name) => name.endsWith('.mjs')),
      ...readdirSync(join(dist, 'chunks')).map((name) => join('chunks', name)),
    ];
    // Act
    const importers = files.filter((file) =>
      /from\s*["'](node:)?http["']/.test(readFileSync(join(dist, file), 'utf8')),
    );
    const shims = files.filter((file) =>
      readFileSync(join(dist, file), 'utf8').includes('getBuiltinModule("node:http")'),
    );
    // Assess: the commands below send their requests through it.
    expect(importers).toEqual([]);
    expect(shims).toHaveLength(1);
  });

  /** The compiled CLI against the test's S3 server; the last JSON line it printed. */
  async function compiled(args: readonly string[], vault: string) {
    const { stdout } = await run(process.execPath, ['dist/regvault.mjs', ...args, '--json'], {
      cwd: root,
      env: cliVaultEnv(s3, vault),
    });
    return JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as Record<string, unknown>;
  }

  it('lists the snapshots of an empty vault as JSON lines', async () => {
    // Act
    const last = await compiled(['snapshots', 'list'], 'compiled-vault');
    // Assess
    expect(last).toMatchObject({ event: 'result', ok: true, snapshots: 0, exitCode: 0 });
  });

  it('backs up a bucket through the state machine files it finds from dist/', async () => {
    // Prepare
    const client = clientFor(s3);
    await client.send(new CreateBucketCommand({ Bucket: 'compiled-vault-backup' }));
    client.destroy();
    // Act
    const last = await compiled(
      ['backup', '--source-bucket', 'compiled-source', '--source-endpoint', s3.endpoint],
      'compiled-vault-backup',
    );
    // Assess
    expect(last).toMatchObject({ event: 'result', ok: true, status: 'SUCCEEDED', exitCode: 0 });
  });
});
