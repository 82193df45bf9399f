/**
 * Cluster access through @kubernetes/client-node: a kubeconfig from a file
 * (with context, like kubectl) or from text (a Secrets Manager secret), and
 * errors turned into messages a person can act on: the URL that could not be
 * reached, the verb and resource that were refused with the RBAC rule that
 * would allow them, what was not found.
 */
import { ApiException, KubeConfig } from '@kubernetes/client-node';
import { ClusterError, InputError, messageOf } from '../errors.ts';
import { type EksIdentity, EksTokenAuthenticator } from './eks-token.ts';

export interface KubeconfigSource {
  /** Path of a kubeconfig file; defaults to $KUBECONFIG (resolved by the caller) or ~/.kube/config. */
  readonly path?: string;
  /** Kubeconfig YAML text (Lambda: read from Secrets Manager). */
  readonly yaml?: string;
  readonly context?: string;
  /**
   * An EKS cluster: requests carry a short-lived token made from these
   * credentials (eks-token.ts) instead of any credential the kubeconfig's
   * user holds, which then needs only the server and its CA.
   */
  readonly eks?: EksIdentity;
}

/** What went wrong reading a kubeconfig, without any of its content. */
function kubeconfigProblem(err: unknown): string {
  // Duck-typed: errors from node:fs may come from another realm (jest's VM contexts).
  const field = (value: unknown, name: string): unknown =>
    typeof value === 'object' && value !== null ? Reflect.get(value, name) : undefined;
  const code = field(err, 'code');
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code))
    return `the file cannot be read (${code})`;
  const line = field(field(err, 'mark'), 'line');
  return typeof line === 'number'
    ? `it is not valid YAML (near line ${line + 1}; its text is not repeated here because it holds credentials)`
    : 'it is not a valid kubeconfig (its text is not repeated here because it holds credentials)';
}

/** Which kubeconfig was read, for messages. */
function kubeconfigSubject(source: KubeconfigSource): string {
  if (source.yaml !== undefined) return 'the kubeconfig secret';
  return source.path === undefined
    ? 'the kubeconfigs KUBECONFIG lists'
    : `the kubeconfig ${source.path}`;
}

/**
 * Loads a kubeconfig and selects the context. A kubeconfig that cannot be
 * read, or has no such context, is bad input: it names the file or context
 * and what to give instead.
 */
export function loadKubeConfig(source: KubeconfigSource): KubeConfig {
  const kc = new KubeConfig();
  const subject = kubeconfigSubject(source);
  try {
    if (source.yaml !== undefined) kc.loadFromString(source.yaml);
    else if (source.path !== undefined) kc.loadFromFile(source.path);
    // A $KUBECONFIG list: the first file's current-context wins, as with kubectl.
    else kc.loadFromDefault(undefined, true);
  } catch (err) {
    // A parser's message quotes the text around the problem, and a kubeconfig
    // holds tokens and keys: only a file system error code and the position go out.
    throw new InputError(`the kubeconfig cannot be used: ${kubeconfigProblem(err)}`, [
      `${source.yaml === undefined ? '--kubeconfig' : subject}: give a valid kubeconfig instead of ${subject} (\`kubectl config view --minify --raw\` prints one that works)`,
    ]);
  }
  const contexts = kc.getContexts().map((c) => c.name);
  if (source.context !== undefined) {
    if (!contexts.includes(source.context)) {
      throw new InputError(`the kubeconfig has no context "${source.context}"`, [
        `--context: name one of its contexts (${contexts.join(', ') || 'it has none'}), or leave it out for its current context (read from ${subject})`,
      ]);
    }
    kc.setCurrentContext(source.context);
  }
  if (kc.getCurrentCluster() === null) {
    throw new InputError('the kubeconfig names no current cluster', [
      `--context: name one of its contexts (${contexts.join(', ') || 'it has none'}), or set current-context in ${subject}`,
    ]);
  }
  if (source.eks !== undefined) useEksTokens(kc, source.eks);
  return kc;
}

/**
 * Makes the current context's user authenticate with EKS tokens alone: a
 * token, client certificate or exec plugin it names is dropped (an exec
 * plugin such as `aws eks get-token` cannot run inside Lambda, and a stored
 * token is what these short-lived ones replace).
 */
function useEksTokens(kc: KubeConfig, identity: EksIdentity): void {
  const name = kc.getContextObject(kc.getCurrentContext())?.user ?? 'regvault-eks';
  kc.users = [...kc.users.filter((user) => user.name !== name), { name }];
  const context = kc.getContextObject(kc.getCurrentContext());
  if (context !== null && context.user !== name)
    kc.contexts = kc.contexts.map((c) => (c.name === context.name ? { ...c, user: name } : c));
  kc.addAuthenticator(new EksTokenAuthenticator(identity, name));
}

/** What a call was doing, for error messages and RBAC hints. */
export interface CallDescription {
  readonly verb: 'get' | 'list' | 'patch' | 'create' | 'update' | 'delete' | 'watch';
  readonly resource: string;
  readonly group: string;
  readonly namespace?: string;
  readonly name?: string;
  readonly subresource?: string;
}

/** A Kubernetes API call failed; `status` is the HTTP status when the server answered. */
export class KubeApiError extends ClusterError {
  readonly status: number | undefined;
  readonly reason: string | undefined;

  constructor(message: string, status?: number, reason?: string, options?: ErrorOptions) {
    super(message, options);
    this.status = status;
    this.reason = reason;
  }
}

/** True when the API server answered 404: the object, or its type, is not there (any more). */
export function isNotFound(err: unknown): boolean {
  return err instanceof KubeApiError && err.status === 404;
}

function target(call: CallDescription): string {
  const what = `${call.resource}${call.subresource === undefined ? '' : `/${call.subresource}`}${call.group === '' ? '' : `.${call.group}`}`;
  const where =
    call.namespace === undefined ? 'at the cluster scope' : `in namespace ${call.namespace}`;
  return `${call.verb} ${what}${call.name === undefined ? '' : ` "${call.name}"`} ${where}`;
}

/** The RBAC rule (YAML) that grants `call`. */
export function rbacRuleFor(call: CallDescription): string {
  const resource =
    call.subresource === undefined ? call.resource : `${call.resource}/${call.subresource}`;
  return [
    `- apiGroups: ["${call.group}"]`,
    `  resources: ["${resource}"]`,
    ...(call.name === undefined ? [] : [`  resourceNames: ["${call.name}"]`]),
    `  verbs: ["${call.verb}"]`,
    `  # in a ${call.namespace === undefined ? 'ClusterRole' : `Role in namespace ${call.namespace}`}`,
  ].join('\n');
}

function statusMessage(body: unknown): { message?: string; reason?: string } {
  const parse = (value: unknown) => {
    if (typeof value === 'string') {
      try {
        return JSON.parse(value) as unknown;
      } catch {
        return { message: value };
      }
    }
    return value;
  };
  const status = parse(body);
  if (typeof status === 'object' && status !== null) {
    const s = status as { message?: unknown; reason?: unknown };
    return {
      ...(typeof s.message === 'string' ? { message: s.message } : {}),
      ...(typeof s.reason === 'string' ? { reason: s.reason } : {}),
    };
  }
  return {};
}

/** Runs a client-node call and rethrows its failure as a KubeApiError a person can act on. */
export async function kubeCall<T>(
  server: string,
  call: CallDescription,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw explainKubeError(server, call, err);
  }
}

/** Turns a client-node error into a KubeApiError naming the call and the fix. */
export function explainKubeError(
  server: string,
  call: CallDescription,
  err: unknown,
): KubeApiError {
  if (err instanceof ApiException) {
    const { message, reason } = statusMessage(err.body);
    const detail = message === undefined ? '' : ` (${message})`;
    switch (err.code) {
      case 401:
        return new KubeApiError(
          `the API server at ${server} did not accept regvault's credentials to ${target(call)}${detail}; check the kubeconfig's user (token or certificate) is current`,
          401,
          reason,
          { cause: err },
        );
      case 403:
        return new KubeApiError(
          `the API server at ${server} refused to ${target(call)}${detail}. Grant regvault's identity this rule:\n${rbacRuleFor(call)}`,
          403,
          reason,
          { cause: err },
        );
      case 404:
        return new KubeApiError(
          `${target(call).replace(/^\w+ /, '')} was not found at ${server}${detail}`,
          404,
          reason,
          { cause: err },
        );
      case 409:
        return new KubeApiError(
          `${target(call)} conflicted with another change${detail}; read it again and retry`,
          409,
          reason,
          { cause: err },
        );
      default:
        return new KubeApiError(
          `${target(call)} failed with HTTP ${err.code} at ${server}${detail}`,
          err.code,
          reason,
          { cause: err },
        );
    }
  }
  const text = messageOf(err);
  return new KubeApiError(
    `could not reach the Kubernetes API server at ${server} to ${target(call)}: ${text}; check the kubeconfig's server URL and the network path to it`,
    undefined,
    undefined,
    { cause: err },
  );
}
