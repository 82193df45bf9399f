/**
 * Pushing an OCI 1.1 referrer (a signature-like artifact whose `subject` is
 * an image) through the registry API the way oras and cosign do on a
 * registry without the referrers API: the artifact manifest by digest, then
 * the fallback tag `sha256-<hex>` pointing at an index that lists it.
 */
import { createHash } from 'node:crypto';
import { RegistryClient } from '../../functions/commons/registry/client.ts';
import { putManifest, uploadBlob } from '../../functions/commons/registry/client-push.ts';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

const digestOf = (bytes: Uint8Array) =>
  `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

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
  const client = new RegistryClient(registryUrl);
  const blob = async (data: Buffer) => {
    const digest = digestOf(data);
    await uploadBlob(client, repository, digest, data, data.length);
    return { digest, size: data.length };
  };
  const manifest = async (reference: string | undefined, mediaType: string, document: object) => {
    const bytes = Buffer.from(JSON.stringify(document));
    await putManifest(client, repository, reference ?? digestOf(bytes), mediaType, bytes);
    return { mediaType, digest: digestOf(bytes), size: bytes.length };
  };
  const artifactType = 'application/vnd.example.signature.v1';
  const referrer = await manifest(undefined, OCI_MANIFEST, {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    artifactType,
    config: { mediaType: 'application/vnd.oci.empty.v1+json', ...(await blob(Buffer.from('{}'))) },
    layers: [{ mediaType: artifactType, ...(await blob(Buffer.from(`signature ${seed}`))) }],
    subject,
  });
  if (!fallbackTag) return referrer.digest;
  await manifest(subject.digest.replace(':', '-'), OCI_INDEX, {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [{ ...referrer, artifactType }],
  });
  return referrer.digest;
}
