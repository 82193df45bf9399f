/**
 * A client for the registry HTTP API (Docker Distribution v2 / OCI
 * distribution), just enough to prove a registry serves what a snapshot says:
 * ping, paged catalog and tag lists, manifest HEAD, and full pulls with every
 * sha256 checked. Handles anonymous access, basic auth and bearer tokens from
 * the `WWW-Authenticate` challenge (realm, service, scope).
 *
 * Hand-written on fetch: the npm registry clients either pull in a container
 * runtime's worth of dependencies or do not support the token flow.
 */
import { createHash } from 'node:crypto';
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
  /** Every blob and child manifest fetched, each with its verified size. */
  readonly blobs: ReadonlyArray<{ digest: string; size: number }>;
  readonly bytes: number;
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

  /** One request, answering an auth challenge once. */
  async request(path: string, init: RequestInit & { scope?: string } = {}): Promise<Response> {
    const url = path.startsWith('http') ? path : `${this.baseUrl}${path}`;
    const send = (authorization: string | undefined) =>
      fetch(url, {
        ...init,
        headers: {
          ...(init.headers as Record<string, string> | undefined),
          ...(authorization === undefined ? {} : { authorization }),
        },
        signal: AbortSignal.timeout(this.#timeoutMs),
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

  async #fetchVerified(
    path: string,
    repository: string,
    digest: string,
    accept?: string,
  ): Promise<{ body: Buffer; mediaType: string }> {
    const response = await this.request(path, {
      scope: `repository:${repository}:pull`,
      ...(accept === undefined ? {} : { headers: { accept } }),
    });
    if (!response.ok) {
      throw new RegistryApiError(
        `GET ${path} answered HTTP ${response.status}${await errorDetail(response)}`,
        response.status,
      );
    }
    const body = Buffer.from(await response.arrayBuffer());
    const actual = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    if (digest.startsWith('sha256:') && actual !== digest) {
      throw new RegistryApiError(
        `${repository}@${digest}: content hashes to ${actual}; the stored data is corrupt`,
      );
    }
    return { body, mediaType: response.headers.get('content-type') ?? '' };
  }

  /** Pulls an image completely (index children, configs, layers), checking every sha256. */
  async pull(repository: string, reference: string): Promise<PulledImage> {
    const digest = reference.startsWith('sha256:')
      ? reference
      : await this.manifestDigest(repository, reference);
    if (digest === undefined)
      throw new RegistryApiError(`${repository}:${reference} has no manifest`, 404);
    const blobs: Array<{ digest: string; size: number }> = [];
    let bytes = 0;
    const visit = async (manifestDigest: string): Promise<string> => {
      const { body, mediaType } = await this.#fetchVerified(
        `/v2/${repository}/manifests/${manifestDigest}`,
        repository,
        manifestDigest,
        MANIFEST_TYPES.join(', '),
      );
      const parsed = JSON.parse(body.toString()) as {
        mediaType?: string;
        manifests?: Array<{ digest: string }>;
        config?: { digest: string; size: number };
        layers?: Array<{ digest: string; size: number }>;
      };
      const type = parsed.mediaType ?? mediaType;
      if (INDEX_TYPES.has(type) || parsed.manifests !== undefined) {
        for (const child of parsed.manifests ?? []) {
          await visit(child.digest);
          blobs.push({ digest: child.digest, size: 0 });
        }
        return type;
      }
      for (const blob of [
        ...(parsed.config === undefined ? [] : [parsed.config]),
        ...(parsed.layers ?? []),
      ]) {
        const { body: data } = await this.#fetchVerified(
          `/v2/${repository}/blobs/${blob.digest}`,
          repository,
          blob.digest,
        );
        if (data.length !== blob.size) {
          throw new RegistryApiError(
            `${repository}@${blob.digest}: ${data.length} bytes served, the manifest says ${blob.size}`,
          );
        }
        blobs.push({ digest: blob.digest, size: data.length });
        bytes += data.length;
      }
      return type;
    };
    const mediaType = await visit(digest);
    return { digest, mediaType, blobs, bytes };
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
