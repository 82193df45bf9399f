/**
 * Starts Debian's `docker-registry` (Docker Distribution 2.8) as a child
 * process with a generated config: the S3 driver on a given bucket and
 * endpoint, or the filesystem driver; optional htpasswd or token auth.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { stringify } from 'yaml';
import { freePort, LOOPBACK, type ManagedProcess, spawnManaged, waitFor } from '../process.ts';

/** The registry binary Debian installs. */
export const REGISTRY_BINARY = process.env['REGVAULT_REGISTRY_BINARY'] ?? 'docker-registry';

/** A bucket a registry keeps its data in, and the keys it reaches it with. */
export interface S3Storage {
  readonly bucket: string;
  /** The S3 endpoint URL (`regionendpoint` of the registry, `regionEndpoint` in a ModuleInfo). */
  readonly endpoint: string;
  readonly region: string;
  readonly accessKey: string;
  readonly secretKey: string;
  readonly rootDirectory?: string;
}

export type RegistryStorage =
  | ({ readonly kind: 's3' } & S3Storage)
  | { readonly kind: 'filesystem'; readonly directory?: string };

export type RegistryAuth =
  | { readonly kind: 'none' }
  /** `htpasswd` file content (bcrypt entries), e.g. from `htpasswdLine`. */
  | { readonly kind: 'htpasswd'; readonly htpasswd: string }
  | {
      readonly kind: 'token';
      readonly realm: string;
      readonly service: string;
      readonly issuer: string;
      /** PEM certificate whose key signs the tokens. */
      readonly rootCertificate: string;
    };

export interface RegistryOptions {
  readonly storage: RegistryStorage;
  readonly auth?: RegistryAuth;
  readonly name?: string;
  /** Resolve only once `/v2/` answers (default true). */
  readonly waitReady?: boolean;
  readonly readyTimeoutMs?: number;
}

export interface RegistryHandle {
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** `127.0.0.1:PORT`, as image references spell it. */
  readonly host: string;
  readonly port: number;
  readonly process: ManagedProcess;
  /** True when `/v2/` answers 200 or 401 (auth challenge): the registry serves. */
  probeReady(): Promise<boolean>;
  stop(): Promise<void>;
}

/** The registry config document (`config.yml`) for the given storage and auth. */
export function registryConfig(options: {
  storage: RegistryStorage;
  auth?: RegistryAuth;
  port: number;
  workDir: string;
}): object {
  const { storage, auth = { kind: 'none' } } = options;
  const storageBlock =
    storage.kind === 's3'
      ? {
          s3: {
            bucket: storage.bucket,
            regionendpoint: storage.endpoint,
            region: storage.region,
            accesskey: storage.accessKey,
            secretkey: storage.secretKey,
            secure: storage.endpoint.startsWith('https:'),
            v4auth: true,
            // fauxqs refuses single requests above ~11 MiB; 5 MiB is S3's minimum part size.
            chunksize: 5 * 1024 * 1024,
            ...(storage.rootDirectory === undefined
              ? {}
              : { rootdirectory: storage.rootDirectory }),
          },
          redirect: { disable: true },
          delete: { enabled: true },
          cache: { blobdescriptor: 'inmemory' },
        }
      : {
          filesystem: { rootdirectory: storage.directory ?? join(options.workDir, 'data') },
          delete: { enabled: true },
        };
  const authBlock =
    auth.kind === 'htpasswd'
      ? { htpasswd: { realm: 'regvault-sandbox', path: join(options.workDir, 'htpasswd') } }
      : auth.kind === 'token'
        ? {
            token: {
              realm: auth.realm,
              service: auth.service,
              issuer: auth.issuer,
              rootcertbundle: join(options.workDir, 'token-root.pem'),
            },
          }
        : undefined;
  return {
    version: 0.1,
    log: { level: 'info', formatter: 'text', accesslog: { disabled: true } },
    storage: storageBlock,
    http: {
      addr: `${LOOPBACK}:${options.port}`,
      headers: { 'X-Content-Type-Options': ['nosniff'] },
    },
    ...(authBlock === undefined ? {} : { auth: authBlock }),
    // The storage health check makes /v2/ answer 503 and log the S3 error while
    // the bucket cannot be read, as a registry pod that is not Ready would.
    ...(storage.kind === 's3'
      ? { health: { storagedriver: { enabled: true, interval: '2s', threshold: 1 } } }
      : {}),
  };
}

/** Starts one registry; with `waitReady` (the default) resolves when it serves `/v2/`. */
export async function startRegistry(options: RegistryOptions): Promise<RegistryHandle> {
  const port = await freePort();
  const workDir = await mkdtemp(join(tmpdir(), 'regvault-registry-'));
  const auth = options.auth ?? { kind: 'none' };
  const configPath = join(workDir, 'config.yml');
  await writeFile(
    configPath,
    stringify(registryConfig({ storage: options.storage, auth, port, workDir })),
    { mode: 0o600 },
  );
  if (auth.kind === 'htpasswd')
    await writeFile(join(workDir, 'htpasswd'), auth.htpasswd, { mode: 0o600 });
  if (auth.kind === 'token') await writeFile(join(workDir, 'token-root.pem'), auth.rootCertificate);
  const child = spawnManaged({
    name: options.name ?? `registry-${port}`,
    command: REGISTRY_BINARY,
    args: ['serve', configPath],
    // aws-sdk-go panics on the AWS_CA_BUNDLE this environment sets (FACTS.md).
    unsetEnv: ['AWS_CA_BUNDLE'],
    cwd: workDir,
  });
  const url = `http://${LOOPBACK}:${port}`;
  const probeReady = async (): Promise<boolean> => {
    if (!child.running()) return false;
    try {
      const response = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2_000) });
      await response.body?.cancel();
      return response.status === 200 || response.status === 401;
    } catch {
      return false;
    }
  };
  const handle: RegistryHandle = {
    url,
    host: `${LOOPBACK}:${port}`,
    port,
    process: child,
    probeReady,
    async stop() {
      await child.stop();
      await rm(workDir, { recursive: true, force: true });
    },
  };
  if (options.waitReady ?? true) {
    try {
      await waitFor(`registry ${child.name}`, probeReady, {
        process: child,
        timeoutMs: options.readyTimeoutMs ?? 30_000,
      });
    } catch (err) {
      await handle.stop();
      throw err;
    }
  }
  return handle;
}

/** One htpasswd line with a bcrypt hash, the only scheme the registry's htpasswd auth accepts. */
export function htpasswdLine(username: string, password: string): string {
  return `${username}:${bcrypt.hashSync(password, 8)}\n`;
}
