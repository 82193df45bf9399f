/**
 * Quay's copy policy (copy/policy.ts): how a bucket in Quay's layout
 * (quay-layout.ts) is cut into shards. Quay keeps its references (manifests,
 * tags) in its database, which the backup dumps while Quay is quiesced, so
 * the bucket has no links to capture before the blobs and needs no passes:
 * blob shards are ranges of the 256 fan-outs of `<storage_path>/sha256/`,
 * cut as Distribution's (copy-policy.ts `planBlobs`), each blob's key naming
 * its digest; unfinished uploads (`<storage_path>/uploads/`) are left out;
 * whatever else the bucket holds goes in objects shards.
 */
import {
  COPY,
  type CopyPolicy,
  type KeyTreatment,
  type Lister,
  type ShardRoute,
  type Split,
  type SplitOptions,
} from '../copy/policy.ts';
import { countingOf, planBlobs } from './copy-policy.ts';
import { normaliseRoot } from './layout.ts';
import { otherShards } from './plan-gaps.ts';
import { QUAY_BLOBS, quayBlobDigestOf, quayUploadIdOf } from './quay-layout.ts';

/** Splits Quay's layout below the storage path `root`: blob shards, and a shard for each other range holding a key. */
async function splitQuay(list: Lister, root: string, options: SplitOptions): Promise<Split> {
  const base = normaliseRoot(root);
  const blobsPrefix = `${base}${QUAY_BLOBS}`;
  const [blobs, others] = await Promise.all([
    list.page(blobsPrefix),
    otherShards(list, base, [blobsPrefix]),
  ]);
  const blobShards = await planBlobs(list, blobsPrefix, base, blobs, countingOf(options));
  const dataShards = [...blobShards, ...others];
  const estimatedObjects = dataShards.reduce(
    (sum, shard) => sum + (shard.estimatedObjects ?? 0),
    0,
  );
  return { linkShards: [], dataShards, estimatedObjects };
}

/** What a key of Quay's bucket is: a blob (named by its digest), an upload (left out), or a plain object. */
export function treatQuayKey(relativeKey: string): KeyTreatment {
  const uploadId = quayUploadIdOf(relativeKey);
  if (uploadId !== undefined) return { leaveOut: true, uploadId };
  const digest = quayBlobDigestOf(relativeKey);
  return digest === undefined ? COPY : { digest };
}

function routeOf(shard: { readonly registryPrefix?: string | undefined }): ShardRoute {
  const base = shard.registryPrefix ?? '';
  return {
    passes: [{}],
    treat: (key) => treatQuayKey(key.startsWith(base) ? key.slice(base.length) : key),
  };
}

/** A bucket in Quay's layout: blob shards by fan-out and objects shards, one pass each. */
export const quayCopyPolicy: CopyPolicy = { split: splitQuay, route: routeOf };
