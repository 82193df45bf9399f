/**
 * A Quay deployment on the sandbox (the quay profile's tests and `npm run
 * demo -- --profile quay`): the fake apiserver with the sandbox Quay
 * Operator (a version given), a QuayRegistry on a bucket of the S3 server,
 * and images pushed through its registry API: the sandbox's quay-app
 * (quay-app.ts) keeps them as Quay does, rows in its real database and
 * blobs at Quay's keys in the bucket.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { OciLayout, pushImage } from './images/index.ts';
import { type KubeApiServer, startKubeApiServer, writeKubeconfig } from './kube/index.ts';
import { type QuayOperator, seedQuayRegistry, startQuayOperator } from './kube/quay-operator.ts';
import type { PostgresHandle } from './postgres.ts';
import type { QuayAppStarter } from './quay-app.ts';
import type { QuayImage } from './quay-schema.ts';
import type { S3ServerHandle } from './s3/index.ts';

/** The QuayRegistry's name in every Quay test; its database is `<name>-quay-database`. */
export const QUAY_NAME = 'registry';
export const QUAY_DATABASE = `${QUAY_NAME}-quay-database`;
const TOKEN = 'quay-test-token';

export interface QuayBed {
  readonly api: KubeApiServer;
  readonly operator: QuayOperator;
  readonly kubeconfig: string;
  readonly namespace: string;
  readonly registryUrl: string;
  readonly images: QuayImage[];
  database(): Promise<PostgresHandle>;
  stop(): Promise<void>;
}

/** Starts the cluster and seeds Quay on `bucket`: `count` images pushed (their rows in the database, their blobs in the bucket). */
export async function startQuayBed(
  s3: S3ServerHandle,
  options: {
    version: string;
    namespace: string;
    bucket: string;
    count?: number;
    noobaa?: boolean;
    /** What quay-app pods run (default: the sandbox's quay-app). */
    startQuayApp?: QuayAppStarter;
  },
): Promise<QuayBed> {
  const dir = await mkdtemp(join(tmpdir(), 'quay-bed-'));
  const api = await startKubeApiServer({ token: TOKEN });
  const operator = await startQuayOperator({
    server: api,
    version: options.version,
    ...(options.startQuayApp === undefined ? {} : { startQuayApp: options.startQuayApp }),
  });
  const kubeconfig = await writeKubeconfig(join(dir, 'kubeconfig'), {
    server: api.url,
    token: TOKEN,
    ...(api.caCert === undefined ? {} : { certificateAuthority: api.caCert }),
  });
  const client = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: s3.credentials,
    forcePathStyle: true,
  });
  await client.send(new CreateBucketCommand({ Bucket: options.bucket }));
  client.destroy();
  seedQuayRegistry(api, {
    namespace: options.namespace,
    name: QUAY_NAME,
    bucket: options.bucket,
    endpoint: s3.endpoint,
    region: s3.region,
    accessKey: s3.credentials.accessKeyId,
    secretKey: s3.credentials.secretAccessKey,
    ...(options.noobaa === true ? { noobaa: true } : {}),
  });
  await operator.waitForAvailable(options.namespace, QUAY_NAME, 60_000);
  const registryUrl = await operator.serviceUrl(options.namespace, QUAY_NAME);
  const images: QuayImage[] = [];
  const host = new URL(registryUrl).host;
  const layout = await OciLayout.create();
  try {
    for (let i = 0; i < (options.count ?? 2); i++) {
      const repository = `app${i}`;
      const ref = `${options.bucket}-${i}`;
      const image = await layout.addImage(ref, [{ seed: ref, size: 3_000 + i }]);
      await pushImage(layout, ref, `${host}/team/${repository}:v1`);
      const blobs = [];
      // Quay's rows name every blob with its size, as the registry serves it.
      for (const digest of image.blobs) {
        const head = await fetch(`${registryUrl}/v2/team/${repository}/blobs/${digest}`, {
          method: 'HEAD',
        });
        blobs.push({ digest, size: Number(head.headers.get('content-length') ?? 0) });
      }
      images.push({
        namespace: 'team',
        repository,
        tag: 'v1',
        manifestDigest: image.digest,
        blobs,
      });
    }
  } finally {
    await layout.remove();
  }
  const database = () => operator.database(options.namespace, QUAY_NAME);
  return {
    api,
    operator,
    kubeconfig,
    namespace: options.namespace,
    registryUrl,
    images,
    database,
    async stop() {
      await operator.stop();
      await api.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
