/** Kubeconfig files pointing `kubectl` and client-node at the fake apiserver. */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { stringify } from 'yaml';

export interface KubeconfigOptions {
  /** `http://127.0.0.1:PORT` */
  readonly server: string;
  readonly token?: string;
  /** PEM the client trusts for an `https://` server (the fake's `caCert`). */
  readonly certificateAuthority?: string;
  /** Context, cluster and user name; defaults to `regvault-sandbox`. */
  readonly context?: string;
  readonly namespace?: string;
}

/** A kubeconfig with one context per entry (the first is current) as YAML text. */
export function kubeconfigContextsYaml(entries: readonly KubeconfigOptions[]): string {
  const parts = entries.map(kubeconfigParts);
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: parts.map((p) => p.cluster),
    users: parts.map((p) => p.user),
    contexts: parts.map((p) => p.context),
    'current-context': parts[0]?.context.name ?? '',
    preferences: {},
  });
}

/** A single-context kubeconfig as YAML text. */
export function kubeconfigYaml(options: KubeconfigOptions): string {
  return kubeconfigContextsYaml([options]);
}

function kubeconfigParts(options: KubeconfigOptions) {
  const name = options.context ?? 'regvault-sandbox';
  return {
    cluster: {
      name,
      cluster: {
        server: options.server,
        ...(options.certificateAuthority === undefined
          ? {}
          : {
              'certificate-authority-data': Buffer.from(options.certificateAuthority).toString(
                'base64',
              ),
            }),
      },
    },
    user: { name, user: options.token === undefined ? {} : { token: options.token } },
    context: {
      name,
      context: {
        cluster: name,
        user: name,
        ...(options.namespace === undefined ? {} : { namespace: options.namespace }),
      },
    },
  };
}

/** Writes the kubeconfig (mode 0600, like kubectl does) and returns its path. */
export function writeKubeconfig(path: string, options: KubeconfigOptions): Promise<string> {
  return writeKubeconfigContexts(path, [options]);
}

/**
 * Writes one kubeconfig naming several clusters, one context each (each
 * entry's `context` must differ; the first is current), as a user who works
 * with a source and a target cluster has.
 */
export async function writeKubeconfigContexts(
  path: string,
  entries: readonly KubeconfigOptions[],
): Promise<string> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, kubeconfigContextsYaml(entries), { mode: 0o600 });
  return path;
}
