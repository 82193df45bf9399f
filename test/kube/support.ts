/** Shared set-up for the fake cluster's tests: the ACP registry as a test starts from. */
import { join } from 'node:path';
import {
  type FakeCluster,
  type KubeApiServer,
  type SeedOptions,
  startKubeApiServer,
  writeKubeconfig,
} from '../../sandbox/kube/index.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';

/** Storage for a stand-in registry (test/kube/fake-registry.ts), which never reads it. */
export const UNREAD_STORAGE: SeedOptions = {
  bucket: 'b',
  endpoint: 'http://127.0.0.1:1',
  region: 'r',
  accessKey: 'a',
  secretKey: 's',
};

/** Storage as the ACP tests' ModuleInfo names it, reached with the Secret's `accessKey` and `secretKey`. */
export const acpStorage = (accessKey: string, secretKey: string): SeedOptions => ({
  bucket: 'registry-a',
  endpoint: 'http://127.0.0.1:9000',
  region: 'us-east-1',
  accessKey,
  secretKey,
});

/**
 * Seeds the ModuleInfo and Secret as ACP leaves them (UNREAD_STORAGE unless
 * `seed` says otherwise) and waits for the registry pod to be Ready; its name.
 */
export async function seedRegistry(
  cluster: FakeCluster,
  seed: Partial<SeedOptions> = {},
): Promise<string> {
  await cluster.seedAcpRegistry({ ...UNREAD_STORAGE, ...seed });
  return cluster.waitForReadyPod();
}

/**
 * A fake apiserver demanding `token` (so kubectl sends it, over TLS), a
 * kubeconfig for it in `dir`, and one running pod with a `postgres`
 * container in `namespace`: the start of the pods/exec tests.
 */
export async function apiWithPod(
  dir: string,
  token: string,
  namespace: string,
  pod: string,
  labels: Record<string, string> = {},
): Promise<{ api: KubeApiServer; kubeconfig: string }> {
  const api = await startKubeApiServer({ token });
  const kubeconfig = await writeKubeconfig(join(dir, 'kubeconfig'), {
    server: api.url,
    token,
    ...(api.caCert === undefined ? {} : { certificateAuthority: api.caCert }),
  });
  api.store.create(BuiltIn.namespaces, {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: namespace },
  });
  api.store.create(BuiltIn.pods, {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: pod, namespace, labels },
    spec: { containers: [{ name: 'postgres', image: 'postgres:15' }] },
    status: { phase: 'Running' },
  });
  return { api, kubeconfig };
}
