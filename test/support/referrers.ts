/**
 * Pushing an OCI 1.1 referrer (a signature-like artifact whose `subject` is
 * an image) through the registry API the way oras and cosign do on a
 * registry without the referrers API: the artifact manifest by digest, then
 * the fallback tag `sha256-<hex>` pointing at an index that lists it.
 */
import { createHash } from 'node:crypto';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

const digestOf = (bytes: Uint8Array) =>
  `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

async function uploadBlob(registryUrl: string, repository: string, data: Buffer) {
  const digest = digestOf(data);
  const start = await fetch(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
  await start.body?.cancel();
  const target = new URL(start.headers.get('location') ?? '', registryUrl);
  target.searchParams.set('digest', digest);
  const put = await fetch(target, { method: 'PUT', body: data });
  await put.body?.cancel();
  if (put.status !== 201) throw new Error(`blob upload to ${repository}: HTTP ${put.status}`);
  return { digest, size: data.length };
}

async function putManifest(
  registryUrl: string,
  repository: string,
  /** A tag, or undefined to push by the manifest's own digest. */
  reference: string | undefined,
  mediaType: string,
  document: object,
) {
  const body = Buffer.from(JSON.stringify(document));
  reference ??= digestOf(body);
  const put = await fetch(`${registryUrl}/v2/${repository}/manifests/${reference}`, {
    method: 'PUT',
    body,
    headers: { 'content-type': mediaType },
  });
  if (put.status !== 201)
    throw new Error(`manifest ${repository}:${reference}: HTTP ${put.status} ${await put.text()}`);
  return { mediaType, digest: digestOf(body), size: body.length };
}

/**
 * Pushes a signature-like referrer of `subject` (a manifest of `repository`)
 * and, unless `fallbackTag` is false (as a client does on a registry with the
 * referrers API), the fallback tag's index listing it; returns the
 * referrer's digest.
 */
export async function pushReferrer(
  registryUrl: string,
  repository: string,
  subject: { digest: string; size: number; mediaType: string },
  seed: string,
  fallbackTag = true,
): Promise<string> {
  const empty = await uploadBlob(registryUrl, repository, Buffer.from('{}'));
  const signature = await uploadBlob(registryUrl, repository, Buffer.from(`signature ${seed}`));
  const artifactType = 'application/vnd.example.signature.v1';
  const referrer = await putManifest(registryUrl, repository, undefined, OCI_MANIFEST, {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType,
    config: { mediaType: 'application/vnd.oci.empty.v1+json', ...empty },
    layers: [{ mediaType: artifactType, ...signature }],
    subject,
  });
  if (!fallbackTag) return referrer.digest;
  await putManifest(registryUrl, repository, subject.digest.replace(':', '-'), OCI_INDEX, {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [{ ...referrer, artifactType }],
  });
  return referrer.digest;
}
