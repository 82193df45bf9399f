/**
 * A registry's bucket of any size, made inside the sandbox S3 server's own
 * process: the scale benchmark asks for a million objects, which take about
 * eleven minutes to PUT over HTTP (FACTS.md) and seconds to write into the
 * store directly.
 *
 * The objects are what Docker Distribution's S3 driver writes, in its
 * layout: images of three layers (the first shared by every image, a base
 * image), an OCI config and manifest, each blob under its true sha256, and
 * the links a push leaves (`_layers` per blob a repository holds, the
 * manifest's revision, the tag's `current` and `index` links), five tags a
 * repository. Layers are small (a few hundred bytes): the copy's cost per
 * object, which the benchmark measures, does not depend on an object's size
 * on a server-side copy, and the server keeps every body in memory.
 *
 * The images come one at a time from a generator, so the set is never held
 * whole: only the store holds it.
 */
import { createHash } from 'node:crypto';
import { blobKeyOf, registryPrefix } from '../../functions/commons/registry/layout.ts';

/** One object of the registry's bucket. */
export interface RegistryObject {
  readonly key: string;
  readonly body: Buffer;
}

export interface RegistryFillOptions {
  /** Objects to make, exactly. */
  readonly objects: number;
  /** Changes every digest (default 1). */
  readonly seed?: number;
  /** The registry's root directory in the bucket (default none). */
  readonly root?: string;
}

/** Tags a repository holds, as the benchmark's data set (scripts/bench-data.ts). */
const TAGS_PER_REPOSITORY = 5;
/** Layers an image has; the first is the base every image shares. */
const LAYERS_PER_IMAGE = 3;

const digestOf = (body: Buffer) => `sha256:${createHash('sha256').update(body).digest('hex')}`;

/** A layer's bytes: distinct per seed and number, 128 to 640 bytes. */
function layerBody(seed: number, n: number): Buffer {
  const line = `regvault scale layer ${seed}/${n}\n`;
  return Buffer.from(line.repeat(4 + (n % 17) * 2));
}

const json = (value: unknown) => Buffer.from(JSON.stringify(value));

/**
 * Every object of a registry of `options.objects` objects, image by image
 * (blobs, then the links that point at them), cut at exactly that count. A
 * cut inside the last image leaves blobs without links, which a registry
 * that lost a push holds too; no link ever points at a blob the set lacks.
 */
export function* registryObjects(options: RegistryFillOptions): Generator<RegistryObject> {
  const seed = options.seed ?? 1;
  const base = registryPrefix(options.root);
  let left = options.objects;
  let layerCounter = 0;
  const baseLayer = layerBody(seed, layerCounter++);
  const baseDigest = digestOf(baseLayer);
  const blob = (digest: string, body: Buffer): RegistryObject => ({
    key: `${base}${blobKeyOf(digest)}`,
    body,
  });
  const link = (key: string, digest: string): RegistryObject => ({
    key,
    body: Buffer.from(digest),
  });
  if (left > 0) {
    yield blob(baseDigest, baseLayer);
    left--;
  }
  for (let image = 0; left > 0; image++) {
    const r = Math.floor(image / TAGS_PER_REPOSITORY);
    const t = image % TAGS_PER_REPOSITORY;
    const repository = `team-${r % 7}/app-${String(r).padStart(6, '0')}`;
    const repo = `${base}repositories/${repository}/`;
    const own = Array.from({ length: LAYERS_PER_IMAGE - 1 }, () => {
      const body = layerBody(seed, layerCounter++);
      return { digest: digestOf(body), body };
    });
    const layers = [{ digest: baseDigest, size: baseLayer.length }].concat(
      own.map((l) => ({ digest: l.digest, size: l.body.length })),
    );
    const configBody = json({
      architecture: 'amd64',
      os: 'linux',
      config: { Labels: { repository, tag: `v${t}.0` } },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    });
    const configDigest = digestOf(configBody);
    const manifestBody = json({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: configDigest,
        size: configBody.length,
      },
      layers: layers.map((l) => ({
        mediaType: 'application/vnd.oci.image.layer.v1.tar',
        digest: l.digest,
        size: l.size,
      })),
    });
    const manifest = digestOf(manifestBody);
    const hex = (digest: string) => digest.slice('sha256:'.length);
    const objects: RegistryObject[] = [
      ...own.map((l) => blob(l.digest, l.body)),
      blob(configDigest, configBody),
      blob(manifest, manifestBody),
      // The base layer's link once a repository, with its first tag.
      ...(t === 0 ? [link(`${repo}_layers/sha256/${hex(baseDigest)}/link`, baseDigest)] : []),
      ...own.map((l) => link(`${repo}_layers/sha256/${hex(l.digest)}/link`, l.digest)),
      link(`${repo}_layers/sha256/${hex(configDigest)}/link`, configDigest),
      link(`${repo}_manifests/revisions/sha256/${hex(manifest)}/link`, manifest),
      link(`${repo}_manifests/tags/v${t}.0/current/link`, manifest),
      link(`${repo}_manifests/tags/v${t}.0/index/sha256/${hex(manifest)}/link`, manifest),
    ];
    for (const object of objects) {
      if (left === 0) return;
      yield object;
      left--;
    }
  }
}

/** The part of fauxqs's `S3Store` the fill writes through. */
interface FillableStore {
  createBucket(name: string): void;
  putObject(bucket: string, key: string, body: Buffer): unknown;
}

/** What a fill made. */
export interface FillResult {
  readonly bucket: string;
  readonly objects: number;
  readonly bytes: number;
  readonly seconds: number;
}

/**
 * Writes a registry of `options.objects` objects into `bucket` (made if it
 * does not exist) through the store's own `putObject`, as a PUT would: the
 * same stored object, ETag and sorted-listing index, without HTTP.
 */
export function fillRegistry(
  store: object,
  bucket: string,
  options: RegistryFillOptions,
): FillResult {
  const started = performance.now();
  const target = store as FillableStore;
  target.createBucket(bucket);
  let objects = 0;
  let bytes = 0;
  for (const object of registryObjects(options)) {
    target.putObject(bucket, object.key, object.body);
    objects++;
    bytes += object.body.length;
  }
  return { bucket, objects, bytes, seconds: (performance.now() - started) / 1000 };
}
