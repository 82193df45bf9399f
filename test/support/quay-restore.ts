/**
 * What the Quay restore tests share: a snapshot of the bed taken once, the
 * restore target's keys Secret as a user makes it, a restore through the
 * local runner into a namespace and bucket, and the blobs a bucket holds.
 */
import { runRestoreLocally } from '../../functions/commons/local/runner.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { snapshotWith } from './backup.ts';
import { QUAY_NAME, type QuayBed, quayDeps } from './quay.ts';
import { clientFor, listAll } from './s3.ts';

const b64 = (text: string) => Buffer.from(text).toString('base64');

/** Backs the bed up into `vault`; the snapshot's id. */
export function backUpQuay(s3: S3ServerHandle, bed: QuayBed, vault: string): Promise<string> {
  return snapshotWith(quayDeps(s3, vault, bed));
}

/** A Secret with the test server's keys, as a user makes for the restore target. */
export function keysSecret(
  s3: S3ServerHandle,
  bed: QuayBed,
  namespace: string,
  name: string,
): void {
  if (bed.api.store.get(BuiltIn.secrets, namespace, name) !== undefined) return;
  bed.api.store.create(BuiltIn.secrets, {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace },
    data: {
      'access-key-id': b64(s3.credentials.accessKeyId),
      'secret-access-key': b64(s3.credentials.secretAccessKey),
    },
  });
}

/** Creates a namespace for a restore and the keys Secret in it; the URL its quay-app will answer on. */
export async function drNamespace(
  s3: S3ServerHandle,
  bed: QuayBed,
  namespace: string,
  secretName: string,
): Promise<string> {
  bed.api.store.create(BuiltIn.namespaces, {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: namespace },
  });
  keysSecret(s3, bed, namespace, secretName);
  return bed.operator.serviceUrl(namespace, QUAY_NAME);
}

/** Restores `snapshotId` from `vault` into the QuayRegistry of `namespace`, onto `bucket`. */
export async function restoreQuay(
  s3: S3ServerHandle,
  bed: QuayBed,
  options: {
    vault?: string;
    snapshotId: string;
    namespace: string;
    bucket: string;
    secretName: string;
    registryUrl: string;
  },
) {
  const deps = quayDeps(s3, options.vault ?? 'vault', bed, [], {
    profileSettings: { namespace: options.namespace, waitSeconds: 60 },
    registryUrl: options.registryUrl,
  });
  try {
    return await runRestoreLocally(
      {
        snapshot: options.snapshotId,
        target: {
          bucket: options.bucket,
          endpoint: s3.endpoint,
          region: s3.region,
          secretName: options.secretName,
        },
        pullSample: 'all',
        rolloutTimeoutSeconds: 60,
      },
      { deps, waitMs: 200 },
    );
  } finally {
    deps.close();
  }
}

/** The blob digests a bucket's registry layout holds. */
export async function blobsIn(s3: S3ServerHandle, bucket: string): Promise<Set<string>> {
  const keys = await listAll(clientFor(s3), bucket, 'docker/registry/v2/blobs/');
  return new Set([...keys.keys()].map((key) => `sha256:${key.split('/').at(-2) ?? ''}`));
}
