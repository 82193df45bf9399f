/**
 * The local bed `npm run demo` and `npm run sandbox` both stand on: the Debian
 * packages it needs, an S3 server with the buckets, a fake cluster whose ACP
 * ModuleInfo runs a real `docker-registry` on the registry bucket, and sample
 * images pushed into it.
 */
import { execFileSync } from 'node:child_process';
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { createLocalDeps } from '../functions/commons/local/deps.ts';
import { createS3Client } from '../functions/commons/s3/client.ts';
import {
  type PopulatedRegistry,
  type PopulateOptions,
  populateRegistry,
} from '../sandbox/images/index.ts';
import { type FakeCluster, startFakeCluster } from '../sandbox/kube/index.ts';
import { type S3ServerHandle, startS3Server } from '../sandbox/s3/index.ts';

/** Prints one step: `text` for people, `event` and `fields` for `--json`. */
export type Say = (event: string, text: string, fields?: Record<string, unknown>) => void;

/**
 * Installs the Debian packages the sandbox runs when running as root; otherwise
 * names the missing ones with the command to install them and exits 2.
 * `who` names the script in that message ("the demo").
 */
export function ensureSandboxPackages(who: string, say: Say, quiet: boolean): void {
  const needed = [
    { binary: 'docker-registry', pkg: 'docker-registry' },
    { binary: 'skopeo', pkg: 'skopeo' },
    // The fake cluster API serves TLS with a certificate it makes with openssl.
    { binary: 'openssl', pkg: 'openssl' },
  ];
  const missing = needed.filter(({ binary }) => {
    try {
      execFileSync('sh', ['-c', `command -v ${binary}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length === 0) return;
  const packages = missing.map((m) => m.pkg);
  if (process.getuid?.() === 0) {
    say(
      'install',
      `installing Debian packages the sandbox needs: ${packages.join(' ')} (running as root)`,
      { packages },
    );
    execFileSync(
      'sh',
      [
        '-c',
        `apt-get install -y -qq --no-install-recommends ${packages.join(' ')} || (apt-get update -qq && apt-get install -y -qq --no-install-recommends ${packages.join(' ')})`,
      ],
      {
        stdio: quiet ? 'ignore' : 'inherit',
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      },
    );
    return;
  }
  process.stderr.write(
    `${who} needs these Debian packages: ${packages.join(', ')}\ninstall them with:\n  sudo apt-get install -y ${packages.join(' ')}\n`,
  );
  process.exit(2);
}

export interface SandboxBedOptions {
  /** Name of the S3 server process, in listings and error messages. */
  readonly name: string;
  /** The bucket the registry stores its images in. */
  readonly registryBucket: string;
  /** More buckets to create, empty (a vault, a restore target). */
  readonly buckets: readonly string[];
  /** What to push; `populateRegistry` runs once per entry, so repositories of different tag counts can mix. */
  readonly images: readonly PopulateOptions[];
  /** A bearer token the cluster API demands (kubectl asks for a password when the kubeconfig has no credentials). */
  readonly clusterToken?: string;
  /** Called once the registry is ready, before the pushes. */
  readonly beforePush?: (host: string) => void;
}

export interface SandboxBed {
  readonly s3: S3ServerHandle;
  /** A client with the S3 server's keys, path style. */
  readonly admin: S3Client;
  readonly cluster: FakeCluster;
  /** `127.0.0.1:PORT`: where the registry Service answers, for image references. */
  readonly host: string;
  /** Every image pushed, over all of `options.images`. */
  readonly images: PopulatedRegistry;
  /** Local workflow dependencies with the vault in `vaultBucket`, the fake cluster and its registry. */
  deps(vaultBucket: string): ReturnType<typeof createLocalDeps>;
  /** Stops the cluster (and its registry processes) and the S3 server. */
  stop(): Promise<void>;
}

/** Starts the bed; what it started is stopped again when a later step fails. */
export async function startSandboxBed(options: SandboxBedOptions): Promise<SandboxBed> {
  const s3 = await startS3Server({ name: options.name });
  const admin = createS3Client(
    { endpoint: s3.endpoint, region: s3.region, forcePathStyle: true },
    s3.credentials,
  );
  let cluster: FakeCluster | undefined;
  const stop = async () => {
    admin.destroy();
    await cluster?.stop();
    await s3.stop();
  };
  try {
    cluster = await startFakeCluster({
      tls: true,
      ...(options.clusterToken === undefined ? {} : { token: options.clusterToken }),
    });
    for (const bucket of [options.registryBucket, ...options.buckets])
      await admin.send(new CreateBucketCommand({ Bucket: bucket }));
    await cluster.seedAcpRegistry({
      bucket: options.registryBucket,
      endpoint: s3.endpoint,
      region: s3.region,
      accessKey: s3.credentials.accessKeyId,
      secretKey: s3.credentials.secretAccessKey,
    });
    await cluster.waitForReadyPod(60_000);
    const host = new URL(cluster.registryUrl).host;
    options.beforePush?.(host);
    const repositories: PopulatedRegistry['repositories'] = [];
    const blobs = new Set<string>();
    for (const populate of options.images) {
      const pushed = await populateRegistry(host, populate);
      repositories.push(...pushed.repositories);
      for (const blob of pushed.blobs) blobs.add(blob);
    }
    const { kubeconfigPath, registryUrl } = cluster;
    const deps = (vaultBucket: string) =>
      createLocalDeps({
        vault: {
          location: {
            endpoint: s3.endpoint,
            region: s3.region,
            bucket: vaultBucket,
            prefix: '',
            forcePathStyle: true,
            access: 'vault',
          },
          credentials: s3.credentials,
        },
        kube: { path: kubeconfigPath },
        registryUrl,
      });
    return { s3, admin, cluster, host, images: { repositories, blobs }, deps, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
