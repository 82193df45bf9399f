import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { RegistryClient } from '../../functions/commons/registry/client.ts';
import { populateRegistry, pullImage } from '../../sandbox/images/index.ts';
import { portInUse } from '../../sandbox/process.ts';
import { htpasswdLine, type RegistryHandle, startRegistry } from '../../sandbox/registry/index.ts';
import { startTokenServer } from '../../sandbox/registry/token-server.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, listAll, storageOn } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-registry-checks' });
  client = clientFor(s3);
});

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
});

function s3Storage(bucket: string) {
  return { kind: 's3', ...storageOn(s3, bucket) } as const;
}

describe('a sandbox registry on S3', () => {
  let registry: RegistryHandle | undefined;
  afterEach(async () => {
    await registry?.stop();
    registry = undefined;
  });

  it('stores pushed images in the Docker Distribution layout and serves them back digest for digest', async () => {
    // Prepare
    await createBucket(client, 'registry-layout');
    registry = await startRegistry({ storage: s3Storage('registry-layout') });
    // Act
    const pushed = await populateRegistry(registry.host, {
      repositories: 2,
      tagsPerRepository: 2,
      multiArch: true,
    });
    const api = new RegistryClient(registry.url);
    const keys = [...(await listAll(client, 'registry-layout')).keys()];
    const pulled = await api.pull('team-0/app-0', 'v1.0');
    const viaSkopeo = await pullImage(`${registry.host}/team-1/app-1:v1.1`);
    // Assess
    expect((await api.catalog()).sort()).toEqual(['team-0/app-0', 'team-1/app-1']);
    expect((await api.tags('team-1/app-1')).sort()).toEqual(['v1.0', 'v1.1']);
    expect(pulled.digest).toBe(pushed.repositories[0]?.tags['v1.0']);
    expect(pulled.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect(viaSkopeo.digest).toBe(pushed.repositories[1]?.tags['v1.1']);
    const blobKeys = keys.filter((key) => key.startsWith('docker/registry/v2/blobs/sha256/'));
    for (const digest of pushed.blobs) {
      const hex = digest.slice('sha256:'.length);
      expect(blobKeys).toContain(`docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`);
    }
    expect(keys).toContain(
      'docker/registry/v2/repositories/team-0/app-0/_manifests/tags/v1.0/current/link',
    );
    expect(keys.some((key) => key.includes('/_uploads/'))).toBe(false);
  });

  it('leaves nothing listening once stopped', async () => {
    // Prepare
    await createBucket(client, 'registry-stopped');
    const stopped = await startRegistry({ storage: s3Storage('registry-stopped') });
    registry = stopped;
    expect(await portInUse(stopped.port)).toBe(true);
    // Act
    await stopped.stop();
    // Assess
    expect(await portInUse(stopped.port)).toBe(false);
    expect(stopped.process.running()).toBe(false);
  });
});

describe('registry authentication', () => {
  it('asks anonymous callers for basic auth and serves a client with the htpasswd user', async () => {
    // Prepare
    const registry = await startRegistry({
      storage: { kind: 'filesystem' },
      auth: { kind: 'htpasswd', htpasswd: htpasswdLine('backup', 'correct-horse') },
    });
    try {
      await populateRegistry(registry.host, {
        repositories: 1,
        tagsPerRepository: 1,
        credentials: 'backup:correct-horse',
      });
      // Act
      const anonymous = await fetch(`${registry.url}/v2/`);
      const withUser = new RegistryClient(registry.url, {
        kind: 'basic',
        username: 'backup',
        password: 'correct-horse',
      });
      const wrongPassword = new RegistryClient(registry.url, {
        kind: 'basic',
        username: 'backup',
        password: 'nope',
      });
      // Assess
      expect(anonymous.status).toBe(401);
      expect(anonymous.headers.get('www-authenticate')).toMatch(/^Basic /);
      expect(await withUser.catalog()).toEqual(['team-0/app-0']);
      expect(await wrongPassword.ping()).toBe(false);
    } finally {
      await registry.stop();
    }
  });

  it('follows the bearer challenge through a token server', async () => {
    // Prepare
    const tokens = await startTokenServer({ username: 'backup', password: 'correct-horse' });
    const registry = await startRegistry({
      storage: { kind: 'filesystem' },
      auth: {
        kind: 'token',
        realm: tokens.realm,
        service: tokens.service,
        issuer: tokens.issuer,
        rootCertificate: tokens.rootCertificate,
      },
    });
    try {
      const pushed = await populateRegistry(registry.host, {
        repositories: 1,
        tagsPerRepository: 1,
        credentials: 'backup:correct-horse',
      });
      const api = new RegistryClient(registry.url, {
        kind: 'basic',
        username: 'backup',
        password: 'correct-horse',
      });
      // Act
      const challenge = await fetch(`${registry.url}/v2/`);
      const catalog = await api.catalog();
      const image = await api.pull('team-0/app-0', 'v1.0');
      // Assess
      expect(challenge.status).toBe(401);
      expect(challenge.headers.get('www-authenticate')).toContain(`realm="${tokens.realm}"`);
      expect(catalog).toEqual(['team-0/app-0']);
      expect(image.digest).toBe(pushed.repositories[0]?.tags['v1.0']);
      expect(api.tokensFetched).toBeGreaterThan(0);
    } finally {
      await registry.stop();
      await tokens.stop();
    }
  });
});
