/**
 * The optional write test of a verification: a one-layer image pushed through
 * the registry's upload API and pulled back in full, proving the registry can
 * store new data in its (restored) bucket, not only serve the old.
 */
import { createHash } from 'node:crypto';
import type { RegistryClient } from './client.ts';
import { RegistryApiError } from './client-http.ts';
import { MANIFEST_TYPES } from './client-manifest.ts';

/** How long one blob upload may take: a large layer streams for minutes. */
const UPLOAD_TIMEOUT_MS = 30 * 60 * 1000;

/**
 * Uploads a blob into `repository` (a monolithic upload: POST, then PUT with
 * the digest), its bytes a buffer or a stream of `size` bytes.
 */
export async function uploadBlob(
  client: RegistryClient,
  repository: string,
  digest: string,
  body: Buffer | ReadableStream<Uint8Array>,
  size: number,
): Promise<void> {
  const scope = `repository:${repository}:pull,push`;
  const start = await client.request(`/v2/${repository}/blobs/uploads/`, {
    method: 'POST',
    scope,
  });
  await start.body?.cancel();
  const location = start.headers.get('location');
  if (start.status !== 202 || location === null) {
    throw new RegistryApiError(
      client.refusal('POST', `${client.baseUrl}/v2/${repository}/blobs/uploads/`, start.status) ??
        `starting an upload to ${repository} answered HTTP ${start.status}`,
      start.status,
    );
  }
  const target = new URL(location, client.baseUrl);
  target.searchParams.set('digest', digest);
  // A stream is sent once: the POST above already answered any auth challenge for this scope.
  const put = await client.request(target.toString(), {
    method: 'PUT',
    scope,
    body,
    // A buffer's length is fetch's to send; a stream's is said (the registry wants a length).
    headers: {
      'content-type': 'application/octet-stream',
      ...(body instanceof Buffer ? {} : { 'content-length': String(size) }),
    },
    signal: AbortSignal.timeout(UPLOAD_TIMEOUT_MS),
    ...(body instanceof Buffer ? {} : { duplex: 'half' }),
  } as RequestInit & { scope: string });
  await put.body?.cancel();
  if (put.status !== 201)
    throw new RegistryApiError(
      `uploading blob ${digest} to ${repository} answered HTTP ${put.status}`,
      put.status,
    );
}

/** Puts a manifest into `repository` under `reference` (a tag, or its digest). */
export async function putManifest(
  client: RegistryClient,
  repository: string,
  reference: string,
  mediaType: string,
  bytes: Buffer,
): Promise<void> {
  const put = await client.request(`/v2/${repository}/manifests/${reference}`, {
    method: 'PUT',
    scope: `repository:${repository}:pull,push`,
    body: bytes,
    headers: { 'content-type': mediaType },
  });
  const detail = put.status === 201 ? '' : await put.text();
  if (put.status !== 201)
    throw new RegistryApiError(
      `pushing a manifest to ${repository}:${reference} answered HTTP ${put.status} ${detail.slice(0, 200)}`,
      put.status,
    );
}

/** Pushes a one-layer image into `repository`, pulls it back, and returns its digest. */
export async function pushTestImage(
  client: RegistryClient,
  repository: string,
  tag = 'regvault-push-test',
): Promise<string> {
  const upload = async (data: Buffer): Promise<string> => {
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    await uploadBlob(client, repository, digest, data, data.length);
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
  await putManifest(client, repository, tag, MANIFEST_TYPES[1], manifest);
  const pulled = await client.pull(repository, tag);
  return pulled.digest;
}
