/**
 * The Docker Distribution storage layout in a bucket, as the S3 driver writes
 * it under `<root>/docker/registry/v2/`. Used by the registry's copy policy
 * (which keys go in which shard and pass), the vault's key mapping, the
 * restore's blob digests and fsck.
 */

/** Path of the registry's data below the driver's root directory. */
export const REGISTRY_V2 = 'docker/registry/v2/';

/** What a key in a registry bucket is. */
export const KeyKind = {
  Blob: 'blob',
  Tag: 'tag',
  Revision: 'revision',
  Layer: 'layer',
  Upload: 'upload',
  Other: 'other',
} as const;
export type KeyKind = (typeof KeyKind)[keyof typeof KeyKind];

const BLOB = /^blobs\/sha256\/([0-9a-f]{2})\/([0-9a-f]{64})\/data$/;

/** Normalises a root directory to '' or 'path/' (no leading slash). */
export function normaliseRoot(root: string | undefined): string {
  const trimmed = (root ?? '').replace(/^\/+/, '').replace(/\/+$/, '');
  return trimmed === '' ? '' : `${trimmed}/`;
}

/** The prefix under which the registry keeps its data, for a root directory. */
export function registryPrefix(root: string | undefined): string {
  return `${normaliseRoot(root)}${REGISTRY_V2}`;
}

/**
 * Classifies a key relative to the registry prefix (`blobs/...` or
 * `repositories/...`). Keys elsewhere are `other`.
 */
export function classifyRegistryKey(relativeKey: string): KeyKind {
  if (relativeKey.startsWith('blobs/')) {
    return BLOB.test(relativeKey) ? KeyKind.Blob : KeyKind.Other;
  }
  if (!relativeKey.startsWith('repositories/')) return KeyKind.Other;
  // Repository names may contain slashes; the first reserved segment decides.
  const reserved = reservedSegmentOf(relativeKey);
  if (reserved === undefined) return KeyKind.Other;
  if (reserved.segment === '_uploads') return KeyKind.Upload;
  if (reserved.segment === '_layers') return KeyKind.Layer;
  if (relativeKey.startsWith('tags/', reserved.end)) return KeyKind.Tag;
  if (relativeKey.startsWith('revisions/', reserved.end)) return KeyKind.Revision;
  return KeyKind.Other;
}

const RESERVED = /\/(_uploads|_manifests|_layers)\//;

/**
 * The first reserved directory (`_manifests`, `_layers`, `_uploads`) of a
 * repository key, and where the rest of the key starts after it. Repository
 * name components never start with `_`, so the first one ends the name.
 */
export function reservedSegmentOf(
  key: string,
): { segment: '_uploads' | '_manifests' | '_layers'; end: number } | undefined {
  const match = RESERVED.exec(key);
  if (match === null) return undefined;
  return {
    segment: match[1] as '_uploads' | '_manifests' | '_layers',
    end: match.index + match[0].length,
  };
}

/** The sha256 digest (`sha256:<hex>`) a blob data key holds, or undefined. */
export function blobDigestOf(relativeKey: string): string | undefined {
  const match = BLOB.exec(relativeKey);
  return match?.[2] === undefined ? undefined : `sha256:${match[2]}`;
}

/** The data key of a blob relative to the registry prefix. */
export function blobKeyOf(digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  return `blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
}

/** Upload session id of a `.../_uploads/<id>/...` key, or undefined. */
export function uploadIdOf(relativeKey: string): string | undefined {
  const match = /\/_uploads\/([^/]+)/.exec(relativeKey);
  return match?.[1];
}
