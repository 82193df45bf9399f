/**
 * Builds real OCI image layouts on disk (gzip'd tar layers of seeded random
 * bytes, an image config whose diff_ids match, a manifest; optionally a
 * multi-arch index) and pushes them to a registry with `skopeo`, so tests and
 * the demo fill a registry the way `docker push` would.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { gzipSync } from 'node:zlib';
import { padding, tarHeader } from '../../bin/oci-files.ts';
import { seededBytes } from '../dataset.ts';

const run = promisify(execFile);

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar+gzip';

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly platform?: { readonly architecture: string; readonly os: string };
  readonly annotations?: Record<string, string>;
}

/** A layer is identified by its seed: the same seed and size give the same bytes, so images can share layers. */
export interface LayerSpec {
  readonly seed: string;
  readonly size: number;
}

export interface BuiltImage {
  /** Digest of what the tag points at: the manifest, or the index for a multi-arch image. */
  readonly digest: string;
  readonly mediaType: string;
  /** Every blob digest the image needs (layers, configs, and child manifests of an index). */
  readonly blobs: readonly string[];
}

const sha256 = (data: Uint8Array): string =>
  `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** A one-file ustar archive: enough for a layer that unpacks like a real one. */
function tarWithOneFile(name: string, content: Uint8Array): Buffer {
  return Buffer.concat([
    tarHeader(name, content.length),
    content,
    padding(content.length),
    Buffer.alloc(1024),
  ]);
}

/** An OCI image layout directory that images are added to, then pushed from. */
export class OciLayout {
  readonly directory: string;
  readonly #index: Descriptor[] = [];
  readonly #written = new Set<string>();

  private constructor(directory: string) {
    this.directory = directory;
  }

  static async create(directory?: string): Promise<OciLayout> {
    const dir = directory ?? (await mkdtemp(join(tmpdir(), 'regvault-oci-')));
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    return new OciLayout(dir);
  }

  async #blob(data: Uint8Array): Promise<{ digest: string; size: number }> {
    const digest = sha256(data);
    if (!this.#written.has(digest)) {
      await writeFile(
        join(this.directory, 'blobs', 'sha256', digest.slice('sha256:'.length)),
        data,
      );
      this.#written.add(digest);
    }
    return { digest, size: data.length };
  }

  async #json(mediaType: string, document: object): Promise<Descriptor> {
    const { digest, size } = await this.#blob(Buffer.from(JSON.stringify(document)));
    return { mediaType, digest, size };
  }

  async #singleArch(
    layers: readonly LayerSpec[],
    platform: { architecture: string; os: string },
  ): Promise<{ manifest: Descriptor; blobs: string[] }> {
    const layerDescriptors: Descriptor[] = [];
    const diffIds: string[] = [];
    for (const layer of layers) {
      const tar = tarWithOneFile(`data-${layer.seed}.bin`, seededBytes(layer.seed, layer.size));
      diffIds.push(sha256(tar));
      const compressed = gzipSync(tar, { level: 1 });
      layerDescriptors.push({ mediaType: OCI_LAYER, ...(await this.#blob(compressed)) });
    }
    const config = await this.#json(OCI_CONFIG, {
      architecture: platform.architecture,
      os: platform.os,
      created: '2026-01-01T00:00:00Z',
      config: { Env: ['PATH=/usr/bin:/bin'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: layers.map((layer) => ({
        created: '2026-01-01T00:00:00Z',
        created_by: `regvault sandbox layer ${layer.seed}`,
      })),
    });
    const manifest = await this.#json(OCI_MANIFEST, {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
      layers: layerDescriptors.map(({ mediaType, digest, size }) => ({ mediaType, digest, size })),
    });
    return { manifest, blobs: [config.digest, ...layerDescriptors.map((layer) => layer.digest)] };
  }

  /** Adds an image under `ref` (the layout's tag name); several platforms make an index. */
  async addImage(
    ref: string,
    layers: readonly LayerSpec[],
    platforms: ReadonlyArray<{ architecture: string; os: string }> = [
      { architecture: 'amd64', os: 'linux' },
    ],
  ): Promise<BuiltImage> {
    let top: Descriptor;
    const blobs: string[] = [];
    if (platforms.length === 1 && platforms[0] !== undefined) {
      const single = await this.#singleArch(layers, platforms[0]);
      top = single.manifest;
      blobs.push(...single.blobs);
    } else {
      const children: Descriptor[] = [];
      for (const platform of platforms) {
        // Each platform gets its own layer bytes, as real multi-arch builds do.
        const platformLayers = layers.map((layer) => ({
          seed: `${layer.seed}-${platform.architecture}`,
          size: layer.size,
        }));
        const single = await this.#singleArch(platformLayers, platform);
        children.push({ ...single.manifest, platform });
        blobs.push(single.manifest.digest, ...single.blobs);
      }
      top = await this.#json(OCI_INDEX, {
        schemaVersion: 2,
        mediaType: OCI_INDEX,
        manifests: children.map(({ mediaType, digest, size, platform }) => ({
          mediaType,
          digest,
          size,
          platform,
        })),
      });
    }
    this.#index.push({ ...top, annotations: { 'org.opencontainers.image.ref.name': ref } });
    await writeFile(
      join(this.directory, 'index.json'),
      JSON.stringify({ schemaVersion: 2, manifests: this.#index }),
    );
    return { digest: top.digest, mediaType: top.mediaType, blobs };
  }

  async remove(): Promise<void> {
    await rm(this.directory, { recursive: true, force: true });
  }
}

export interface PushOptions {
  /** `user:password` for a registry with auth. */
  readonly credentials?: string;
}

async function policyFile(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'regvault-skopeo-'));
  const path = join(dir, 'policy.json');
  // The sandbox images are unsigned; the policy only has to let skopeo copy them.
  await writeFile(path, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  return path;
}

/**
 * `skopeo copy --all` from `from` to `to` under a throwaway policy file; a
 * failure says `what` went wrong in skopeo's own words, never the command line
 * (execFile's message carries it, credentials included).
 */
async function skopeoCopy(
  flags: readonly string[],
  from: string,
  to: string,
  what: string,
  then?: () => Promise<void>,
): Promise<void> {
  const policy = await policyFile();
  try {
    await run('skopeo', ['--policy', policy, 'copy', '--all', ...flags, from, to], {
      timeout: 120_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    await then?.();
  } catch (err) {
    const stderr =
      typeof err === 'object' && err !== null && 'stderr' in err ? String(err.stderr) : String(err);
    throw new Error(`skopeo could not ${what}: ${stderr.trim()}`);
  } finally {
    await rm(join(policy, '..'), { recursive: true, force: true });
  }
}

/** Pushes `ref` from a layout to `host/repository:tag` with skopeo (all platforms of an index). */
export function pushImage(
  layout: OciLayout,
  ref: string,
  destination: string,
  options: PushOptions = {},
): Promise<void> {
  return pushLayout(layout.directory, ref, destination, options);
}

/** Pushes `ref` of the OCI image layout in `directory` (any, such as an export) with skopeo. */
export async function pushLayout(
  directory: string,
  ref: string,
  destination: string,
  options: PushOptions = {},
): Promise<void> {
  await skopeoCopy(
    [
      '--dest-tls-verify=false',
      ...(options.credentials === undefined ? [] : ['--dest-creds', options.credentials]),
    ],
    `oci:${directory}:${ref}`,
    `docker://${destination}`,
    `push ${ref} to ${destination}`,
  );
}

/** Pushes an image of one layer (`size` bytes seeded by `seed`) to `host/repository:tag`; returns its digest. */
export async function pushOneLayerImage(
  destination: string,
  seed: string,
  size: number,
): Promise<string> {
  const layout = await OciLayout.create();
  try {
    const image = await layout.addImage(seed, [{ seed, size }]);
    await pushImage(layout, seed, destination);
    return image.digest;
  } finally {
    await layout.remove();
  }
}

/** Pulls `host/repository:tag` into a fresh OCI layout with skopeo and returns the digest skopeo saw. */
export async function pullImage(
  source: string,
  options: PushOptions = {},
): Promise<{ digest: string; directory: string }> {
  const directory = await mkdtemp(join(tmpdir(), 'regvault-pull-'));
  let digest = '';
  await skopeoCopy(
    [
      '--src-tls-verify=false',
      ...(options.credentials === undefined ? [] : ['--src-creds', options.credentials]),
    ],
    `docker://${source}`,
    `oci:${directory}:pulled`,
    `pull ${source}`,
    async () => {
      const { stdout } = await run('skopeo', ['inspect', '--raw', `oci:${directory}:pulled`]);
      digest = sha256(Buffer.from(stdout));
    },
  );
  return { digest, directory };
}

export interface PopulateOptions {
  readonly repositories: number;
  readonly tagsPerRepository: number;
  /** Sizes of each image's own layers (bytes). */
  readonly layerSizes?: readonly number[];
  /** A base layer every image shares, in bytes (0 for none). */
  readonly sharedBaseSize?: number;
  /** Repository names; defaults to `team-<i>/app-<i>`. */
  readonly names?: readonly string[];
  /** Make the first repository's first tag a two-platform index. */
  readonly multiArch?: boolean;
  readonly credentials?: string;
  readonly seed?: string;
}

/** What a populated registry holds: repository -> tag -> digest, as `verifyRegistry` expects. */
export interface PopulatedRegistry {
  readonly repositories: Array<{ name: string; tags: Record<string, string> }>;
  readonly blobs: ReadonlySet<string>;
}

/** Fills a registry with `repositories x tagsPerRepository` images whose layers share a base. */
export async function populateRegistry(
  host: string,
  options: PopulateOptions,
): Promise<PopulatedRegistry> {
  const layout = await OciLayout.create();
  const seed = options.seed ?? 'populate';
  const sizes = options.layerSizes ?? [2048, 40_000];
  const shared = options.sharedBaseSize ?? 64 * 1024;
  const repositories: PopulatedRegistry['repositories'] = [];
  const blobs = new Set<string>();
  try {
    for (let r = 0; r < options.repositories; r += 1) {
      const name = options.names?.[r] ?? `team-${r}/app-${r}`;
      const tags: Record<string, string> = {};
      for (let t = 0; t < options.tagsPerRepository; t += 1) {
        const tag = `v1.${t}`;
        const layers: LayerSpec[] = [
          ...(shared > 0 ? [{ seed: `${seed}-base`, size: shared }] : []),
          ...sizes.map((size, index) => ({ seed: `${seed}-${name}-${tag}-${index}`, size })),
        ];
        const platforms =
          options.multiArch === true && r === 0 && t === 0
            ? [
                { architecture: 'amd64', os: 'linux' },
                { architecture: 'arm64', os: 'linux' },
              ]
            : undefined;
        const ref = `${name.replaceAll('/', '_')}-${tag}`;
        const image = await layout.addImage(ref, layers, platforms);
        await pushImage(
          layout,
          ref,
          `${host}/${name}:${tag}`,
          options.credentials === undefined ? {} : { credentials: options.credentials },
        );
        tags[tag] = image.digest;
        for (const blob of image.blobs) blobs.add(blob);
        blobs.add(image.digest);
      }
      repositories.push({ name, tags });
    }
  } finally {
    await layout.remove();
  }
  return { repositories, blobs };
}
