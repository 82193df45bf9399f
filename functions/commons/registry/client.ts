/**
 * A client for the registry HTTP API (Docker Distribution v2 / OCI
 * distribution), just enough to prove a registry serves what a snapshot says:
 * ping, paged catalog and tag lists, manifest HEAD and GET (proven by digest),
 * blob HEAD, and full pulls with every digest checked.
 *
 * The files beside it hold the parts: client-http.ts the transport and auth,
 * client-manifest.ts the manifest formats and their proof, client-pull.ts the
 * full pull's blob streams, client-push.ts the write test.
 */
import { nextLink, RegistryApiError, RegistryHttp } from './client-http.ts';
import { type FetchedManifest, MANIFEST_TYPES, provenManifest } from './client-manifest.ts';
import { type PulledImage, type PullOptions, pullImage } from './client-pull.ts';

/** What a blob HEAD found: served (with the size the registry gives), or the registry's answer. */
export type BlobStatus =
  | { readonly served: true; readonly size: number | undefined }
  | { readonly served: false; readonly status: number; readonly answer: string };

/** Talks to one registry. Tokens are cached per scope for the client's lifetime. */
export class RegistryClient extends RegistryHttp {
  /** `GET /v2/`: true when the registry answers 200 (after auth). */
  async ping(): Promise<boolean> {
    const response = await this.request('/v2/');
    await response.body?.cancel();
    return response.status === 200;
  }

  /**
   * `GET /v2/` answers 200 with these credentials; else a RegistryApiError
   * saying why (unreachable, a refused login, not a registry) and what to change.
   */
  async checkAccess(): Promise<void> {
    const url = `${this.baseUrl}/v2/`;
    const response = await this.request('/v2/');
    await response.body?.cancel();
    if (response.status === 200) return;
    throw new RegistryApiError(
      this.refusal('GET', url, response.status) ??
        `GET ${url} answered HTTP ${response.status}, not 200: is ${this.baseUrl} the registry's URL, and is the registry healthy?`,
      response.status,
    );
  }

  /** Every page of a paged list (`Link` pagination), each page's items picked by `items`. */
  async #pages<T>(
    first: string,
    scope: string,
    items: (body: T) => readonly string[] | null | undefined,
  ): Promise<string[]> {
    const all: string[] = [];
    let path: string | undefined = first;
    while (path !== undefined) {
      const response = await this.getOk(path, { scope, headers: { accept: 'application/json' } });
      all.push(...(items((await response.json()) as T) ?? []));
      path = nextLink(response.headers.get('link'));
    }
    return all;
  }

  /** Every repository, following `Link` pagination with pages of `pageSize`. */
  catalog(pageSize = 100): Promise<string[]> {
    return this.#pages<{ repositories?: string[] }>(
      `/v2/_catalog?n=${pageSize}`,
      'registry:catalog:*',
      (body) => body.repositories,
    );
  }

  /** Every tag of a repository (an unknown repository gives 404 as a RegistryApiError). */
  tags(repository: string, pageSize = 100): Promise<string[]> {
    return this.#pages<{ tags?: string[] | null }>(
      `/v2/${repository}/tags/list?n=${pageSize}`,
      `repository:${repository}:pull`,
      (body) => body.tags,
    );
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
        this.refusal(
          'HEAD',
          `${this.baseUrl}/v2/${repository}/manifests/${reference}`,
          response.status,
        ) ?? `HEAD manifest ${repository}:${reference} answered HTTP ${response.status}`,
        response.status,
      );
    return response.headers.get('docker-content-digest') ?? undefined;
  }

  /**
   * GETs a manifest by digest, proves its bytes hash to the digest, and parses
   * what it references. Refuses an answer over MAX_MANIFEST_BYTES.
   */
  async manifest(repository: string, digest: string): Promise<FetchedManifest> {
    const response = await this.getOk(`/v2/${repository}/manifests/${digest}`, {
      scope: `repository:${repository}:pull`,
      headers: { accept: MANIFEST_TYPES.join(', ') },
    });
    return provenManifest(response, digest, `${repository}@${digest}`);
  }

  /**
   * The digests of a manifest's referrers by the OCI 1.1 referrers API
   * (`GET /v2/<name>/referrers/<digest>`), or undefined when the registry
   * does not serve the API: it answers 404, as Docker Distribution 2.8 does,
   * and clients then keep the referrers in the `sha256-<hex>` tag's index.
   */
  async referrers(repository: string, digest: string): Promise<string[] | undefined> {
    const path = `/v2/${repository}/referrers/${digest}`;
    const response = await this.request(path, {
      scope: `repository:${repository}:pull`,
      headers: { accept: MANIFEST_TYPES[0] },
    });
    if (response.status === 404) {
      await response.body?.cancel();
      return undefined;
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw new RegistryApiError(
        this.refusal('GET', `${this.baseUrl}${path}`, response.status) ??
          `GET referrers of ${repository}@${digest} answered HTTP ${response.status}`,
        response.status,
      );
    }
    const index = (await response.json()) as { manifests?: Array<{ digest?: unknown }> };
    return (index.manifests ?? []).flatMap((m) => (typeof m.digest === 'string' ? [m.digest] : []));
  }

  /** HEADs a blob in a repository: the registry checks the repository's link to it and its size. */
  async blobStatus(repository: string, digest: string): Promise<BlobStatus> {
    const response = await this.request(`/v2/${repository}/blobs/${digest}`, {
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
   * Pulls an image completely (registry/client-pull.ts): every manifest and
   * every blob, streamed and checked against its digest and size.
   */
  pull(repository: string, reference: string, options: PullOptions = {}): Promise<PulledImage> {
    return pullImage(this, repository, reference, options);
  }
}
