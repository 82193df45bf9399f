/**
 * What the Quay restore tests share: a snapshot of the bed taken once, the
 * restore target's keys Secret as a user makes it, a restore through the
 * local runner into a namespace and bucket, and the blobs a bucket holds.
 */
import { runRestoreLocally } from '../../functions/commons/local/runner.ts';
import { BuiltIn } from '../../sandbox/kube/resources.ts';
import { quayRows } from '../../sandbox/quay-schema.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { snapshotWith } from './backup.ts';
import { QUAY_DATABASE, QUAY_NAME, type QuayBed, quayDeps, startQuayBed } from './quay.ts';
import { clientFor, listAll, serverWithBuckets } from './s3.ts';

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

/** The blob digests a bucket in Quay's layout holds (`<storage_path>/sha256/<2>/<hex>`). */
export async function blobsIn(s3: S3ServerHandle, bucket: string): Promise<Set<string>> {
  const keys = await listAll(clientFor(s3), bucket, 'datastorage/registry/sha256/');
  return new Set([...keys.keys()].map((key) => `sha256:${key.split('/').at(-1) ?? ''}`));
}

/** A Quay bed on its own S3 server with these buckets, backed up once into `vault`. */
export interface RestoreBed {
  readonly s3: S3ServerHandle;
  readonly bed: QuayBed;
  /** Quay's rows as backed up: every restore must bring back exactly these. */
  readonly rows: string[];
  readonly snapshotId: string;
  stop(): Promise<void>;
}

/** Starts the S3 server (`vault` and `buckets`), the bed (`options`), and backs it up. */
export async function startRestoreBed(
  name: string,
  buckets: readonly string[],
  options: Parameters<typeof startQuayBed>[1],
  before: (bed: QuayBed) => void = () => undefined,
): Promise<RestoreBed> {
  const started = await serverWithBuckets(name, ['vault', ...buckets], { computeChecksums: true });
  started.client.destroy();
  const s3 = started.server;
  const bed = await startQuayBed(s3, options);
  const rows = await quayRows(await bed.database(), QUAY_DATABASE);
  before(bed);
  const snapshotId = await backUpQuay(s3, bed, 'vault');
  return {
    s3,
    bed,
    rows,
    snapshotId,
    async stop() {
      await bed.stop();
      await s3.stop();
    },
  };
}
