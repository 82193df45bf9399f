/**
 * What a stored manifest names: the blobs (config, layers) and child
 * manifests of every manifest format Docker Distribution stores, read from
 * its JSON with a loose schema. fsck walks these references; nothing here
 * reads storage.
 */
import { z } from 'zod';
import { issueLines, messageOf } from '../errors.ts';

/** One reference a manifest makes. */
export interface Descriptor {
  readonly digest: string;
  readonly mediaType?: string;
  readonly hasUrls: boolean;
}

/** What a manifest refers to: blobs (config and layers) and child manifests (an index). */
export interface ManifestRefs {
  readonly blobs: Descriptor[];
  readonly children: Descriptor[];
  /** The manifest an OCI 1.1 referrer (a signature, an SBOM) refers to: not a reference fsck follows. */
  readonly subject?: string;
}

/** A manifest's references, or why its bytes are not a manifest. */
export type ParsedManifest =
  | { readonly ok: true; readonly refs: ManifestRefs }
  | { readonly ok: false; readonly reason: string };

/**
 * Media types of layers the registry never stores (Windows base layers fetched
 * from `urls`): a manifest may name them without the blob existing.
 */
const FOREIGN_LAYER = /foreign|nondistributable/;

/** True for a layer the registry never stores, so its blob need not exist. */
export function isForeignLayer(descriptor: Descriptor): boolean {
  return (
    descriptor.hasUrls ||
    (descriptor.mediaType !== undefined && FOREIGN_LAYER.test(descriptor.mediaType))
  );
}

const descriptorSchema = z.looseObject({
  digest: z.string().optional(),
  /** Schema 1 names its layers by `blobSum`. */
  blobSum: z.string().optional(),
  mediaType: z.string().optional(),
  urls: z.array(z.string()).optional(),
});
const descriptorsSchema = z.array(descriptorSchema).optional();

/** The parts of any manifest format the registry stores that name other content. */
const manifestSchema = z.looseObject({
  config: descriptorSchema.optional(),
  layers: descriptorsSchema,
  fsLayers: descriptorsSchema,
  blobs: descriptorsSchema,
  manifests: descriptorsSchema,
  subject: descriptorSchema.optional(),
});

function descriptorsOf(
  items: ReadonlyArray<z.infer<typeof descriptorSchema>> | undefined,
): Descriptor[] {
  const descriptors: Descriptor[] = [];
  for (const item of items ?? []) {
    const digest = item.digest ?? item.blobSum;
    if (digest === undefined) continue;
    descriptors.push({
      digest,
      ...(item.mediaType === undefined ? {} : { mediaType: item.mediaType }),
      hasUrls: (item.urls ?? []).length > 0,
    });
  }
  return descriptors;
}

/**
 * References of any manifest format the registry stores: OCI and Docker v2
 * image manifests (config, layers), OCI indexes and Docker manifest lists
 * (manifests), schema 1 (fsLayers) and OCI artifact manifests (blobs).
 * `subject` is returned apart from the references: a referrer may name a
 * manifest that was never pushed, so fsck does not follow it.
 */
export function parseManifest(bytes: Buffer): ParsedManifest {
  let document: unknown;
  try {
    document = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    return { ok: false, reason: `not JSON (${messageOf(err)})` };
  }
  const parsed = manifestSchema.safeParse(document);
  if (!parsed.success) {
    return {
      ok: false,
      reason: `not a manifest: ${issueLines(parsed.error, '(document)').join('; ')}`,
    };
  }
  const manifest = parsed.data;
  return {
    ok: true,
    refs: {
      blobs: descriptorsOf([
        ...(manifest.config === undefined ? [] : [manifest.config]),
        ...(manifest.layers ?? []),
        ...(manifest.fsLayers ?? []),
        ...(manifest.blobs ?? []),
      ]),
      children: descriptorsOf(manifest.manifests),
      ...(manifest.subject?.digest === undefined ? {} : { subject: manifest.subject.digest }),
    },
  };
}
