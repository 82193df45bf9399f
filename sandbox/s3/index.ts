/**
 * Starts and stops sandbox S3 + SQS servers: each one is a child process
 * running fauxqs (pinned in package.json) on 127.0.0.1 and a free port, with
 * request counters and fault injection reachable over HTTP.
 */
import { fileURLToPath } from 'node:url';
import {
  freePort,
  type ManagedProcess,
  spawnManaged,
  typeScriptCommand,
  waitFor,
} from '../process.ts';
import type { FaultRule } from './extensions.ts';
import type { FillResult } from './registry-fill.ts';

export type { FaultRule } from './extensions.ts';
export type { FillResult } from './registry-fill.ts';

/** Request counts by AWS operation name (S3 and SQS), e.g. `ListObjectsV2`, `CopyObject`, `UploadPartCopy`. */
export type Counters = Partial<
  Record<
    | 'ListObjectsV2'
    | 'ListObjects'
    | 'CopyObject'
    | 'UploadPartCopy'
    | 'UploadPart'
    | 'GetObject'
    | 'PutObject'
    | 'HeadObject'
    | 'DeleteObject'
    | 'DeleteObjects'
    | 'CreateMultipartUpload'
    | 'CompleteMultipartUpload'
    | 'AbortMultipartUpload'
    | 'ListMultipartUploads'
    | 'ListParts'
    | 'CreateBucket'
    | 'HeadBucket'
    | 'SendMessage'
    | 'ReceiveMessage'
    | 'DeleteMessage',
    number
  >
> &
  Readonly<Record<string, number>>;

export interface S3ServerOptions {
  /** Shown in process listings and error messages. */
  readonly name?: string;
  readonly region?: string;
  /** Compute SHA-256 checksums for copies that ask for them, as AWS S3 does (off: fauxqs computes none). */
  readonly computeChecksums?: boolean;
  /**
   * Buckets that behave as if they had an S3 Object Lock default retention:
   * PutObject and UploadPart without Content-MD5 are refused, as AWS refuses
   * them, and GetObjectLockConfiguration reports it. No versions are kept: a
   * delete removes the object, where AWS would keep the locked version.
   */
  readonly objectLockBuckets?: readonly string[];
  /** Their default retention as GetObjectLockConfiguration reports it (GOVERNANCE, 1 day unless given). */
  readonly objectLockRetention?: {
    readonly mode: 'GOVERNANCE' | 'COMPLIANCE';
    readonly days: number;
  };
  /**
   * Access key ids and the buckets each may use; any other key is refused
   * (InvalidAccessKeyId), and a listed key on another bucket gets
   * AccessDenied. Unset: any key may use any bucket. Only the key id is
   * checked, not the signature.
   */
  readonly keyBuckets?: Readonly<Record<string, readonly string[]>>;
  /** The server process's V8 heap limit in MiB (Node's default is about 4 GiB here). */
  readonly heapMiB?: number;
}

export interface S3ServerHandle {
  /** `http://127.0.0.1:PORT`, for S3 (path style) and SQS alike. */
  readonly endpoint: string;
  readonly port: number;
  readonly region: string;
  /** fauxqs accepts any keys; these are what the sandbox hands out. */
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
  readonly process: ManagedProcess;
  /** Requests served so far, by AWS operation name (faulted requests included). */
  counters(): Promise<Counters>;
  resetCounters(): Promise<void>;
  /** The next `rule.count` requests matching the rule fail with its status and code. */
  injectFaults(rule: FaultRule): Promise<void>;
  clearFaults(): Promise<void>;
  /**
   * Writes a registry of exactly `objects` objects into `bucket` (made if
   * missing) inside the server process, in Docker Distribution's layout
   * (sandbox/s3/registry-fill.ts): a million objects in seconds.
   */
  fillRegistry(bucket: string, objects: number, seed?: number): Promise<FillResult>;
  stop(): Promise<void>;
}

const entry = fileURLToPath(new URL('./server-main.ts', import.meta.url));

/** Starts one server and resolves once it accepts requests. */
export async function startS3Server(options: S3ServerOptions = {}): Promise<S3ServerHandle> {
  const region = options.region ?? 'us-east-1';
  const port = await freePort();
  const { command, args } = typeScriptCommand(entry);
  const child = spawnManaged({
    name: options.name ?? `s3-${port}`,
    command,
    args:
      options.heapMiB === undefined ? args : [`--max-old-space-size=${options.heapMiB}`, ...args],
    env: {
      REGVAULT_S3_PORT: String(port),
      REGVAULT_S3_REGION: region,
      REGVAULT_S3_CHECKSUMS: options.computeChecksums === true ? '1' : '0',
      REGVAULT_S3_OBJECT_LOCK_BUCKETS: (options.objectLockBuckets ?? []).join(','),
      ...(options.keyBuckets === undefined
        ? {}
        : { REGVAULT_S3_KEY_BUCKETS: JSON.stringify(options.keyBuckets) }),
      ...(options.objectLockRetention === undefined
        ? {}
        : {
            REGVAULT_S3_OBJECT_LOCK_RETENTION: `${options.objectLockRetention.mode}:${options.objectLockRetention.days}`,
          }),
    },
  });
  await waitFor(`S3 server ${child.name}`, async () => child.logs.text().includes('"ready":true'), {
    process: child,
    timeoutMs: 30_000,
    intervalMs: 50,
  });
  const endpoint = `http://127.0.0.1:${port}`;
  const control = async (method: string, path: string, body?: unknown): Promise<unknown> => {
    const response = await fetch(`${endpoint}/_sandbox/${path}`, {
      method,
      ...(body === undefined
        ? {}
        : { body: JSON.stringify(body), headers: { 'content-type': 'application/octet-stream' } }),
    });
    if (!response.ok)
      throw new Error(
        `sandbox S3 ${method} ${path}: HTTP ${response.status} ${await response.text()}`,
      );
    return response.json();
  };
  return {
    endpoint,
    port,
    region,
    credentials: { accessKeyId: 'sandbox-access-key', secretAccessKey: 'sandbox-secret-key' },
    process: child,
    counters: async () => (await control('GET', 'counters')) as Counters,
    resetCounters: async () => {
      await control('POST', 'counters/reset');
    },
    injectFaults: async (rule) => {
      await control('POST', 'faults', rule);
    },
    clearFaults: async () => {
      await control('DELETE', 'faults');
    },
    fillRegistry: async (bucket, objects, seed) =>
      (await control('POST', 'fill-registry', {
        bucket,
        objects,
        ...(seed === undefined ? {} : { seed }),
      })) as FillResult,
    stop: () => child.stop(),
  };
}
