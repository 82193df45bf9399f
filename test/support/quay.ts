/**
 * A Quay deployment for the quay profile's tests: the fake apiserver with the
 * sandbox Quay Operator (a version given), a QuayRegistry on a bucket of the
 * test's S3 server, images pushed through its registry API and Quay's rows
 * in its real database, and local workflow deps with the quay profile.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LocalDepsOptions } from '../../functions/commons/local/deps.ts';
import type { StepLogger } from '../../functions/commons/log.ts';
import { OciLayout, pushImage } from '../../sandbox/images/index.ts';
import {
  type KubeApiServer,
  realRegistryStarter,
  startKubeApiServer,
  writeKubeconfig,
} from '../../sandbox/kube/index.ts';
import {
  type QuayOperator,
  seedQuayRegistry,
  startQuayOperator,
} from '../../sandbox/kube/quay-operator.ts';
import type { PostgresHandle } from '../../sandbox/postgres.ts';
import { type QuayImage, seedQuayDatabase } from '../../sandbox/quay-schema.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, storageOn, vaultDeps } from './s3.ts';

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

/** Starts the cluster and seeds Quay on `bucket`: `count` images pushed, their rows in the database. */
export async function startQuayBed(
  s3: S3ServerHandle,
  options: { version: string; namespace: string; bucket: string; count?: number },
): Promise<QuayBed> {
  const dir = await mkdtemp(join(tmpdir(), 'quay-bed-'));
  const api = await startKubeApiServer({ token: TOKEN });
  const operator = await startQuayOperator({
    server: api,
    version: options.version,
    startRegistry: realRegistryStarter,
  });
  const kubeconfig = await writeKubeconfig(join(dir, 'kubeconfig'), {
    server: api.url,
    token: TOKEN,
    ...(api.caCert === undefined ? {} : { certificateAuthority: api.caCert }),
  });
  const client = clientFor(s3);
  await createBucket(client, options.bucket);
  client.destroy();
  seedQuayRegistry(api, {
    namespace: options.namespace,
    name: QUAY_NAME,
    ...storageOn(s3, options.bucket),
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
  await seedQuayDatabase(await database(), QUAY_DATABASE, images);
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

/** Local deps with the quay profile on the bed's cluster, the vault in `vault`; `lines` collects the log. */
export function quayDeps(
  s3: S3ServerHandle,
  vault: string,
  bed: QuayBed,
  lines: string[] = [],
  more: Omit<LocalDepsOptions, 'vault'> = {},
) {
  const log =
    (level: string) =>
    (message: string, fields?: Record<string, unknown>): void => {
      lines.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`);
    };
  const logger: StepLogger = { info: log('info'), warn: log('warn') };
  return vaultDeps(s3, vault, '', {
    kube: { path: bed.kubeconfig },
    profileName: 'quay',
    profileSettings: { namespace: bed.namespace, waitSeconds: 60 },
    registryUrl: bed.registryUrl,
    logger,
    ...more,
  });
}
