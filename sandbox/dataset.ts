/**
 * Registry-shaped data sets written straight into a bucket, in the exact
 * layout Docker Distribution's S3 driver uses: real OCI manifests and configs,
 * blobs keyed by their true sha256, link files holding `sha256:<hex>`. Much
 * faster than pushing through a registry, so the benchmark can make 20,000
 * objects in seconds; fsck can check it like a real registry's bucket.
 */
import { createCipheriv, createHash } from 'node:crypto';
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import { blobKeyOf, registryPrefix } from '../functions/commons/registry/layout.ts';

/** A deterministic PRNG (mulberry32), so sizes and names repeat between runs. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Layer sizes as registries hold them: mostly small, a long tail up to 8 MiB. */
export const REALISTIC_SIZE_MIX: ReadonlyArray<{ share: number; min: number; max: number }> = [
  { share: 0.6, min: 1024, max: 16 * 1024 },
  { share: 0.3, min: 16 * 1024, max: 512 * 1024 },
  { share: 0.09, min: 512 * 1024, max: 2 * 1024 ** 2 },
  { share: 0.01, min: 2 * 1024 ** 2, max: 8 * 1024 ** 2 },
];

export interface DatasetOptions {
  readonly repositories: number;
  readonly tagsPerRepository: number;
  readonly layersPerImage?: number;
  /** Layers every image shares (a common base image). */
  readonly sharedLayers?: number;
  readonly sizeMix?: ReadonlyArray<{ share: number; min: number; max: number }>;
  /** Fixed layer size instead of the mix. */
  readonly layerSize?: number;
  readonly seed?: number;
  /** Registry root directory in the bucket. */
  readonly root?: string;
  readonly namespace?: string;
}

export interface DatasetObject {
  readonly key: string;
  readonly size: number;
  /** Produces the bytes (generated on demand so the set never sits in memory). */
  readonly body: () => Uint8Array;
}

export interface DatasetImage {
  readonly repository: string;
  readonly tag: string;
  readonly digest: string;
  readonly blobs: readonly string[];
}

export interface Dataset {
  readonly objects: readonly DatasetObject[];
  readonly images: readonly DatasetImage[];
  readonly bytes: number;
}

const sha256 = (data: Uint8Array) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

interface Blob {
  readonly digest: string;
  readonly size: number;
  readonly body: () => Uint8Array;
}

/** Pseudo-random bytes from a seed (AES-CTR keystream): the same seed gives the same bytes. */
export function seededBytes(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** A blob hashed once and regenerated on demand, so a large data set never sits in memory. */
function randomBlob(seed: string, size: number): Blob {
  return { digest: sha256(seededBytes(seed, size)), size, body: () => seededBytes(seed, size) };
}

function jsonBlob(value: unknown): Blob {
  const data = Buffer.from(JSON.stringify(value));
  return { digest: sha256(data), size: data.length, body: () => data };
}

function pickSize(random: () => number, mix: DatasetOptions['sizeMix']): number {
  const bands = mix ?? REALISTIC_SIZE_MIX;
  let roll = random();
  for (const band of bands) {
    if (roll < band.share) return Math.floor(band.min + random() * (band.max - band.min));
    roll -= band.share;
  }
  const last = bands[bands.length - 1];
  return last === undefined ? 1024 : last.min;
}

/**
 * Builds a registry data set: `repositories` x `tagsPerRepository` images with
 * `layersPerImage` layers each, the first `sharedLayers` shared by all images.
 */
export function buildDataset(options: DatasetOptions): Dataset {
  const random = prng(options.seed ?? 1);
  const base = registryPrefix(options.root);
  const layerCount = options.layersPerImage ?? 3;
  const sizeOf = () => options.layerSize ?? pickSize(random, options.sizeMix);
  const runSeed = options.seed ?? 1;
  let blobCounter = 0;
  const nextBlob = () => randomBlob(`${runSeed}/${blobCounter++}`, sizeOf());
  const shared = Array.from({ length: options.sharedLayers ?? 1 }, nextBlob);
  const blobs = new Map<string, Blob>();
  const links = new Map<string, string>();
  const images: DatasetImage[] = [];
  const namespace = options.namespace ?? 'team';
  for (let r = 0; r < options.repositories; r++) {
    const repository = `${namespace}-${r % 7}/app-${String(r).padStart(4, '0')}`;
    const repoPrefix = `${base}repositories/${repository}/`;
    for (let t = 0; t < options.tagsPerRepository; t++) {
      const tag = `v${t}.0`;
      const layers = [
        ...shared,
        ...Array.from({ length: Math.max(0, layerCount - shared.length) }, nextBlob),
      ];
      const config = jsonBlob({
        architecture: 'amd64',
        os: 'linux',
        config: { Labels: { repository, tag } },
        rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
      });
      const manifest = jsonBlob({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: config.digest,
          size: config.size,
        },
        layers: layers.map((l) => ({
          mediaType: 'application/vnd.oci.image.layer.v1.tar',
          digest: l.digest,
          size: l.size,
        })),
      });
      for (const blob of [...layers, config, manifest]) blobs.set(blob.digest, blob);
      for (const blob of [...layers, config]) {
        links.set(`${repoPrefix}_layers/sha256/${blob.digest.slice(7)}/link`, blob.digest);
      }
      links.set(
        `${repoPrefix}_manifests/revisions/sha256/${manifest.digest.slice(7)}/link`,
        manifest.digest,
      );
      links.set(`${repoPrefix}_manifests/tags/${tag}/current/link`, manifest.digest);
      links.set(
        `${repoPrefix}_manifests/tags/${tag}/index/sha256/${manifest.digest.slice(7)}/link`,
        manifest.digest,
      );
      images.push({
        repository,
        tag,
        digest: manifest.digest,
        blobs: [config.digest, manifest.digest, ...layers.map((l) => l.digest)],
      });
    }
  }
  const objects: DatasetObject[] = [];
  let bytes = 0;
  for (const blob of blobs.values()) {
    objects.push({ key: `${base}${blobKeyOf(blob.digest)}`, size: blob.size, body: blob.body });
    bytes += blob.size;
  }
  for (const [key, digest] of links) {
    const data = Buffer.from(digest);
    objects.push({ key, size: data.length, body: () => data });
    bytes += data.length;
  }
  objects.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { objects, images, bytes };
}

/** Largest single PUT some S3-compatible servers take; larger objects go multipart. */
const SINGLE_PUT_LIMIT = 8 * 1024 ** 2;

/** Writes one object, in 8 MiB parts when it is larger than that. */
export async function putObject(
  client: S3Client,
  bucket: string,
  key: string,
  body: Uint8Array,
): Promise<void> {
  if (body.byteLength <= SINGLE_PUT_LIMIT) {
    await client.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: key,
        Body: body,
        ContentLength: body.byteLength,
      }),
    );
    return;
  }
  await putInParts(client, bucket, key, body.byteLength, (_n, start, length) =>
    body.subarray(start, start + length),
  );
}

/**
 * Writes `size` bytes to one key as a multipart upload of 8 MiB parts, asking
 * `part` for each part's bytes (part number from 1, offset, length) only when
 * it is sent: an object larger than memory can be written from a generator.
 */
export async function putInParts(
  client: S3Client,
  bucket: string,
  key: string,
  size: number,
  part: (n: number, start: number, length: number) => Uint8Array,
): Promise<void> {
  const { UploadId } = await client.send(
    new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }),
  );
  const parts: Array<{ ETag: string; PartNumber: number }> = [];
  for (let start = 0, n = 1; start < size; start += SINGLE_PUT_LIMIT, n++) {
    const chunk = part(n, start, Math.min(SINGLE_PUT_LIMIT, size - start));
    const uploaded = await client.send(
      new UploadPartCommand({
        Bucket: bucket,
        Key: key,
        UploadId,
        PartNumber: n,
        Body: chunk,
        ContentLength: chunk.byteLength,
      }),
    );
    parts.push({ ETag: uploaded.ETag ?? '', PartNumber: n });
  }
  await client.send(
    new CompleteMultipartUploadCommand({
      Bucket: bucket,
      Key: key,
      UploadId,
      MultipartUpload: { Parts: parts },
    }),
  );
}

/** Writes a data set's objects into `bucket`. */
export async function writeDataset(
  client: S3Client,
  bucket: string,
  objects: readonly DatasetObject[],
  concurrency = 32,
): Promise<void> {
  const queue = new PQueue({ concurrency });
  await Promise.all(
    objects.map((o) => queue.add(() => putObject(client, bucket, o.key, o.body()))),
  );
}
