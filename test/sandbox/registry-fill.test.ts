import { createHash } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { compareKeys } from '../../functions/commons/copy/model.ts';
import {
  blobDigestOf,
  classifyRegistryKey,
  KeyKind,
  REGISTRY_V2,
} from '../../functions/commons/registry/layout.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { registryObjects } from '../../sandbox/s3/registry-fill.ts';
import { listKeys } from '../../scripts/bench-data.ts';
import { clientFor, readObject } from '../support/s3.ts';

let server: S3ServerHandle;
let client: S3Client;

beforeAll(async () => {
  server = await startS3Server({ name: 's3-registry-fill' });
  client = clientFor(server);
});

afterAll(async () => {
  client?.destroy();
  await server?.stop();
});

const sha256 = (body: Uint8Array) => `sha256:${createHash('sha256').update(body).digest('hex')}`;

describe('a registry filled inside the sandbox S3 server', () => {
  it.each([1, 11, 2_345])(
    'holds exactly %i objects, listed in S3 order, every key in the registry layout',
    async (objects) => {
      // Prepare
      const bucket = `fill-${objects}`;
      // Act
      const filled = await server.fillRegistry(bucket, objects);
      const listed = await listKeys(client, bucket);
      // Assess
      expect(filled.objects).toBe(objects);
      expect(listed).toHaveLength(objects);
      const keys = listed.map((o) => o.key);
      expect([...keys].sort(compareKeys)).toEqual(keys);
      expect(new Set(keys).size).toBe(objects);
      const kinds = keys.map((key) => classifyRegistryKey(key.slice(REGISTRY_V2.length)));
      expect(kinds.filter((kind) => kind === KeyKind.Other || kind === KeyKind.Upload)).toEqual([]);
      expect(filled.bytes).toBe(listed.reduce((sum, o) => sum + o.size, 0));
    },
  );

  it('stores each blob under its sha256 and links only to blobs it holds', async () => {
    // Prepare
    const bucket = 'fill-contents';
    await server.fillRegistry(bucket, 1_000, 7);
    const keys = (await listKeys(client, bucket)).map((o) => o.key);
    const blobs = new Set(keys.flatMap((key) => blobDigestOf(key.slice(REGISTRY_V2.length)) ?? []));
    // Act
    const bodies = await Promise.all(
      keys.map(async (key) => [key, await readObject(client, bucket, key)] as const),
    );
    // Assess
    for (const [key, body] of bodies) {
      const digest = blobDigestOf(key.slice(REGISTRY_V2.length));
      if (digest !== undefined) expect(sha256(body)).toBe(digest);
      else expect(blobs.has(body.toString())).toBe(true);
    }
    const kinds = new Set(keys.map((key) => classifyRegistryKey(key.slice(REGISTRY_V2.length))));
    expect(kinds).toEqual(new Set([KeyKind.Blob, KeyKind.Layer, KeyKind.Revision, KeyKind.Tag]));
  });

  it('makes the same registry from the same seed and another from another seed', () => {
    // Prepare
    const keysOf = (seed: number) => [...registryObjects({ objects: 500, seed })].map((o) => o.key);
    // Act
    const [first, again, other] = [keysOf(3), keysOf(3), keysOf(4)];
    // Assess
    expect(again).toEqual(first);
    expect(other.filter((key) => first.includes(key) && key.includes('/blobs/'))).toEqual([]);
  });
});
