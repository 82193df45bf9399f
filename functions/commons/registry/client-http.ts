/**
 * The registry client's transport: one request at a time against the
 * registry HTTP API, answering its auth challenge (anonymous access, basic
 * auth, or a bearer token fetched from the `WWW-Authenticate` challenge's
 * realm for its service and scope), and the wire formats around it (the
 * challenge, `Link` pagination, the registry's error bodies). What to ask the
 * registry is registry/client.ts's.
 *
 * Hand-written on fetch: the npm registry clients either pull in a container
 * runtime's worth of dependencies or do not support the token flow.
 */
import { ClusterError, messageOf } from '../errors.ts';

export type RegistryCredentials =
  | { readonly kind: 'anonymous' }
  | { readonly kind: 'basic'; readonly username: string; readonly password: string };

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

/** Where the registry's login is set, in both the CLI's and the deployment's terms. */
const LOGIN_SETTINGS =
  'CLI: --registry-username with REGVAULT_REGISTRY_PASSWORD or registryPassword in the config file; AWS: the registryCredentialsSecretArn stack setting';

/** Why a request failed to connect: fetch says only `fetch failed`, and keeps the reason (ECONNREFUSED) on its cause. */
function networkReason(err: unknown): string | undefined {
  const field = (value: unknown, name: string): unknown =>
    typeof value === 'object' && value !== null ? Reflect.get(value, name) : undefined;
  const cause = field(err, 'cause');
  const reason = field(cause, 'code') ?? field(err, 'code') ?? field(cause, 'message');
  return typeof reason === 'string' ? reason : undefined;
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

/** Requests to one registry with its auth answered. Tokens are cached per scope for the object's lifetime. */
export class RegistryHttp {
  readonly baseUrl: string;
  /** How long a request may take (a blob stream: how long it may stay silent). */
  readonly timeoutMs: number;
  readonly #credentials: RegistryCredentials;
  readonly #tokens = new Map<string, string>();
  /** Bearer tokens fetched (for tests and reports). */
  tokensFetched = 0;

  constructor(
    baseUrl: string,
    credentials: RegistryCredentials = { kind: 'anonymous' },
    timeoutMs = 30_000,
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.#credentials = credentials;
    this.timeoutMs = timeoutMs;
  }

  /** Who the requests go as, for messages: never the password. */
  #who(): string {
    return this.#credentials.kind === 'basic'
      ? `user "${this.#credentials.username}"`
      : 'no credentials (anonymous)';
  }

  /**
   * What a 401 or 403 answer means and what to change, naming the URL and
   * the user; undefined for any other status.
   */
  refusal(method: string, url: string, status: number): string | undefined {
    if (status === 401)
      return this.#credentials.kind === 'basic'
        ? `the registry refused ${this.#who()} on ${method} ${url} (HTTP 401): the username or password is wrong; configure a user that may pull (${LOGIN_SETTINGS})`
        : `the registry asks for a login on ${method} ${url} (HTTP 401), and regvault has ${this.#who()}; configure a user that may pull (${LOGIN_SETTINGS})`;
    if (status === 403)
      return `the registry denied ${this.#who()} on ${method} ${url} (HTTP 403): grant that user pull (and push, for the push test), or configure another user (${LOGIN_SETTINGS})`;
    return undefined;
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
      signal: AbortSignal.timeout(this.timeoutMs),
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
        signal: init.signal ?? AbortSignal.timeout(this.timeoutMs),
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
          this.refusal(init.method ?? 'GET', url, 401) ?? `${url} needs basic auth`,
          401,
        );
      }
      return send(basic);
    } catch (err) {
      if (err instanceof RegistryApiError) throw err;
      const reason = networkReason(err);
      throw new RegistryApiError(
        `could not reach the registry at ${url}: ${messageOf(err)}${reason === undefined ? '' : ` (${reason})`}; check the registry URL (CLI: --registry-url; AWS: the registryUrl stack setting) and that the registry answers there`,
        undefined,
        { cause: err },
      );
    }
  }

  /** A GET whose answer must be a 2xx: the response, or a RegistryApiError with the registry's own words. */
  async getOk(path: string, init: RequestInit & { scope?: string } = {}): Promise<Response> {
    const response = await this.request(path, init);
    if (!response.ok) {
      const refused = this.refusal('GET', `${this.baseUrl}${path}`, response.status);
      throw new RegistryApiError(
        refused ?? `GET ${path} answered HTTP ${response.status}${await errorDetail(response)}`,
        response.status,
      );
    }
    return response;
  }
}
