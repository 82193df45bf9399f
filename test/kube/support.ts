/** Shared set-up for the fake cluster's tests: the ACP registry as a test starts from. */
import type { FakeCluster, SeedOptions } from '../../sandbox/kube/index.ts';

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
