import dns from 'node:dns';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createLocalDeps } from '../../functions/commons/local/deps.ts';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import {
  onlyPathStyle,
  pathStyleFor,
  virtualHostable,
} from '../../functions/commons/s3/addressing.ts';
import { resolveSnapshot } from '../../functions/commons/vault/store.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { putObjects, serverWithBuckets } from '../support/s3.ts';

describe('choosing path style or virtual-hosted addressing', () => {
  it.each([
    { endpoint: undefined, asked: undefined, pathStyle: false, why: 'AWS S3' },
    {
      endpoint: 'https://s3.eu-west-1.amazonaws.com',
      asked: undefined,
      pathStyle: false,
      why: 'an AWS endpoint by name',
    },
    {
      endpoint: 'https://oss-cn-hangzhou.aliyuncs.com',
      asked: undefined,
      pathStyle: false,
      why: 'Alibaba OSS, which refuses path style',
    },
    {
      endpoint: 'https://minio.example.com:9000',
      asked: undefined,
      pathStyle: false,
      why: 'a MinIO by name',
    },
    {
      endpoint: 'https://minio.example.com:9000',
      asked: true,
      pathStyle: true,
      why: 'a MinIO by name, path style asked',
    },
    { endpoint: undefined, asked: true, pathStyle: true, why: 'AWS S3, path style asked' },
    {
      endpoint: 'http://127.0.0.1:9000',
      asked: undefined,
      pathStyle: true,
      why: 'an IPv4 address',
    },
    {
      endpoint: 'http://127.0.0.1:9000',
      asked: false,
      pathStyle: true,
      why: 'an IPv4 address, path style not asked',
    },
    { endpoint: 'http://[::1]:9000', asked: undefined, pathStyle: true, why: 'an IPv6 address' },
    { endpoint: 'http://localhost:9000', asked: undefined, pathStyle: true, why: 'localhost' },
    {
      endpoint: 'http://s3.localhost:9000',
      asked: undefined,
      pathStyle: false,
      why: 'a name under localhost',
    },
  ])('addresses $why path style: $pathStyle', ({ endpoint, asked, pathStyle }) => {
    // Act
    const chosen = pathStyleFor(endpoint, asked);
    // Assess
    expect(chosen).toBe(pathStyle);
  });

  it('treats an endpoint that is not a URL as reachable path style only', () => {
    // Act
    const only = onlyPathStyle('not a url');
    // Assess
    expect(only).toBe(true);
  });

  it.each([
    { bucket: 'registry', protocol: 'https:', hostable: true },
    { bucket: 'my.registry', protocol: 'http:', hostable: true },
    { bucket: 'my.registry', protocol: 'https:', hostable: false },
    { bucket: 'Upper_Case', protocol: 'http:', hostable: false },
  ])(
    'takes $bucket over $protocol as a host name label: $hostable',
    ({ bucket, protocol, hostable }) => {
      // Act
      const result = virtualHostable(bucket, protocol);
      // Assess
      expect(result).toBe(hostable);
    },
  );
});

describe('a backup through virtual-hosted names', () => {
  let s3: S3ServerHandle;
  let client: S3Client;
  const looked: string[] = [];
  const original = dns.lookup;

  beforeAll(async () => {
    ({ server: s3, client } = await serverWithBuckets('s3-virtual-hosted', [
      'plain-source',
      'vault',
    ]));
    await putObjects(
      client,
      'plain-source',
      Array.from({ length: 30 }, (_, i) => ({ key: `data/${i}`, body: `object ${i}` })),
    );
    // This machine does not resolve `*.localhost`: names under s3.localhost go to the loopback
    // here, as a wildcard DNS record sends them to an S3 server's address.
    const patched = ((name: string, options: unknown, callback: unknown) => {
      const done = (typeof options === 'function' ? options : callback) as (
        err: Error | null,
        address: unknown,
        family?: number,
      ) => void;
      if (!name.endsWith('.localhost')) {
        Reflect.apply(original, dns, [name, options, callback]);
        return;
      }
      looked.push(name);
      const all = typeof options === 'object' && options !== null && Reflect.get(options, 'all');
      if (all === true) done(null, [{ address: '127.0.0.1', family: 4 }]);
      else done(null, '127.0.0.1', 4);
    }) as typeof dns.lookup;
    dns.lookup = patched;
  });

  afterAll(async () => {
    dns.lookup = original;
    client?.destroy();
    await s3?.stop();
  });

  it('reads the source and writes the vault at <bucket>.s3.localhost, never the bare host', async () => {
    // Prepare
    const endpoint = `http://s3.localhost:${s3.port}`;
    const deps = createLocalDeps({
      vault: {
        location: {
          endpoint,
          region: s3.region,
          bucket: 'vault',
          prefix: 'regvault/',
          forcePathStyle: pathStyleFor(endpoint),
          access: 'vault',
        },
        credentials: s3.credentials,
      },
    });
    // Act
    const result = await runBackupLocally(
      { source: { bucket: 'plain-source', endpoint, region: s3.region } },
      { deps },
    ).finally(() => deps.close());
    // Assess
    expect(result.cause).toBeUndefined();
    const output = result.output as { snapshotId: string; objects: number };
    expect(output.objects).toBe(30);
    expect((await resolveSnapshot(deps.vault, output.snapshotId)).status).toBe('complete');
    expect(new Set(looked)).toEqual(new Set(['plain-source.s3.localhost', 'vault.s3.localhost']));
  });
});
