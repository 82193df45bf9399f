/**
 * The bed itself, with no regvault code in the path: two images sharing a
 * layer pushed to bucket A, A copied to B with the plain SDK, the ModuleInfo
 * patched to B through @kubernetes/client-node, and both images pulled back
 * with skopeo from the registry the controller rolled onto B.
 */
import { CopyObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  CustomObjectsApi,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { OciLayout, pullImage, pushImage } from '../../sandbox/images/index.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, listAll } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let cluster: FakeCluster;

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-smoke' });
  client = clientFor(s3);
  await Promise.all([createBucket(client, 'smoke-a'), createBucket(client, 'smoke-b')]);
  cluster = await startFakeCluster({ token: 'smoke-test-token' });
  await cluster.seedAcpRegistry({
    bucket: 'smoke-a',
    endpoint: s3.endpoint,
    region: s3.region,
    accessKey: s3.credentials.accessKeyId,
    secretKey: s3.credentials.secretAccessKey,
  });
});

afterAll(async () => {
  await cluster?.stop();
  client?.destroy();
  await s3?.stop();
});

/** Every key of a bucket, through the plain SDK's paged listing. */
const keysOf = async (bucket: string) => [...(await listAll(client, bucket)).keys()];

async function getJson(url: string): Promise<unknown> {
  const response = await fetch(url);
  expect(response.status).toBe(200);
  return response.json();
}

describe('the sandbox as a whole', () => {
  it('serves two images from a copied bucket after the ModuleInfo is patched to it', async () => {
    // Prepare: two images with a common base layer, pushed to the registry on bucket A.
    const first = await cluster.waitForReadyPod(60_000);
    const host = new URL(cluster.registryUrl).host;
    const layout = await OciLayout.create();
    const base = { seed: 'smoke-base', size: 96 * 1024 };
    const web = await layout.addImage('web', [base, { seed: 'smoke-web', size: 20_000 }]);
    const api = await layout.addImage('api', [base, { seed: 'smoke-api', size: 30_000 }]);
    await pushImage(layout, 'web', `${host}/smoke/web:1.0`);
    await pushImage(layout, 'api', `${host}/smoke/api:2.0`);
    await layout.remove();
    const catalogBefore = await getJson(`${cluster.registryUrl}/v2/_catalog`);
    // Act: copy A to B object by object, then point the registry at B as an operator would.
    const keys = await keysOf('smoke-a');
    for (const key of keys) {
      await client.send(
        new CopyObjectCommand({
          Bucket: 'smoke-b',
          Key: key,
          CopySource: `smoke-a/${key.split('/').map(encodeURIComponent).join('/')}`,
        }),
      );
    }
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfigPath);
    const { group, version, resource } = cluster.server.moduleInfo;
    await kc.makeApiClient(CustomObjectsApi).patchClusterCustomObject(
      {
        group,
        version,
        plural: resource,
        name: 'image-registry',
        body: { spec: { config: { s3storage: { bucket: 'smoke-b' } } } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    const second = await cluster.waitForReadyPod(60_000);
    const webPulled = await pullImage(`${host}/smoke/web:1.0`);
    const apiPulled = await pullImage(`${host}/smoke/api:2.0`);
    // Assess
    expect(second).not.toBe(first);
    expect((await keysOf('smoke-b')).sort()).toEqual([...keys].sort());
    const baseKey = (digest: string) =>
      `docker/registry/v2/blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}/data`;
    const shared = web.blobs.filter((blob) => api.blobs.includes(blob));
    expect(shared.length).toBeGreaterThan(0);
    for (const blob of shared) expect(keys).toContain(baseKey(blob));
    expect(webPulled.digest).toBe(web.digest);
    expect(apiPulled.digest).toBe(api.digest);
    expect(await getJson(`${cluster.registryUrl}/v2/_catalog`)).toEqual(catalogBefore);
    expect(catalogBefore).toEqual({ repositories: ['smoke/api', 'smoke/web'] });
    expect(await getJson(`${cluster.registryUrl}/v2/smoke/web/tags/list`)).toEqual({
      name: 'smoke/web',
      tags: ['1.0'],
    });
    expect(await getJson(`${cluster.registryUrl}/v2/smoke/api/tags/list`)).toEqual({
      name: 'smoke/api',
      tags: ['2.0'],
    });
  });
});
