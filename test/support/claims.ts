/**
 * What the tests of registries on PersistentVolumeClaims share: a storage
 * reference on a claim, and the Secret with the vault's keys that regvault's
 * backup and restore Jobs read, created as an operator would.
 */
import type { StorageRef } from '../../functions/commons/registry/profile.ts';
import type { FakeCluster } from '../../sandbox/kube/index.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';

/** The Secret name the tests give `--job-vault-secret`. */
export const VAULT_KEYS_SECRET = 'regvault-vault-keys';

/** A registry's storage on claim `claimName` of `namespace`, its whole volume. */
export const onClaim = (claimName: string, namespace: string): StorageRef => ({
  bucket: '',
  regionEndpoint: '',
  region: '',
  secretName: '',
  rootDirectory: '',
  claim: { claimName, namespace, subPath: '' },
});

/** Creates the vault-keys Secret in `namespace` with the sandbox S3 server's keys. */
export function createVaultKeysSecret(
  cluster: FakeCluster,
  s3: S3ServerHandle,
  namespace: string,
): void {
  const b64 = (value: string) => Buffer.from(value).toString('base64');
  cluster.server.store.create(BuiltIn.secrets, {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: VAULT_KEYS_SECRET, namespace },
    type: 'Opaque',
    data: {
      AWS_ACCESS_KEY_ID: b64(s3.credentials.accessKeyId),
      AWS_SECRET_ACCESS_KEY: b64(s3.credentials.secretAccessKey),
    },
  });
}
