/**
 * Where a registry's blobs are in its bucket, for the code that maps a key
 * to the digest it names and back (the vault's key mapping, the inventory's
 * parts, the restore's digests, the proof): Docker Distribution's layout
 * (layout.ts: `<root>/docker/registry/v2/blobs/sha256/<2>/<hex>/data`, links
 * beside them) or Quay's (quay-layout.ts: `<storage_path>/sha256/<2>/<hex>`,
 * everything else in its database). A snapshot's `layout` names which.
 */
import { blobDigestOf, blobKeyOf, normaliseRoot, REGISTRY_V2 } from './layout.ts';
import { quayBlobDigestOf, quayBlobKeyOf } from './quay-layout.ts';

/** A snapshot's layout: a registry's (Distribution's, Quay's) or a plain bucket. */
export type SourceLayout = 'registry' | 'quay' | 'generic';

export interface BlobLayout {
  readonly name: Exclude<SourceLayout, 'generic'>;
  /** Where the layout's keys start below the storage root ('docker/registry/v2/' or ''). */
  readonly below: string;
  /** The digest a key (relative to the layout's base) names, when it is a blob's. */
  digestOf(relativeKey: string): string | undefined;
  /** A blob's key relative to the layout's base. */
  keyOf(digest: string): string;
}

export const DISTRIBUTION_LAYOUT: BlobLayout = {
  name: 'registry',
  below: REGISTRY_V2,
  digestOf: blobDigestOf,
  keyOf: blobKeyOf,
};

export const QUAY_LAYOUT: BlobLayout = {
  name: 'quay',
  below: '',
  digestOf: quayBlobDigestOf,
  keyOf: quayBlobKeyOf,
};

/** The blob layout of a snapshot's or run's layout; undefined for a plain bucket. */
export function blobLayoutOf(layout: SourceLayout): BlobLayout | undefined {
  if (layout === 'registry') return DISTRIBUTION_LAYOUT;
  if (layout === 'quay') return QUAY_LAYOUT;
  return undefined;
}

/** The prefix of a layout's keys for a storage root (`root/` + the layout's own). */
export function layoutBase(layout: BlobLayout, root: string | undefined): string {
  return `${normaliseRoot(root)}${layout.below}`;
}
