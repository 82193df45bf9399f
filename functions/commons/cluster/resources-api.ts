/**
 * Any resource type through the API server's own discovery: which types it
 * serves (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`), their
 * objects a page at a time (`limit`/`continue`), one object, and server-side
 * apply under regvault's field manager. Objects travel as plain JSON, never
 * through client-node's typed models, which drop fields they do not know and
 * turn timestamps into dates: a captured object must be the object served.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { ApiException, type KubeConfig } from '@kubernetes/client-node';
import { type CallDescription, explainKubeError } from './kube.ts';
import { type ApiType, apiVersionOf, type KubeObject } from './resource-types.ts';

export {
  type ApiType,
  apiVersionOf,
  groupResourceOf,
  type KubeObject,
} from './resource-types.ts';

/** The field manager of every write regvault makes to a cluster's objects. */
export const FIELD_MANAGER = 'regvault';

export interface ListOptions {
  readonly namespace?: string;
  readonly labelSelector?: string;
  /** Objects a page; 500 by default, as kubectl's chunks. */
  readonly limit?: number;
}

/** Reads and writes any served type of one cluster. */
export interface ResourceApi {
  /** The API server's URL, for messages. */
  readonly server: string;
  /** Every type discovery lists at its group's preferred version, subresources left out. */
  discover(): Promise<ApiType[]>;
  /** The objects of a type, one page per step, so a large type never sits in memory whole. */
  listPages(type: ApiType, options?: ListOptions): AsyncGenerator<KubeObject[]>;
  /** One object, or undefined when it does not exist. */
  get(type: ApiType, namespace: string | undefined, name: string): Promise<KubeObject | undefined>;
  /** Server-side apply as regvault; `force` takes fields other managers own. */
  apply(type: ApiType, object: KubeObject, options: { force: boolean }): Promise<KubeObject>;
  /** Deletes one object (its dependents in the background); one that is gone already is fine. */
  delete(type: ApiType, namespace: string | undefined, name: string): Promise<void>;
}

interface Answer {
  readonly status: number;
  readonly body: unknown;
  readonly headers: Record<string, string>;
}

const field = (value: unknown, name: string): unknown =>
  typeof value === 'object' && value !== null ? Reflect.get(value, name) : undefined;
const strings = (value: unknown): string[] =>
  Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : [];

/** The URL path of a type, a namespace's objects of it, or one object. */
export function pathOf(type: ApiType, namespace?: string, name?: string): string {
  const base = type.group === '' ? `/api/${type.version}` : `/apis/${type.group}/${type.version}`;
  const scope =
    type.namespaced && namespace !== undefined
      ? `/namespaces/${encodeURIComponent(namespace)}`
      : '';
  return `${base}${scope}/${type.resource}${name === undefined ? '' : `/${encodeURIComponent(name)}`}`;
}

/** The resource API of the kubeconfig's current cluster. */
export function resourceApi(kc: KubeConfig): ResourceApi {
  const server = kc.getCurrentCluster()?.server ?? '(unknown server)';

  /** One request; a non-2xx answer or no answer is a KubeApiError naming `call` and the fix. */
  async function send(
    call: CallDescription,
    method: string,
    path: string,
    body?: { readonly text: string; readonly contentType: string },
  ): Promise<Answer> {
    const url = new URL(path, server.endsWith('/') ? server : `${server}/`);
    const options: RequestOptions = {
      method,
      headers: {
        Accept: 'application/json',
        ...(body === undefined ? {} : { 'Content-Type': body.contentType }),
      },
    };
    await kc.applyToHTTPSOptions(options);
    let answer: Answer;
    try {
      answer = await new Promise<Answer>((resolve, reject) => {
        const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(
          url,
          options,
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (chunk: Buffer) => chunks.push(chunk));
            res.on('error', reject);
            res.on('end', () => {
              const text = Buffer.concat(chunks).toString('utf8');
              let parsed: unknown = text;
              try {
                parsed = JSON.parse(text) as unknown;
              } catch {
                // A proxy's HTML error page: kept as text for the message.
              }
              const headers: Record<string, string> = {};
              for (const [key, value] of Object.entries(res.headers))
                if (typeof value === 'string') headers[key] = value;
              resolve({ status: res.statusCode ?? 0, body: parsed, headers });
            });
          },
        );
        req.on('error', reject);
        req.setTimeout(60_000, () => req.destroy(new Error('no answer within 60 s')));
        req.end(body?.text);
      });
    } catch (err) {
      throw explainKubeError(server, call, err);
    }
    if (answer.status < 200 || answer.status > 299)
      throw explainKubeError(
        server,
        call,
        new ApiException(answer.status, 'Unsuccessful HTTP Request', answer.body, answer.headers),
      );
    return answer;
  }

  const describe = (
    verb: CallDescription['verb'],
    type: Pick<ApiType, 'group' | 'resource'>,
    namespace?: string,
    name?: string,
  ): CallDescription => ({
    verb,
    resource: type.resource,
    group: type.group,
    ...(namespace === undefined ? {} : { namespace }),
    ...(name === undefined ? {} : { name }),
  });

  /** The types one group-version serves. */
  async function typesOf(group: string, version: string): Promise<ApiType[]> {
    const path = group === '' ? `/api/${version}` : `/apis/${group}/${version}`;
    const { body } = await send(describe('get', { group, resource: '(discovery)' }), 'GET', path);
    const resources = field(body, 'resources');
    return (Array.isArray(resources) ? resources : [])
      .filter(
        (r) => typeof field(r, 'name') === 'string' && !String(field(r, 'name')).includes('/'),
      )
      .map((r) => ({
        group,
        version,
        resource: String(field(r, 'name')),
        kind: String(field(r, 'kind') ?? ''),
        namespaced: field(r, 'namespaced') === true,
        verbs: strings(field(r, 'verbs')),
        shortNames: strings(field(r, 'shortNames')),
      }));
  }

  return {
    server,

    async discover() {
      const core = await send(
        describe('get', { group: '', resource: '(discovery)' }),
        'GET',
        '/api',
      );
      const coreVersions = strings(field(core.body, 'versions'));
      const apis = await send(
        describe('get', { group: '', resource: '(discovery)' }),
        'GET',
        '/apis',
      );
      const groups = field(apis.body, 'groups');
      const preferred = (Array.isArray(groups) ? groups : []).flatMap((g) => {
        const name = field(g, 'name');
        const version = field(field(g, 'preferredVersion'), 'version');
        return typeof name === 'string' && typeof version === 'string' ? [{ name, version }] : [];
      });
      const lists = await Promise.all([
        ...(coreVersions.includes('v1') ? [typesOf('', 'v1')] : []),
        ...preferred.map((g) => typesOf(g.name, g.version)),
      ]);
      return lists.flat();
    },

    async *listPages(type, options = {}) {
      let token = '';
      do {
        const query = new URLSearchParams({ limit: String(options.limit ?? 500) });
        if (options.labelSelector !== undefined && options.labelSelector !== '')
          query.set('labelSelector', options.labelSelector);
        if (token !== '') query.set('continue', token);
        const { body } = await send(
          describe('list', type, options.namespace),
          'GET',
          `${pathOf(type, options.namespace)}?${query}`,
        );
        const items = field(body, 'items');
        // A list's items carry no apiVersion and kind: they are the list's type.
        yield (Array.isArray(items) ? (items as KubeObject[]) : []).map((item) => ({
          ...item,
          apiVersion: apiVersionOf(type),
          kind: type.kind,
        }));
        const next = field(field(body, 'metadata'), 'continue');
        token = typeof next === 'string' ? next : '';
      } while (token !== '');
    },

    async get(type, namespace, name) {
      try {
        const { body } = await send(
          describe('get', type, namespace, name),
          'GET',
          pathOf(type, namespace, name),
        );
        return body as KubeObject;
      } catch (err) {
        if (field(err, 'status') === 404) return undefined;
        throw err;
      }
    },

    async apply(type, object, { force }) {
      const { namespace, name } = object.metadata;
      const query = new URLSearchParams({ fieldManager: FIELD_MANAGER, force: String(force) });
      const { body } = await send(
        describe('patch', type, namespace, name),
        'PATCH',
        `${pathOf(type, namespace, name)}?${query}`,
        { text: JSON.stringify(object), contentType: 'application/apply-patch+yaml' },
      );
      return body as KubeObject;
    },

    async delete(type, namespace, name) {
      try {
        await send(
          describe('delete', type, namespace, name),
          'DELETE',
          `${pathOf(type, namespace, name)}?propagationPolicy=Background`,
        );
      } catch (err) {
        if (field(err, 'status') !== 404) throw err;
      }
    },
  };
}
