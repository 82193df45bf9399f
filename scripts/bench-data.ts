/**
 * The data scripts/bench.ts copies: a registry-shaped set cut to the asked
 * number of objects (sandbox/dataset.ts makes it), one large object written
 * in generated parts, a 1% change of the source, and the bucket listing and
 * clean-up between runs.
 */
import {
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import {
  buildDataset,
  type DatasetObject,
  putInParts,
  seededBytes,
  writeDataset,
} from '../sandbox/dataset.ts';

/** Every key of a bucket with its ETag and size. */
export async function listKeys(
  client: S3Client,
  bucket: string,
): Promise<Array<{ key: string; etag: string; size: number }>> {
  const keys: Array<{ key: string; etag: string; size: number }> = [];
  let token: string | undefined;
  do {
    const page = await client.send(
      new ListObjectsV2Command({
        Bucket: bucket,
        ...(token === undefined ? {} : { ContinuationToken: token }),
      }),
    );
    for (const c of page.Contents ?? [])
      keys.push({ key: c.Key ?? '', etag: c.ETag ?? '', size: c.Size ?? 0 });
    token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
  } while (token !== undefined);
  return keys;
}

/** Empties a bucket and deletes it. */
export async function dropBucket(client: S3Client, bucket: string): Promise<void> {
  const keys = await listKeys(client, bucket);
  for (let i = 0; i < keys.length; i += 1000) {
    await client.send(
      new DeleteObjectsCommand({
        Bucket: bucket,
        Delete: { Objects: keys.slice(i, i + 1000).map((k) => ({ Key: k.key })), Quiet: true },
      }),
    );
  }
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

/**
 * A registry-shaped set of exactly `count` objects: about 11 per image (3
 * layers, one shared; config; manifest; 7 links). Shared layers are stored
 * once, so the image count grows until the set holds `count` objects, and
 * the set is cut there.
 */
export function benchObjects(count: number): DatasetObject[] {
  const tags = 5;
  const build = (images: number) =>
    buildDataset({
      repositories: Math.ceil(images / tags),
      tagsPerRepository: tags,
      layersPerImage: 3,
      sharedLayers: 1,
      seed: 42,
    });
  let images = Math.ceil(count / 11);
  let data = build(images);
  while (data.objects.length < count) {
    images = Math.ceil((images * count) / data.objects.length) + tags;
    data = build(images);
  }
  return data.objects.slice(0, count);
}

/** Puts a large object in parts generated on the fly (never whole in memory). */
export async function putLarge(
  client: S3Client,
  bucket: string,
  key: string,
  size: number,
): Promise<void> {
  await putInParts(client, bucket, key, size, (n, _start, length) =>
    seededBytes(`big-${n}`, length),
  );
}

/** Changes ~1% of the source: new images (new blobs and links) and re-tags. Returns the keys changed. */
export async function changeOnePercent(
  client: S3Client,
  bucket: string,
  objects: readonly DatasetObject[],
  count: number,
  seed: number,
): Promise<Set<string>> {
  const changed = new Set<string>();
  const tagLinks = objects.filter((o) => o.key.endsWith('/current/link'));
  const manifests = objects
    .filter((o) => o.key.includes('/_manifests/revisions/'))
    .map((o) => o.body().toString());
  // Half re-tags: point a tag at another image's manifest (same size, new content).
  for (let i = 0; i < Math.ceil(count / 2) && i < tagLinks.length; i++) {
    const link = tagLinks[(i * 7919) % tagLinks.length];
    if (link === undefined || changed.has(link.key)) continue;
    const current = link.body().toString();
    const replacement =
      manifests.find((m, j) => m !== current && j % 97 === i % 97) ??
      manifests.find((m) => m !== current) ??
      current;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: link.key, Body: replacement }));
    changed.add(link.key);
  }
  // Half new content: fresh images in a new repository.
  const fresh = buildDataset({
    repositories: Math.max(1, Math.ceil(count / 2 / 11 / 2)),
    tagsPerRepository: 2,
    seed,
    namespace: 'new',
    sharedLayers: 0,
  });
  const freshObjects = fresh.objects.slice(0, Math.max(1, count - changed.size));
  await writeDataset(client, bucket, freshObjects);
  for (const o of freshObjects) changed.add(o.key);
  return changed;
}
