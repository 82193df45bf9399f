/**
 * A client for the registry HTTP API (Docker Distribution v2 / OCI
 * distribution), just enough to prove a registry serves what a snapshot says:
 * ping, paged catalog and tag lists, manifest HEAD and GET, blob HEAD, and full
 * pulls with every sha256 checked. Blobs are streamed and hashed chunk by chunk
 * (a 5 GiB layer costs the same memory as a 5 KiB one); only manifests, which
 * are needed as JSON, are read whole, and only up to MAX_MANIFEST_BYTES.
 * Handles anonymous access, basic auth and bearer tokens from the
 * `WWW-Authenticate` challenge (realm, service, scope).
 *
 * Hand-written on fetch: the npm registry clients either pull in a container
 * runtime's worth of dependencies or do not support the token flow.
 */
import { createHash } from 'node:crypto';
import PQueue from 'p-queue';
import { ClusterError } from '../errors.ts';

export type RegistryCredentials =
  | { readonly kind: 'anonymous' }
  | { readonly kind: 'basic'; readonly username: string; readonly password: string };

export const MANIFEST_TYPES = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
] as const;

const INDEX_TYPES = new Set<string>([MANIFEST_TYPES[0], MANIFEST_TYPES[2]]);

/** A problem talking to the registry, with the HTTP status when there was one. */
export class RegistryApiError extends ClusterError {
  readonly status: number | undefined;

  constructor(message: string, status?: number, options?: ErrorOptions) {
    super(message, options);
    this.status = status;
  }
}

interface Challenge {
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

/** Parses `Bearer realm="...",service="...",scope="..."` (quoted values may hold commas). */
export function parseChallenge(header: string): Challenge {
  const space = header.indexOf(' ');
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const params: Record<string, string> = {};
  const re = /([a-zA-Z_]+)=(?:"([^"]*)"|([^,]*))/g;
  for (const match of header.slice(space + 1).matchAll(re)) {
    const [, key, quoted, bare] = match;
    if (key !== undefined) params[key.toLowerCase()] = quoted ?? bare ?? '';
  }
  return { scheme, params };
}

/** The `next` URL of an RFC 5988 `Link` header, if any. */
export function nextLink(header: string | null): string | undefined {
  if (header === null) return undefined;
  const match = /<([^>]+)>\s*;\s*rel="?next"?/.exec(header);
  return match?.[1];
}

export interface PulledImage {
  readonly digest: string;
  readonly mediaType: string;
  /** Every blob and child manifest of the image, once each, with its verified size. */
  readonly blobs: ReadonlyArray<{ digest: string; size: number }>;
  /** Bytes of the image's config and layers (each proven by its sha256). */
  readonly bytes: number;
}

/** Manifests are read whole to parse them; a larger answer is refused rather than buffered. */
export const MAX_MANIFEST_BYTES = 4 * 1024 ** 2;

/** A content descriptor as manifests write it. */
export interface Descriptor {
  readonly mediaType?: string;
  readonly digest: string;
  readonly size: number;
  readonly urls?: readonly string[];
}

/** A manifest fetched by digest, its bytes proven to hash to it, and what it references. */
export interface FetchedManifest {
  readonly digest: string;
  readonly mediaType: string;
  readonly size: number;
  /** Child manifests (of an index or manifest list). */
  readonly manifests: readonly Descriptor[];
  /** Blobs the registry must serve under `/blobs/`: config and layers (foreign layers left out). */
  readonly blobs: readonly Descriptor[];
}

/** What a blob HEAD found: served (with the size the registry gives), or the registry's answer. */
export type BlobStatus =
  | { readonly served: true; readonly size: number | undefined }
  | { readonly served: false; readonly status: number; readonly answer: string };

export interface PullOptions {
  /** Blob streams of this pull at once when no `limit` is given (default 4). */
  readonly concurrency?: number;
  /** Runs each blob fetch: one limiter shared by several pulls bounds their streams together. */
  readonly limit?: <T>(task: () => Promise<T>) => Promise<T>;
  /**
   * Blob verifications shared between pulls, by digest and size: a blob several
   * images use is streamed and hashed once (a registry stores it once).
   */
  readonly verified?: Map<string, Promise<void>>;
  /** Bytes as they stream in, for progress. */
  readonly onBytes?: (bytes: number) => void;
}

/** A hash of the digest's algorithm, or an error saying the digest cannot be checked. */
function hasherFor(digest: string, what: string) {
  const algorithm = digest.slice(0, digest.indexOf(':'));
  if (algorithm !== 'sha256' && algorithm !== 'sha512') {
    throw new RegistryApiError(
      `${what}: digest ${digest} uses an algorithm regvault cannot check (sha256 and sha512 only)`,
    );
  }
  return { algorithm, hash: createHash(algorithm) };
}

const isDescriptor = (value: unknown): value is Descriptor =>
  typeof value === 'object' &&
  value !== null &&
  typeof (value as { digest?: unknown }).digest === 'string' &&
  typeof (value as { size?: unknown }).size === 'number';

/**
 * Non-distributable ("foreign") layers live at their `urls`, not in the
 * registry: a registry answers 404 for them by design.
 */
const isForeign = (blob: Descriptor): boolean =>
  (blob.urls?.length ?? 0) > 0 && /foreign|nondistributable/.test(blob.mediaType ?? '');

/** The child manifests and blobs a parsed manifest references, each descriptor checked for shape. */
export function referencesOf(
  document: unknown,
  what: string,
): { mediaType: string | undefined; manifests: Descriptor[]; blobs: Descriptor[] } {
  if (typeof document !== 'object' || document === null)
    throw new RegistryApiError(`${what}: the manifest is not a JSON object`);
  const parsed = document as {
    mediaType?: unknown;
    manifests?: unknown;
    config?: unknown;
    layers?: unknown;
    blobs?: unknown;
  };
  const list = (field: string, value: unknown): Descriptor[] => {
    if (value === undefined) return [];
    const items = Array.isArray(value) ? value : [value];
    for (const item of items) {
      if (!isDescriptor(item))
        throw new RegistryApiError(
          `${what}: the manifest's ${field} holds a descriptor without a digest and a size`,
        );
    }
    return items as Descriptor[];
  };
  return {
    mediaType: typeof parsed.mediaType === 'string' ? parsed.mediaType : undefined,
    manifests: list('manifests', parsed.manifests),
    // `blobs` is the OCI 1.1 artifact manifest's list.
    blobs: [
      ...list('config', parsed.config),
      ...list('layers', parsed.layers),
      ...list('blobs', parsed.blobs),
    ].filter((blob) => !isForeign(blob)),
  };
}

/** Reads a body whole, refusing (and cancelling) one larger than `limit` bytes. */
async function readCapped(response: Response, limit: number, what: string): Promise<Buffer> {
  const tooLarge = (size: string) =>
    new RegistryApiError(
      `${what}: the registry sent ${size} bytes, more than the ${limit} a manifest may have; it is not a manifest, or the registry is broken`,
    );
  const declared = Number(response.headers.get('content-length') ?? Number.NaN);
  if (declared > limit) {
    await response.body?.cancel();
    throw tooLarge(String(declared));
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of response.body ?? []) {
    total += chunk.byteLength;
    if (total > limit) throw tooLarge(`over ${limit}`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

/** The registry's own words about a failed request (its `errors` body), briefly. */
export async function errorDetail(response: Response): Promise<string> {
  try {
    const text = (await response.text()).trim();
    if (text === '') return '';
    const body = JSON.parse(text) as {
      errors?: Array<{ code?: string; message?: string; detail?: unknown }>;
    };
    const first = body.errors?.[0];
    if (first === undefined) return `: ${text.slice(0, 200)}`;
    const detail = typeof first.detail === 'string' ? `: ${first.detail}` : '';
    return ` (${first.code ?? 'error'}: ${first.message ?? ''}${detail})`;
  } catch {
    return '';
  }
}

/** Talks to one registry. Tokens are cached per scope for the client's lifetime. */
export class RegistryClient {
  readonly baseUrl: string;
  readonly #credentials: RegistryCredentials;
  readonly #tokens = new Map<string, string>();
  readonly #timeoutMs: number;
  /** Bearer tokens fetched (for tests and reports). */
  tokensFetched = 0;

  constructor(
    baseUrl: string,
    credentials: RegistryCredentials = { kind: 'anonymous' },
    timeoutMs = 30_000,
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.#credentials = credentials;
    this.#timeoutMs = timeoutMs;
  }

  #basicHeader(): string | undefined {
    if (this.#credentials.kind !== 'basic') return undefined;
    const { username, password } = this.#credentials;
    return `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}`;
  }

  async #token(challenge: Challenge, fallbackScope: string): Promise<string> {
    const realm = challenge.params['realm'];
    if (realm === undefined)
      throw new RegistryApiError('the registry asked for a bearer token but named no realm', 401);
    const scope = challenge.params['scope'] ?? fallbackScope;
    const cached = this.#tokens.get(scope);
    if (cached !== undefined) return cached;
    const url = new URL(realm);
    if (challenge.params['service'] !== undefined)
      url.searchParams.set('service', challenge.params['service']);
    if (scope !== '') url.searchParams.set('scope', scope);
    const basic = this.#basicHeader();
    const response = await fetch(url, {
      headers: basic === undefined ? {} : { authorization: basic },
      signal: AbortSignal.timeout(this.#timeoutMs),
    });
    if (!response.ok) {
      throw new RegistryApiError(
        `the token server at ${url.origin}${url.pathname} refused a token for scope "${scope}" (HTTP ${response.status}); check the registry username and password`,
        response.status,
      );
    }
    const body = (await response.json()) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (token === undefined)
      throw new RegistryApiError(`the token server at ${url.origin} answered without a token`);
    this.tokensFetched++;
    this.#tokens.set(scope, token);
    return token;
  }

  /**
   * One request, answering an auth challenge once. It times out after the
   * client's timeout unless the caller brings its own `signal`.
   */
  async request(path: string, init: RequestInit & { scope?: string } = {}): Promise<Response> {
    const url = path.startsWith('http') ? path : `${this.baseUrl}${path}`;
    const send = (authorization: string | undefined) =>
      fetch(url, {
        ...init,
        headers: {
          ...(init.headers as Record<string, string> | undefined),
          ...(authorization === undefined ? {} : { authorization }),
        },
        signal: init.signal ?? AbortSignal.timeout(this.#timeoutMs),
        redirect: 'follow',
      });
    const scope = init.scope ?? '';
    const cached = this.#tokens.get(scope);
    let response: Response;
    try {
      response = await send(cached === undefined ? this.#basicHeader() : `Bearer ${cached}`);
      if (response.status !== 401) return response;
      const header = response.headers.get('www-authenticate');
      await response.body?.cancel();
      if (header === null) return send(this.#basicHeader());
      const challenge = parseChallenge(header);
      if (challenge.scheme === 'bearer') {
        this.#tokens.delete(challenge.params['scope'] ?? scope);
        return send(`Bearer ${await this.#token(challenge, scope)}`);
      }
      const basic = this.#basicHeader();
      if (basic === undefined) {
        throw new RegistryApiError(
          `${url} needs basic auth; give the registry username and password`,
          401,
        );
      }
      return send(basic);
    } catch (err) {
      if (err instanceof RegistryApiError) throw err;
      throw new RegistryApiError(
        `could not reach the registry at ${url}: ${err instanceof Error ? err.message : String(err)}`,
        undefined,
        {
          cause: err,
        },
      );
    }
  }

  async #json<T>(path: string, scope: string): Promise<{ body: T; response: Response }> {
    const response = await this.request(path, { scope, headers: { accept: 'application/json' } });
    if (!response.ok) {
      throw new RegistryApiError(
        `GET ${path} answered HTTP ${response.status}${await errorDetail(response)}`,
        response.status,
      );
    }
    return { body: (await response.json()) as T, response };
  }

  /** `GET /v2/`: true when the registry answers 200 (after auth). */
  async ping(): Promise<boolean> {
    const response = await this.request('/v2/');
    await response.body?.cancel();
    return response.status === 200;
  }

  /** Every repository, following `Link` pagination with pages of `pageSize`. */
  async catalog(pageSize = 100): Promise<string[]> {
    const names: string[] = [];
    let path: string | undefined = `/v2/_catalog?n=${pageSize}`;
    while (path !== undefined) {
      const { body, response }: { body: { repositories?: string[] }; response: Response } =
        await this.#json(path, 'registry:catalog:*');
      names.push(...(body.repositories ?? []));
      path = nextLink(response.headers.get('link'));
    }
    return names;
  }

  /** Every tag of a repository (an unknown repository gives 404 as a RegistryApiError). */
  async tags(repository: string, pageSize = 100): Promise<string[]> {
    const tags: string[] = [];
    let path: string | undefined = `/v2/${repository}/tags/list?n=${pageSize}`;
    while (path !== undefined) {
      const { body, response }: { body: { tags?: string[] | null }; response: Response } =
        await this.#json(path, `repository:${repository}:pull`);
      tags.push(...(body.tags ?? []));
      path = nextLink(response.headers.get('link'));
    }
    return tags;
  }

  /** The digest the registry serves for a tag or digest (HEAD), or undefined when it has none. */
  async manifestDigest(repository: string, reference: string): Promise<string | undefined> {
    const response = await this.request(`/v2/${repository}/manifests/${reference}`, {
      method: 'HEAD',
      scope: `repository:${repository}:pull`,
      headers: { accept: MANIFEST_TYPES.join(', ') },
    });
    if (response.status === 404) return undefined;
    if (!response.ok)
      throw new RegistryApiError(
        `HEAD manifest ${repository}:${reference} answered HTTP ${response.status}`,
        response.status,
      );
    return response.headers.get('docker-content-digest') ?? undefined;
  }

  /**
   * GETs a manifest by digest, proves its bytes hash to the digest, and parses
   * what it references. Refuses an answer over MAX_MANIFEST_BYTES.
   */
  async manifest(repository: string, digest: string): Promise<FetchedManifest> {
    const what = `${repository}@${digest}`;
    const path = `/v2/${repository}/manifests/${digest}`;
    const response = await this.request(path, {
      scope: `repository:${repository}:pull`,
      headers: { accept: MANIFEST_TYPES.join(', ') },
    });
    if (!response.ok) {
      throw new RegistryApiError(
        `GET ${path} answered HTTP ${response.status}${await errorDetail(response)}`,
        response.status,
      );
    }
    const { algorithm, hash } = hasherFor(digest, what);
    const body = await readCapped(response, MAX_MANIFEST_BYTES, what);
    const actual = `${algorithm}:${hash.update(body).digest('hex')}`;
    if (actual !== digest) {
      throw new RegistryApiError(
        `${what}: the manifest served hashes to ${actual}; the stored data is corrupt`,
      );
    }
    let document: unknown;
    try {
      document = JSON.parse(body.toString('utf8'));
    } catch (err) {
      throw new RegistryApiError(`${what}: the manifest is not JSON`, undefined, { cause: err });
    }
    const references = referencesOf(document, what);
    return {
      digest,
      mediaType: references.mediaType ?? response.headers.get('content-type') ?? '',
      size: body.length,
      manifests: references.manifests,
      blobs: references.blobs,
    };
  }

  /** HEADs a blob in a repository: the registry checks the repository's link to it and its size. */
  async blobStatus(repository: string, digest: string): Promise<BlobStatus> {
    const path = `/v2/${repository}/blobs/${digest}`;
    const response = await this.request(path, {
      method: 'HEAD',
      scope: `repository:${repository}:pull`,
    });
    await response.body?.cancel();
    if (response.ok) {
      const length = response.headers.get('content-length');
      return { served: true, size: length === null ? undefined : Number(length) };
    }
    // A HEAD answer has no body, so the status is all the registry says.
    return {
      served: false,
      status: response.status,
      answer: `HEAD answered HTTP ${response.status}`,
    };
  }

  /**
   * Streams one blob and proves it: the bytes hash to its digest and number
   * exactly its size. Nothing is kept, so memory stays at a few chunks
   * whatever the size; reading stops once more bytes arrive than the size
   * allows. The timeout is for silence (no bytes for that long), not for the
   * whole transfer, so a large blob on a slow link still completes.
   */
  async verifyBlob(
    repository: string,
    blob: Descriptor,
    onBytes?: (bytes: number) => void,
  ): Promise<void> {
    const what = `${repository}@${blob.digest}`;
    const path = `/v2/${repository}/blobs/${blob.digest}`;
    const { algorithm, hash } = hasherFor(blob.digest, what);
    const idle = new AbortController();
    const timer = setTimeout(
      () => idle.abort(new Error(`no data for ${this.#timeoutMs} ms`)),
      this.#timeoutMs,
    );
    let bytes = 0;
    try {
      const response = await this.request(path, {
        scope: `repository:${repository}:pull`,
        signal: idle.signal,
      });
      if (!response.ok) {
        throw new RegistryApiError(
          `GET ${path} answered HTTP ${response.status}${await errorDetail(response)}`,
          response.status,
        );
      }
      try {
        for await (const chunk of response.body ?? []) {
          timer.refresh();
          bytes += chunk.byteLength;
          onBytes?.(chunk.byteLength);
          // Leaving the loop cancels the stream: a wrong blob is not read to its end.
          if (bytes > blob.size) break;
          hash.update(chunk);
        }
      } catch (err) {
        throw new RegistryApiError(
          `${what}: reading the blob stopped after ${bytes} of ${blob.size} bytes: ${err instanceof Error ? err.message : String(err)}`,
          undefined,
          { cause: err },
        );
      }
    } finally {
      clearTimeout(timer);
    }
    if (bytes > blob.size) {
      throw new RegistryApiError(
        `${what}: the registry sent more than the ${blob.size} bytes the manifest says; the stored data is corrupt`,
      );
    }
    const actual = `${algorithm}:${hash.digest('hex')}`;
    if (actual !== blob.digest || bytes !== blob.size) {
      throw new RegistryApiError(
        `${what}: the ${bytes} bytes served hash to ${actual}, the manifest says ${blob.size} bytes of ${blob.digest}; the stored data is corrupt`,
      );
    }
  }

  /**
   * Pulls an image completely: every manifest (index children too) and every
   * blob, streamed and checked against its digest and size, several blobs at
   * once. All blobs are tried; the first failure (in manifest order) is thrown,
   * saying how many others failed.
   */
  async pull(
    repository: string,
    reference: string,
    options: PullOptions = {},
  ): Promise<PulledImage> {
    const digest = reference.includes(':')
      ? reference
      : await this.manifestDigest(repository, reference);
    if (digest === undefined)
      throw new RegistryApiError(`${repository}:${reference} has no manifest`, 404);
    // Entries in the order the image lists them: an index's children each after their blobs.
    const entries = new Map<string, { digest: string; size: number; blob: boolean }>();
    const visit = async (manifestDigest: string): Promise<string> => {
      const manifest = await this.manifest(repository, manifestDigest);
      const isIndex = INDEX_TYPES.has(manifest.mediaType) || manifest.manifests.length > 0;
      if (isIndex) {
        for (const child of manifest.manifests) {
          if (entries.has(child.digest)) continue;
          await visit(child.digest);
          entries.set(child.digest, { digest: child.digest, size: child.size, blob: false });
        }
      }
      for (const blob of manifest.blobs) {
        const key = `${blob.digest} ${blob.size}`;
        if (!entries.has(key))
          entries.set(key, { digest: blob.digest, size: blob.size, blob: true });
      }
      return manifest.mediaType;
    };
    const mediaType = await visit(digest);
    const blobs = [...entries.values()].filter((entry) => entry.blob);
    let limit = options.limit;
    if (limit === undefined) {
      const queue = new PQueue({ concurrency: options.concurrency ?? 4 });
      limit = (task) => queue.add(task);
    }
    const run = limit;
    const outcomes = await Promise.allSettled(
      blobs.map((blob) => {
        const key = `${blob.digest} ${blob.size}`;
        const known = options.verified?.get(key);
        if (known !== undefined) return known;
        const verification = run(() => this.verifyBlob(repository, blob, options.onBytes));
        options.verified?.set(key, verification);
        return verification;
      }),
    );
    const failures = outcomes.flatMap((outcome) =>
      outcome.status === 'rejected' ? [outcome.reason as unknown] : [],
    );
    if (failures[0] !== undefined) {
      if (failures.length === 1) throw failures[0];
      const first = failures[0] instanceof Error ? failures[0].message : String(failures[0]);
      throw new RegistryApiError(
        `${first} (and ${failures.length - 1} more blobs failed)`,
        undefined,
        {
          cause: failures[0],
        },
      );
    }
    return {
      digest,
      mediaType,
      blobs: [...entries.values()].map(({ digest: d, size }) => ({ digest: d, size })),
      bytes: blobs.reduce((sum, blob) => sum + blob.size, 0),
    };
  }

  /** Pushes a one-layer image into `repository` and reads it back (the optional write test). */
  async pushTest(repository: string, tag = 'regvault-push-test'): Promise<string> {
    const scope = `repository:${repository}:pull,push`;
    const upload = async (data: Buffer): Promise<string> => {
      const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
      const start = await this.request(`/v2/${repository}/blobs/uploads/`, {
        method: 'POST',
        scope,
      });
      await start.body?.cancel();
      const location = start.headers.get('location');
      if (start.status !== 202 || location === null) {
        throw new RegistryApiError(
          `starting an upload to ${repository} answered HTTP ${start.status}`,
          start.status,
        );
      }
      const target = new URL(location, this.baseUrl);
      target.searchParams.set('digest', digest);
      const put = await this.request(target.toString(), {
        method: 'PUT',
        scope,
        body: data,
        headers: { 'content-type': 'application/octet-stream' },
      });
      await put.body?.cancel();
      if (put.status !== 201)
        throw new RegistryApiError(
          `uploading a blob to ${repository} answered HTTP ${put.status}`,
          put.status,
        );
      return digest;
    };
    const layer = Buffer.from(`regvault push test ${Date.now()}`);
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        rootfs: { type: 'layers', diff_ids: [] },
      }),
    );
    const [layerDigest, configDigest] = [await upload(layer), await upload(config)];
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MANIFEST_TYPES[1],
        config: {
          mediaType: 'application/vnd.oci.image.config.v1+json',
          digest: configDigest,
          size: config.length,
        },
        layers: [
          {
            mediaType: 'application/vnd.oci.image.layer.v1.tar',
            digest: layerDigest,
            size: layer.length,
          },
        ],
      }),
    );
    const put = await this.request(`/v2/${repository}/manifests/${tag}`, {
      method: 'PUT',
      scope,
      body: manifest,
      headers: { 'content-type': MANIFEST_TYPES[1] },
    });
    await put.body?.cancel();
    if (put.status !== 201)
      throw new RegistryApiError(
        `pushing a manifest to ${repository}:${tag} answered HTTP ${put.status}`,
        put.status,
      );
    const pulled = await this.pull(repository, tag);
    return pulled.digest;
  }
}
