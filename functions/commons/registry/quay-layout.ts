/**
 * Red Hat Quay's storage layout in its bucket. Quay keeps manifests, tags and
 * repositories in its database; the bucket holds only blobs (layers and
 * configs), content-addressed below the S3 storage's `storage_path`:
 *
 *   <storage_path>/sha256/<2 hex>/<64 hex>     a blob (Quay's digest_tools.content_path)
 *   <storage_path>/uploads/<uuid>              an upload in progress (or abandoned)
 *
 * Keys here are relative to `<storage_path>/` (its leading slash stripped).
 */

/** The blob tree below the storage path. */
export const QUAY_BLOBS = 'sha256/';
/** Where uploads in progress live below the storage path. */
export const QUAY_UPLOADS = 'uploads/';

const BLOB = /^sha256\/([0-9a-f]{2})\/(([0-9a-f]{2})[0-9a-f]{62})$/;

/** The digest (`sha256:<hex>`) a Quay blob key names, or undefined for any other key. */
export function quayBlobDigestOf(relativeKey: string): string | undefined {
  const match = BLOB.exec(relativeKey);
  // The fan-out is the digest's first two hex digits; any other is not Quay's key.
  return match?.[2] === undefined || match[1] !== match[3] ? undefined : `sha256:${match[2]}`;
}

/** The key of a blob below the storage path. */
export function quayBlobKeyOf(digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  return `${QUAY_BLOBS}${hex.slice(0, 2)}/${hex}`;
}

/** The upload id of an `uploads/<uuid>...` key, or undefined. */
export function quayUploadIdOf(relativeKey: string): string | undefined {
  if (!relativeKey.startsWith(QUAY_UPLOADS)) return undefined;
  return relativeKey.slice(QUAY_UPLOADS.length).split('/')[0] || undefined;
}
