/**
 * The optional write test of a verification: a one-layer image pushed through
 * the registry's upload API and pulled back in full, proving the registry can
 * store new data in its (restored) bucket, not only serve the old.
 */
import { createHash } from 'node:crypto';
import type { RegistryClient } from './client.ts';
import { RegistryApiError } from './client-http.ts';
import { MANIFEST_TYPES } from './client-manifest.ts';

/** Pushes a one-layer image into `repository`, pulls it back, and returns its digest. */
export async function pushTestImage(
  client: RegistryClient,
  repository: string,
  tag = 'regvault-push-test',
): Promise<string> {
  const scope = `repository:${repository}:pull,push`;
  const upload = async (data: Buffer): Promise<string> => {
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    const start = await client.request(`/v2/${repository}/blobs/uploads/`, {
      method: 'POST',
      scope,
    });
    await start.body?.cancel();
    const location = start.headers.get('location');
    if (start.status !== 202 || location === null) {
      throw new RegistryApiError(
        `starting an upload to ${repository} answered HTTP ${start.status}`,
        start.status,
      );
    }
    const target = new URL(location, client.baseUrl);
    target.searchParams.set('digest', digest);
    const put = await client.request(target.toString(), {
      method: 'PUT',
      scope,
      body: data,
      headers: { 'content-type': 'application/octet-stream' },
    });
    await put.body?.cancel();
    if (put.status !== 201)
      throw new RegistryApiError(
        `uploading a blob to ${repository} answered HTTP ${put.status}`,
        put.status,
      );
    return digest;
  };
  const layer = Buffer.from(`regvault push test ${Date.now()}`);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [] },
    }),
  );
  const [layerDigest, configDigest] = [await upload(layer), await upload(config)];
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MANIFEST_TYPES[1],
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: config.length,
      },
      layers: [
        {
          mediaType: 'application/vnd.oci.image.layer.v1.tar',
          digest: layerDigest,
          size: layer.length,
        },
      ],
    }),
  );
  const put = await client.request(`/v2/${repository}/manifests/${tag}`, {
    method: 'PUT',
    scope,
    body: manifest,
    headers: { 'content-type': MANIFEST_TYPES[1] },
  });
  await put.body?.cancel();
  if (put.status !== 201)
    throw new RegistryApiError(
      `pushing a manifest to ${repository}:${tag} answered HTTP ${put.status}`,
      put.status,
    );
  const pulled = await client.pull(repository, tag);
  return pulled.digest;
}
