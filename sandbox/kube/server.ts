/**
 * An in-process fake of kube-apiserver: discovery, CRUD, patch, watch,
 * `pods/log` and `pods/exec` (exec.ts) for the handful of resources regvault
 * touches, with bearer-token authentication and RBAC-style denials. Faithful enough that `kubectl` and
 * `@kubernetes/client-node` work against it unchanged.
 */
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { promisify } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { freePort, LOOPBACK } from '../process.ts';
import { managerOf, recordUpdate, serverSideApply } from './apply.ts';
import { type PodExecHandler, serveExec, wantsExecSocket } from './exec.ts';
import { openApiGroupVersion, openApiRoot } from './openapi.ts';
import { jsonPatch, mergePatch, strategicMergePatch } from './patch.ts';
import { decodeProtobuf, PROTOBUF_TYPE } from './protobuf.ts';
import {
  BuiltIn,
  definitionsOfCrd,
  type ModuleInfoResource,
  moduleInfoDefinition,
  type ResourceDefinition,
} from './resources.ts';
import { fieldSelector, labelSelector } from './selector.ts';
import {
  KubeApiError,
  type KubeObject,
  type ObjectMeta,
  ObjectStore,
  qualifiedResource,
  type ResourceRef,
} from './store.ts';
import { toTable, wantsTable } from './table.ts';

export const Verbs = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'] as const;
export type Verb = (typeof Verbs)[number];

/** An RBAC denial: requests matching every given field get 403. `*` matches anything. */
export interface ForbidRule {
  readonly verb: Verb | '*';
  /** Plural, optionally with a subresource: `moduleinfos`, `pods/log`, or `*`. */
  readonly resource: string;
  readonly namespace?: string;
  readonly name?: string;
}

/**
 * A lost answer: the next `count` requests matching verb and resource are
 * carried out, then the connection is closed without a reply, as when a
 * network drops the response to a write that the API server applied.
 */
export interface LostAnswerRule {
  readonly verb: Verb;
  readonly resource: string;
  readonly count: number;
}

/**
 * A change made while an answer is on its way: the next `count` requests
 * matching verb and resource are carried out, then `change` runs (it may
 * change the store) and the answer computed before it is sent, as when
 * something else changes the cluster between a client's read and its next
 * call (a controller replacing a pod that a list just returned).
 */
export interface RacingChangeRule {
  readonly verb: Verb;
  readonly resource: string;
  readonly count: number;
  readonly change: (answer: KubeObject | KubeObject[]) => void;
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly contentType: string | undefined;
  readonly accept: string | undefined;
}

/** Reads the log lines of one container of one pod. */
export type PodLogSource = (container: string | undefined) => readonly string[];

export interface KubeApiServerOptions {
  /** When set, every request needs `Authorization: Bearer <token>`. */
  readonly token?: string;
  /**
   * When set, every request needs a bearer token this accepts (as a cluster's
   * webhook authenticator would, e.g. EKS checking an STS-signed token).
   */
  readonly authenticate?: (token: string) => boolean;
  /** The user named in Forbidden messages. */
  readonly user?: string;
  readonly forbid?: readonly ForbidRule[];
  readonly moduleInfo?: ModuleInfoResource;
  /**
   * Serve HTTPS with a fresh self-signed certificate for 127.0.0.1. Defaults to
   * true when `token` or `authenticate` is set: kubectl (client-go) never sends a bearer token
   * over plain HTTP, so token auth cannot be exercised without TLS.
   */
  readonly tls?: boolean;
  /** Serves an existing store (e.g. to restart the server over the same state). */
  readonly store?: ObjectStore;
}

export interface KubeApiServer {
  /** `http://127.0.0.1:PORT`, or `https://` when serving TLS. */
  readonly url: string;
  readonly port: number;
  /** PEM of the self-signed serving certificate (its own CA) when serving TLS. */
  readonly caCert: string | undefined;
  readonly store: ObjectStore;
  readonly moduleInfo: ResourceDefinition;
  readonly resources: readonly ResourceDefinition[];
  /** Every request received so far, oldest first. */
  requests(): readonly RecordedRequest[];
  clearRequests(): void;
  /** Replaces the RBAC denials; takes effect for the next request. */
  setForbidden(rules: readonly ForbidRule[]): void;
  /** Applies the next matching requests but drops their answers (see LostAnswerRule). */
  loseAnswers(rule: LostAnswerRule): void;
  /** Changes the cluster after the next matching requests, before their answers go (see RacingChangeRule). */
  raceAnswers(rule: RacingChangeRule): void;
  /** Registers (or with `undefined` removes) where `pods/log` of a pod reads from. */
  setPodLogs(namespace: string, name: string, source: PodLogSource | undefined): void;
  /** Registers (or with `undefined` removes) what runs the commands `pods/exec` sends a pod. */
  setPodExec(namespace: string, name: string, handler: PodExecHandler | undefined): void;
  stop(): Promise<void>;
}

/** A page of a list: its items and, when more follow, the token for the next page. */
interface Page {
  readonly items: KubeObject[];
  readonly continue?: string;
  readonly remainingItemCount?: number;
}

interface Route {
  readonly definition: ResourceDefinition;
  readonly namespace: string | undefined;
  readonly name: string | undefined;
  readonly subresource: string | undefined;
}

const JSON_TYPE = 'application/json';

/** A failure as the API reports it: an unexpected one is a 500 saying what broke. */
const asApiError = (err: unknown): KubeApiError =>
  err instanceof KubeApiError
    ? err
    : new KubeApiError('InternalError', `fake apiserver failure: ${String(err)}`);
const APPLY_TYPE = 'application/apply-patch+yaml';

function send(res: ServerResponse, code: number, body: unknown, contentType = JSON_TYPE): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks);
  if ((req.headers['content-type'] ?? '').startsWith(PROTOBUF_TYPE)) return decodeProtobuf(raw);
  const text = raw.toString('utf8');
  if (text.trim() === '') throw new KubeApiError('BadRequest', 'the request body is empty');
  try {
    // An apply body is YAML (kubectl and client-node send JSON, which is YAML too).
    if ((req.headers['content-type'] ?? '').startsWith(APPLY_TYPE))
      return parseYaml(text) as unknown;
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new KubeApiError(
      'BadRequest',
      `the request body is not valid JSON: ${(err as Error).message}`,
    );
  }
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

function asKubeObject(value: unknown, definition: ResourceDefinition): KubeObject {
  if (!isObject(value) || !isObject(value['metadata'])) {
    throw new KubeApiError('BadRequest', `expected a ${definition.kind} object with metadata`);
  }
  const apiVersion =
    definition.group === '' ? definition.version : `${definition.group}/${definition.version}`;
  if (value['kind'] !== undefined && value['kind'] !== definition.kind) {
    throw new KubeApiError(
      'BadRequest',
      `the kind ${String(value['kind'])} does not match ${definition.kind}`,
    );
  }
  return { ...value, apiVersion, kind: definition.kind, metadata: value['metadata'] as ObjectMeta };
}

/** What the real apiserver does on write for some kinds: Secret stringData, Namespace phase. */
function normalise(definition: ResourceDefinition, object: KubeObject): KubeObject {
  if (definition === BuiltIn.secrets) {
    const stringData = isObject(object['stringData']) ? object['stringData'] : {};
    const data = { ...(isObject(object['data']) ? object['data'] : {}) };
    for (const [key, value] of Object.entries(stringData)) {
      data[key] = Buffer.from(String(value)).toString('base64');
    }
    const { stringData: _dropped, ...rest } = object;
    const type =
      typeof object['type'] === 'string' && object['type'] !== '' ? object['type'] : 'Opaque';
    return { ...rest, type, data } as KubeObject;
  }
  if (definition === BuiltIn.namespaces) {
    return {
      ...object,
      spec: object['spec'] ?? { finalizers: ['kubernetes'] },
      status: { phase: 'Active' },
    };
  }
  return object;
}

/** A throwaway self-signed certificate for 127.0.0.1, made by the openssl CLI. */
export async function selfSignedCertificate(): Promise<{ cert: string; key: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'regvault-kube-tls-'));
  try {
    await promisify(execFile)('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=regvault-fake-apiserver',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
    ]);
    const [cert, key] = await Promise.all([
      readFile(join(dir, 'cert.pem'), 'utf8'),
      readFile(join(dir, 'key.pem'), 'utf8'),
    ]);
    return { cert, key };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const versionInfo = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.4-regvault-fake',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2025-01-01T00:00:00Z',
  goVersion: 'go1.23.0',
  compiler: 'gc',
  platform: 'linux/amd64',
};

/** Starts the fake apiserver on a free loopback port. */
export async function startKubeApiServer(
  options: KubeApiServerOptions = {},
): Promise<KubeApiServer> {
  const store = options.store ?? new ObjectStore();
  const moduleInfo = moduleInfoDefinition(options.moduleInfo);
  const resources: ResourceDefinition[] = [...Object.values(BuiltIn), moduleInfo];
  // A CustomResourceDefinition serves its types from when it is stored until it is deleted.
  const crdTypes = new Map<string, ResourceDefinition[]>();
  const serveCrd = (name: string, crd: KubeObject | undefined) => {
    for (const old of crdTypes.get(name) ?? []) resources.splice(resources.indexOf(old), 1);
    const served = crd === undefined ? [] : definitionsOfCrd(crd);
    crdTypes.set(name, served);
    resources.push(...served);
  };
  for (const crd of store.list(BuiltIn.customresourcedefinitions)) serveCrd(crd.metadata.name, crd);
  const stopServingCrds = store.watch(({ type, ref, object }) => {
    if (
      ref.group !== BuiltIn.customresourcedefinitions.group ||
      ref.resource !== 'customresourcedefinitions'
    )
      return;
    serveCrd(object.metadata.name, type === 'DELETED' ? undefined : object);
  });
  const user = options.user ?? 'regvault';
  let forbidden: readonly ForbidRule[] = options.forbid ?? [];
  const lostAnswers: Array<{ verb: Verb; resource: string; remaining: number }> = [];
  const racingChanges: Array<RacingChangeRule & { remaining: number }> = [];
  const recorded: RecordedRequest[] = [];
  const logSources = new Map<string, PodLogSource>();
  const execHandlers = new Map<string, PodExecHandler>();
  /** Connections taken over by `pods/exec`: the HTTP server no longer tracks them. */
  const upgraded = new Set<Duplex>();
  const watches = new Set<ServerResponse>();

  const groupVersion = (d: ResourceRef) => (d.group === '' ? d.version : `${d.group}/${d.version}`);

  function discovery(path: string): unknown {
    if (path === '/version') return versionInfo;
    if (path === '/openapi/v3') return openApiRoot(resources, String(port));
    if (path.startsWith('/openapi/v3/'))
      return openApiGroupVersion(resources, path.slice('/openapi/v3/'.length));
    if (path === '/api') {
      return {
        kind: 'APIVersions',
        versions: ['v1'],
        serverAddressByClientCIDRs: [
          { clientCIDR: '0.0.0.0/0', serverAddress: `${LOOPBACK}:${port}` },
        ],
      };
    }
    const groups = [...new Set(resources.filter((d) => d.group !== '').map((d) => d.group))].map(
      (name) => {
        const versions = [
          ...new Set(
            resources.filter((d) => d.group === name).map((d) => `${d.group}/${d.version}`),
          ),
        ].map((gv) => ({ groupVersion: gv, version: gv.split('/')[1] }));
        return { name, versions, preferredVersion: versions[0] };
      },
    );
    if (path === '/apis') return { kind: 'APIGroupList', apiVersion: 'v1', groups };
    const group = /^\/apis\/([^/]+)$/.exec(path);
    if (group !== null) {
      const found = groups.find((g) => g.name === group[1]);
      return found === undefined ? undefined : { kind: 'APIGroup', apiVersion: 'v1', ...found };
    }
    const list = /^\/api\/(v1)$|^\/apis\/([^/]+\/[^/]+)$/.exec(path);
    if (list === null) return undefined;
    const gv = list[1] ?? list[2];
    const served = resources.filter((d) => groupVersion(d) === gv);
    if (served.length === 0) return undefined;
    return {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: gv,
      resources: served.flatMap((d) => [
        {
          name: d.resource,
          singularName: d.singular,
          namespaced: d.namespaced,
          kind: d.kind,
          verbs:
            d.resource === 'namespaces'
              ? ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch']
              : [...Verbs, 'deletecollection'].sort(),
          ...(d.shortNames === undefined ? {} : { shortNames: d.shortNames }),
          ...(d.custom === true ? { categories: ['all'] } : {}),
        },
        ...(d.subresources ?? []).map((sub) => ({
          name: `${d.resource}/${sub}`,
          singularName: '',
          namespaced: d.namespaced,
          kind: sub === 'log' ? 'Pod' : sub === 'scale' ? 'Scale' : d.kind,
          ...(sub === 'scale' ? { group: 'autoscaling', version: 'v1' } : {}),
          verbs: sub === 'log' ? ['get'] : ['get', 'patch', 'update'],
        })),
      ]),
    };
  }

  /** Maps `/api/v1/namespaces/ns/pods/name/log` and friends to a resource. */
  function route(path: string): Route | undefined {
    const parts = path
      .split('/')
      .filter((part) => part !== '')
      .map(decodeURIComponent);
    let rest: string[];
    let gv: string;
    if (parts[0] === 'api' && parts[1] === 'v1') {
      gv = 'v1';
      rest = parts.slice(2);
    } else if (parts[0] === 'apis' && parts.length >= 4) {
      gv = `${parts[1]}/${parts[2]}`;
      rest = parts.slice(3);
    } else {
      return undefined;
    }
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const [resource, name, subresource, ...extra] = rest;
    const definition = resources.find((d) => groupVersion(d) === gv && d.resource === resource);
    if (definition === undefined || extra.length > 0) return undefined;
    // A namespaced type may be listed across namespaces; otherwise the scope must match.
    if (namespace !== undefined && !definition.namespaced) return undefined;
    if (namespace === undefined && definition.namespaced && name !== undefined) return undefined;
    if (subresource !== undefined && !(definition.subresources ?? []).includes(subresource))
      return undefined;
    return { definition, namespace, name, subresource };
  }

  function verbOf(method: string, route: Route, query: URLSearchParams): Verb {
    const watch = query.get('watch');
    if (method === 'GET')
      return watch === 'true' || watch === '1'
        ? 'watch'
        : route.name === undefined
          ? 'list'
          : 'get';
    if (method === 'POST') return 'create';
    if (method === 'PUT') return 'update';
    if (method === 'PATCH') return 'patch';
    if (method === 'DELETE') return 'delete';
    throw new KubeApiError(
      'MethodNotAllowed',
      `the server does not allow this method on the requested resource`,
    );
  }

  function authorise(verb: Verb, r: Route, bodyName: string | undefined): void {
    const resource =
      r.subresource === undefined
        ? r.definition.resource
        : `${r.definition.resource}/${r.subresource}`;
    const name = r.name ?? bodyName;
    const denied = forbidden.some(
      (rule) =>
        (rule.verb === '*' || rule.verb === verb) &&
        (rule.resource === '*' || rule.resource === resource) &&
        (rule.namespace === undefined || rule.namespace === r.namespace) &&
        (rule.name === undefined || rule.name === name),
    );
    if (!denied) return;
    const subject = `${qualifiedResource(r.definition)}${r.name === undefined ? '' : ` "${r.name}"`}`;
    const scope =
      r.namespace === undefined ? 'at the cluster scope' : `in the namespace "${r.namespace}"`;
    throw new KubeApiError(
      'Forbidden',
      `${subject} is forbidden: User "${user}" cannot ${verb} resource "${resource}" in API group "${r.definition.group}" ${scope}`,
      {
        ...(r.name === undefined ? {} : { name: r.name }),
        group: r.definition.group,
        kind: r.definition.resource,
      },
    );
  }

  function requireNamespace(namespace: string | undefined): void {
    if (
      namespace !== undefined &&
      store.get(BuiltIn.namespaces, undefined, namespace) === undefined
    ) {
      throw new KubeApiError('NotFound', `namespaces "${namespace}" not found`, {
        name: namespace,
        kind: 'namespaces',
      });
    }
  }

  function identify(r: Route, object: KubeObject, requireName: boolean): KubeObject {
    const meta = object.metadata;
    if (r.namespace !== undefined) {
      if (meta.namespace !== undefined && meta.namespace !== '' && meta.namespace !== r.namespace) {
        throw new KubeApiError(
          'BadRequest',
          'the namespace of the provided object does not match the namespace sent on the request',
        );
      }
      meta.namespace = r.namespace;
    } else {
      delete meta.namespace;
    }
    if ((meta.name === undefined || meta.name === '') && typeof meta['generateName'] === 'string') {
      meta.name = `${meta['generateName']}${Math.random().toString(36).slice(2, 7)}`;
    }
    if (typeof meta.name !== 'string' || meta.name === '') {
      if (requireName)
        throw new KubeApiError(
          'Invalid',
          `${r.definition.kind} "" is invalid: metadata.name: Required value: name or generateName is required`,
        );
    }
    if (r.name !== undefined && meta.name !== r.name) {
      throw new KubeApiError(
        'BadRequest',
        `the name of the object (${meta.name}) does not match the name on the URL (${r.name})`,
      );
    }
    return object;
  }

  /**
   * Server-side apply: creates the object or applies over it, with the
   * field ownership of ./apply.ts. Whether it created the object, for the status code.
   */
  function apply(
    r: Route,
    name: string,
    body: unknown,
    query: URLSearchParams,
  ): { object: KubeObject; created: boolean } {
    const manager = query.get('fieldManager') ?? '';
    if (manager === '')
      throw new KubeApiError(
        'Invalid',
        'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
      );
    const applied = identify(r, asKubeObject(body, r.definition), true);
    const options = {
      manager,
      force: query.get('force') === 'true',
      apiVersion: groupVersion(r.definition),
      ref: r.definition,
    };
    if (store.get(r.definition, r.namespace, name) === undefined) {
      requireNamespace(r.namespace);
      const object = normalise(r.definition, serverSideApply(undefined, applied, options));
      return { object: store.create(r.definition, object), created: true };
    }
    const object = store.update(r.definition, r.namespace, name, (current) =>
      normalise(r.definition, serverSideApply(current, applied, options)),
    );
    return { object, created: false };
  }

  function applyPatch(
    r: Route,
    name: string,
    contentType: string,
    body: unknown,
    manager: string,
  ): KubeObject {
    const type = contentType.split(';')[0]?.trim();
    if (type === 'application/strategic-merge-patch+json' && r.definition.custom === true) {
      throw new KubeApiError(
        'UnsupportedMediaType',
        'the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml',
      );
    }
    const patcher =
      type === 'application/merge-patch+json'
        ? (current: KubeObject) => mergePatch(current, body)
        : type === 'application/strategic-merge-patch+json'
          ? (current: KubeObject) => strategicMergePatch(current, body)
          : type === 'application/json-patch+json'
            ? (current: KubeObject) => jsonPatch(current, body)
            : undefined;
    if (patcher === undefined) {
      throw new KubeApiError(
        'UnsupportedMediaType',
        `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`,
      );
    }
    return store.update(r.definition, r.namespace, name, (current) => {
      const patched = asKubeObject(patcher(current), r.definition);
      // The patched object carries the stored resourceVersion unless the patch set one.
      const written = normalise(r.definition, patched);
      return r.subresource === undefined
        ? recordUpdate(current, written, manager, groupVersion(r.definition))
        : written;
    });
  }

  /**
   * The `scale` subresource of Deployments and StatefulSets (what `kubectl
   * scale` reads and patches): an autoscaling/v1 Scale whose `spec.replicas`
   * is the workload's.
   */
  function scale(
    r: Route,
    name: string,
    verb: Verb,
    body: unknown,
    contentType: string,
  ): KubeObject {
    const asScale = (object: KubeObject): KubeObject => {
      const spec = isObject(object['spec']) ? object['spec'] : {};
      const status = isObject(object['status']) ? object['status'] : {};
      return {
        apiVersion: 'autoscaling/v1',
        kind: 'Scale',
        metadata: {
          name,
          ...(r.namespace === undefined ? {} : { namespace: r.namespace }),
          uid: object.metadata.uid,
          resourceVersion: object.metadata.resourceVersion,
          creationTimestamp: object.metadata.creationTimestamp,
        },
        spec: { replicas: typeof spec['replicas'] === 'number' ? spec['replicas'] : 1 },
        status: { replicas: typeof status['replicas'] === 'number' ? status['replicas'] : 0 },
      } as KubeObject;
    };
    const current = store.read(r.definition, r.namespace, name);
    if (verb === 'get') return asScale(current);
    const type = contentType.split(';')[0]?.trim();
    const wanted =
      verb === 'update'
        ? body
        : type === 'application/json-patch+json'
          ? jsonPatch(asScale(current), body)
          : mergePatch(asScale(current), body);
    const replicas =
      isObject(wanted) && isObject(wanted['spec']) ? wanted['spec']['replicas'] : undefined;
    if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0)
      throw new KubeApiError(
        'Invalid',
        `Scale.autoscaling "${name}" is invalid: spec.replicas: Invalid value: must be greater than or equal to 0`,
      );
    const written = store.update(r.definition, r.namespace, name, (object) => ({
      ...object,
      spec: { ...(isObject(object['spec']) ? object['spec'] : {}), replicas },
    }));
    return asScale(written);
  }

  function podLog(r: Route, name: string, query: URLSearchParams): string {
    const pod = store.read(r.definition, r.namespace, name);
    const container = query.get('container') ?? undefined;
    const spec = isObject(pod['spec']) ? pod['spec'] : {};
    const containers = (Array.isArray(spec['containers']) ? spec['containers'] : []) as Array<{
      name?: string;
    }>;
    if (container !== undefined && !containers.some((c) => c.name === container)) {
      throw new KubeApiError('BadRequest', `container ${container} is not valid for pod ${name}`);
    }
    if (container === undefined && containers.length > 1) {
      throw new KubeApiError(
        'BadRequest',
        `a container name must be specified for pod ${name}, choose one of: [${containers.map((c) => c.name).join(' ')}]`,
      );
    }
    // A container that has not started yet has no log: the kubelet answers 400, as here.
    const status = isObject(pod['status']) ? pod['status'] : {};
    const statuses = (
      Array.isArray(status['containerStatuses']) ? status['containerStatuses'] : []
    ) as Array<{ name?: string; state?: { waiting?: { reason?: string } } }>;
    const shownName = container ?? containers[0]?.name;
    const waiting = statuses.find((c) => c.name === shownName)?.state?.waiting?.reason;
    if (waiting === 'ContainerCreating' || waiting === 'PodInitializing')
      throw new KubeApiError(
        'BadRequest',
        `container "${shownName}" in pod "${name}" is waiting to start: ${waiting}`,
      );
    const lines = logSources.get(`${r.namespace}/${name}`)?.(container) ?? [];
    const tail = query.get('tailLines');
    const shown = tail === null ? lines : lines.slice(-Math.max(0, Number(tail)));
    return shown.length === 0 ? '' : `${shown.join('\n')}\n`;
  }

  function list(r: Route, query: URLSearchParams): KubeObject[] {
    const labels = labelSelector(query.get('labelSelector'));
    const fields = fieldSelector(query.get('fieldSelector'));
    return store.list(r.definition, r.namespace).filter((o) => labels(o) && fields(o));
  }

  /**
   * One page of a list (`limit`, `continue`): the token names the last object
   * served, so a page starts after it even when objects come and go between pages.
   */
  function listPage(r: Route, query: URLSearchParams): Page {
    const all = list(r, query);
    const token = query.get('continue');
    let after: string | undefined;
    if (token !== null && token !== '') {
      try {
        after = String(JSON.parse(Buffer.from(token, 'base64url').toString('utf8')).after);
      } catch {
        throw new KubeApiError('BadRequest', 'continue key is not valid: illegal base64 data');
      }
    }
    const position = (o: KubeObject) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    const rest = after === undefined ? all : all.filter((o) => position(o) > after);
    const limit = Number(query.get('limit') ?? '0');
    if (!Number.isInteger(limit) || limit <= 0 || rest.length <= limit) return { items: rest };
    const items = rest.slice(0, limit);
    const last = items.at(-1) as KubeObject;
    return {
      items,
      continue: Buffer.from(JSON.stringify({ after: position(last) })).toString('base64url'),
      remainingItemCount: rest.length - limit,
    };
  }

  function watch(r: Route, query: URLSearchParams, res: ServerResponse, table: boolean): void {
    const labels = labelSelector(query.get('labelSelector'));
    const fields = fieldSelector(query.get('fieldSelector'));
    res.writeHead(200, { 'Content-Type': JSON_TYPE, 'Transfer-Encoding': 'chunked' });
    // Clients block until the headers arrive and can only stop a watch after that.
    res.flushHeaders();
    // With `as=Table` every event carries a one-row Table, as server-side printing does.
    const emit = (type: string, object: KubeObject) =>
      res.write(
        `${JSON.stringify({ type, object: table ? toTable(r.definition, object, store.resourceVersion()) : object })}\n`,
      );
    const since = query.get('resourceVersion');
    // Without a resourceVersion a watch starts with the current state, as the real one does.
    if (since === null || since === '' || since === '0')
      for (const object of list(r, query)) emit('ADDED', object);
    const unsubscribe = store.watch((event) => {
      const { ref, object } = event;
      if (ref.group !== r.definition.group || ref.resource !== r.definition.resource) return;
      if (r.namespace !== undefined && object.metadata.namespace !== r.namespace) return;
      if (r.name !== undefined && object.metadata.name !== r.name) return;
      if (labels(object) && fields(object)) emit(event.type, object);
    });
    const timeout = Number(query.get('timeoutSeconds') ?? '1800');
    const timer = setTimeout(() => res.end(), timeout * 1000);
    watches.add(res);
    res.on('close', () => {
      clearTimeout(timer);
      unsubscribe();
      watches.delete(res);
    });
  }

  async function serveResource(
    req: IncomingMessage,
    res: ServerResponse,
    r: Route,
    query: URLSearchParams,
  ): Promise<void> {
    const method = req.method ?? 'GET';
    const verb = verbOf(method, r, query);
    const { definition, namespace } = r;
    const body =
      method === 'POST' || method === 'PUT' || method === 'PATCH' ? await readBody(req) : undefined;
    const bodyName =
      isObject(body) && isObject(body['metadata']) ? body['metadata']['name'] : undefined;
    authorise(verb, r, typeof bodyName === 'string' ? bodyName : undefined);
    if (query.has('dryRun') && !['get', 'list', 'watch'].includes(verb)) {
      // Better a clear refusal than a "dry run" that writes.
      throw new KubeApiError(
        'BadRequest',
        'the fake apiserver does not implement dryRun; leave it out',
      );
    }
    const accept = req.headers.accept;
    /** Spends one use of the first rule of `rules` that this request matches. */
    const spend = <R extends { verb: Verb; resource: string; remaining: number }>(
      rules: readonly R[],
    ): R | undefined => {
      const rule = rules.find(
        (r) => r.remaining > 0 && r.verb === verb && r.resource === definition.resource,
      );
      if (rule !== undefined) rule.remaining--;
      return rule;
    };
    const reply = (code: number, value: KubeObject | KubeObject[], page?: Page) => {
      spend(racingChanges)?.change(value);
      if (spend(lostAnswers) !== undefined) {
        // The write above is done; the client never hears of it.
        req.socket.destroy();
        return;
      }
      const more =
        page?.continue === undefined
          ? {}
          : { continue: page.continue, remainingItemCount: page.remainingItemCount };
      if (wantsTable(accept)) {
        const table = toTable(definition, value, store.resourceVersion()) as Record<
          string,
          unknown
        >;
        const metadata = isObject(table['metadata']) ? table['metadata'] : {};
        send(res, code, { ...table, metadata: { ...metadata, ...more } });
      } else if (Array.isArray(value)) {
        send(res, code, {
          kind: `${definition.kind}List`,
          apiVersion: groupVersion(definition),
          metadata: { resourceVersion: store.resourceVersion(), ...more },
          items: value,
        });
      } else send(res, code, value);
    };
    if (verb === 'watch') return watch(r, query, res, wantsTable(accept));
    if (verb === 'list') {
      const page = listPage(r, query);
      return reply(200, page.items, page);
    }
    const manager = managerOf(query.get('fieldManager'), req.headers['user-agent']);
    const gv = groupVersion(definition);
    if (verb === 'create') {
      if (r.name !== undefined)
        throw new KubeApiError('MethodNotAllowed', 'POST is not allowed on a named object');
      requireNamespace(namespace);
      const object = identify(r, asKubeObject(body, definition), true);
      const written = recordUpdate(undefined, normalise(definition, object), manager, gv);
      return reply(201, store.create(definition, written));
    }
    const name = r.name as string;
    if (r.subresource === 'exec')
      throw new KubeApiError('BadRequest', 'Upgrade request required (pods/exec speaks WebSocket)');
    if (r.subresource === 'log') {
      if (verb !== 'get') throw new KubeApiError('MethodNotAllowed', 'pods/log only supports GET');
      return send(res, 200, podLog(r, name, query), 'text/plain');
    }
    if (r.subresource === 'scale') {
      if (!['get', 'update', 'patch'].includes(verb))
        throw new KubeApiError('MethodNotAllowed', `${verb} is not allowed on scale`);
      const contentType = req.headers['content-type'] ?? '';
      return reply(200, scale(r, name, verb, body, contentType));
    }
    if (verb === 'get') return reply(200, store.read(definition, namespace, name));
    if (verb === 'update') {
      const object = normalise(definition, identify(r, asKubeObject(body, definition), true));
      const before = store.get(definition, namespace, name);
      const written =
        r.subresource === undefined ? recordUpdate(before, object, manager, gv) : object;
      return reply(200, store.replace(definition, written));
    }
    const contentType = req.headers['content-type'] ?? '';
    if (verb === 'patch' && contentType.startsWith(APPLY_TYPE)) {
      const applied = apply(r, name, body, query);
      return reply(applied.created ? 201 : 200, applied.object);
    }
    if (verb === 'patch') return reply(200, applyPatch(r, name, contentType, body, manager));
    if (r.subresource !== undefined) {
      throw new KubeApiError('MethodNotAllowed', `DELETE is not allowed on ${r.subresource}`);
    }
    const deleted = store.delete(definition, namespace, name);
    if (definition === BuiltIn.namespaces) {
      for (const d of resources.filter((candidate) => candidate.namespaced)) {
        for (const object of store.list(d, name)) store.delete(d, name, object.metadata.name);
      }
    }
    logSources.delete(`${namespace}/${name}`);
    return send(res, 200, {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Success',
      details: {
        name,
        group: definition.group,
        kind: definition.resource,
        uid: deleted.metadata.uid,
      },
    });
  }

  /** With a token set, every request must carry it. */
  function authenticate(req: IncomingMessage): void {
    if (options.token !== undefined && req.headers.authorization !== `Bearer ${options.token}`)
      throw new KubeApiError('Unauthorized', 'Unauthorized');
  }

  /** Records the request (the tests read them back); its URL. */
  function recordRequest(req: IncomingMessage): URL {
    const url = new URL(req.url ?? '/', 'http://fake');
    recorded.push({
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.search,
      contentType: req.headers['content-type'],
      accept: req.headers.accept,
    });
    return url;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = recordRequest(req);
    try {
      authenticate(req);
      const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (
        options.authenticate !== undefined &&
        !(bearer !== undefined && options.authenticate(bearer))
      ) {
        throw new KubeApiError('Unauthorized', 'Unauthorized');
      }
      const path = url.pathname.replace(/\/+$/, '') || '/';
      if (['/healthz', '/livez', '/readyz'].includes(path))
        return send(res, 200, 'ok', 'text/plain');
      const r = route(path);
      if (r !== undefined) return await serveResource(req, res, r, url.searchParams);
      const info = req.method === 'GET' ? discovery(path) : undefined;
      if (info !== undefined) return send(res, 200, info);
      throw new KubeApiError('NotFound', 'the server could not find the requested resource', {});
    } catch (err) {
      const error = asApiError(err);
      if (!res.headersSent) send(res, error.code, error.toStatus());
      else res.end();
    }
  }

  /** `pods/exec`: a WebSocket upgrade, checked as any request is, then handed to exec.ts. */
  function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    upgraded.add(socket);
    socket.once('close', () => upgraded.delete(socket));
    const url = recordRequest(req);
    try {
      authenticate(req);
      const r = route(url.pathname.replace(/\/+$/, ''));
      if (r?.definition !== BuiltIn.pods || r.subresource !== 'exec' || r.name === undefined)
        throw new KubeApiError('NotFound', 'the server could not find the requested resource', {});
      authorise('create', r, undefined);
      const pod = store.read(BuiltIn.pods, r.namespace, r.name);
      const spec = (pod['spec'] ?? {}) as { containers?: Array<{ name: string }> };
      const container = url.searchParams.get('container');
      if (container !== null && !(spec.containers ?? []).some((c) => c.name === container))
        throw new KubeApiError(
          'BadRequest',
          `container ${container} is not valid for pod ${r.name}`,
        );
      if (url.searchParams.getAll('command').length === 0)
        throw new KubeApiError(
          'BadRequest',
          'you must specify at least one command for the container',
        );
      const handler = execHandlers.get(`${r.namespace}/${r.name}`);
      if (handler === undefined)
        throw new KubeApiError(
          'InternalError',
          `the fake cluster runs no command in pod ${r.namespace}/${r.name} (a test registers one with setPodExec)`,
        );
      // Checked last: kubectl tries SPDY after a refused WebSocket, and must hear the same refusal.
      if (!wantsExecSocket(req))
        throw new KubeApiError(
          'BadRequest',
          'the fake apiserver speaks only the WebSocket exec protocols (v5.channel.k8s.io, v4.channel.k8s.io), not SPDY',
        );
      serveExec(req, socket, head, url.searchParams, handler);
    } catch (err) {
      const error = asApiError(err);
      const body = JSON.stringify(error.toStatus());
      socket.end(
        `HTTP/1.1 ${error.code} ${STATUS_CODES[error.code]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    }
  }

  const listener = (req: IncomingMessage, res: ServerResponse) => void handle(req, res);
  const tls =
    (options.tls ?? (options.token !== undefined || options.authenticate !== undefined))
      ? await selfSignedCertificate()
      : undefined;
  const server = tls === undefined ? createServer(listener) : createTlsServer(tls, listener);
  server.on('upgrade', upgrade);
  const port = await freePort();
  server.listen(port, LOOPBACK);
  await once(server, 'listening');
  let stopping: Promise<void> | undefined;

  return {
    url: `${tls === undefined ? 'http' : 'https'}://${LOOPBACK}:${port}`,
    port,
    caCert: tls?.cert,
    store,
    moduleInfo,
    resources,
    requests: () => [...recorded],
    clearRequests: () => void recorded.splice(0),
    setForbidden(rules) {
      forbidden = [...rules];
    },
    raceAnswers(rule) {
      racingChanges.push({ ...rule, remaining: rule.count });
    },
    loseAnswers(rule) {
      lostAnswers.push({ verb: rule.verb, resource: rule.resource, remaining: rule.count });
    },
    setPodLogs(namespace, name, source) {
      if (source === undefined) logSources.delete(`${namespace}/${name}`);
      else logSources.set(`${namespace}/${name}`, source);
    },
    setPodExec(namespace, name, handler) {
      if (handler === undefined) execHandlers.delete(`${namespace}/${name}`);
      else execHandlers.set(`${namespace}/${name}`, handler);
    },
    stop() {
      stopping ??= (async () => {
        stopServingCrds();
        for (const res of watches) res.end();
        for (const socket of upgraded) socket.destroy();
        const closed = once(server, 'close');
        server.close();
        server.closeAllConnections();
        await closed;
      })();
      return stopping;
    },
  };
}
