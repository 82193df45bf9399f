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

/** A single-context kubeconfig as YAML text. */
export function kubeconfigYaml(options: KubeconfigOptions): string {
  const name = options.context ?? 'regvault-sandbox';
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
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
    ],
    users: [{ name, user: options.token === undefined ? {} : { token: options.token } }],
    contexts: [
      {
        name,
        context: {
          cluster: name,
          user: name,
          ...(options.namespace === undefined ? {} : { namespace: options.namespace }),
        },
      },
    ],
    'current-context': name,
    preferences: {},
  });
}

/** Writes the kubeconfig (mode 0600, like kubectl does) and returns its path. */
export async function writeKubeconfig(path: string, options: KubeconfigOptions): Promise<string> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, kubeconfigYaml(options), { mode: 0o600 });
  return path;
}
