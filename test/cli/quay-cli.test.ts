/**
 * The quay profile through the CLI (issue 20): `backup --profile quay` on the
 * sandbox Quay Operator takes a complete snapshot with Quay's database, and a
 * QuayRegistry that is not where the config file says is bad input (exit 2)
 * with nothing written.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { jsonLines, runRegvault, sandboxEnv } from '../support/cli.ts';
import { type QuayBed, startQuayBed } from '../support/quay.ts';
import { clientFor, createBucket, listAll } from '../support/s3.ts';

let s3: S3ServerHandle;
let bed: QuayBed;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-quay-cli' });
  const client = clientFor(s3);
  for (const bucket of ['vault', 'vault-empty']) await createBucket(client, bucket);
  client.destroy();
  bed = await startQuayBed(s3, {
    version: '3.9.1',
    namespace: 'quay-enterprise',
    bucket: 'quay-cli',
    count: 1,
  });
}, 120_000);

afterAll(async () => {
  await bed?.stop();
  await s3?.stop();
});

describe('regvault backup --profile quay', () => {
  it('backs up Quay, its database included', async () => {
    // Act
    const run = await runRegvault(
      ['backup', '--profile', 'quay', '--kubeconfig', bed.kubeconfig, '--json'],
      sandboxEnv(s3, 'vault'),
    );

    // Assess
    expect(run.code).toBe(0);
    expect(jsonLines(run.stdout).at(-1)).toMatchObject({ status: 'SUCCEEDED' });
    const keys = [...(await listAll(clientFor(s3), 'vault')).keys()];
    expect(keys.some((key) => key.endsWith('/database/registry-quay-database.sql'))).toBe(true);
  });

  it('exits 2 naming the namespace when the config file points at no QuayRegistry', async () => {
    // Prepare
    const config = join(bed.kubeconfig, '..', 'regvault.yaml');
    await writeFile(config, 'profileSettings:\n  namespace: elsewhere\n');

    // Act
    const run = await runRegvault(
      ['backup', '--profile', 'quay', '--kubeconfig', bed.kubeconfig, '--config', config],
      sandboxEnv(s3, 'vault-empty'),
    );

    // Assess
    expect(run.code).toBe(2);
    expect(`${run.stdout}${run.stderr}`).toContain(
      'there is no QuayRegistry in namespace elsewhere',
    );
    expect(await listAll(clientFor(s3), 'vault-empty')).toEqual(new Map());
  });
});
