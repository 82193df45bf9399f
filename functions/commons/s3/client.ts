/**
 * S3 clients for AWS and S3-compatible endpoints, tuned for copying many
 * objects at once: keep-alive sockets sized to the copy concurrency, path-style
 * addressing where asked, and checksums only where a call requires them
 * (default trailers break several S3-compatible servers).
 */
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { S3Client } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { createDirectoryClient, isDirectoryEndpoint } from './directory.ts';
import { explainS3Error, rewordS3Error, type S3Call, type S3Role } from './explain.ts';
import { clientBehind, RETRY_POLICY, sdkRetryConfig } from './retry.ts';

export type { S3Role } from './explain.ts';

/** Where a client connects. Credentials are passed separately and never serialised. */
export interface Endpoint {
  /** Omit for AWS S3; set for S3-compatible servers (`http://127.0.0.1:9000`). */
  readonly endpoint?: string | undefined;
  readonly region: string;
  readonly forcePathStyle: boolean;
}

export interface ClientOptions {
  /** Requests in flight the client must sustain; sockets are sized to it. */
  readonly maxSockets?: number;
  /** Attempts per request, including the first (default: the one retry policy's, ./retry.ts). */
  readonly maxAttempts?: number;
  /** Abandon a request after this long (a hung connection becomes a retryable timeout). */
  readonly requestTimeoutMs?: number;
  /**
   * What the client's location is and whose keys it signs with: when given,
   * every failed call is explained in those terms (./explain.ts).
   */
  readonly role?: S3Role;
}

/** The role and endpoint of each client made with a role, for calls made around the SDK. */
const explained = new WeakMap<S3Client, { readonly endpoint: Endpoint; readonly role: S3Role }>();

/**
 * How a failure of a call made around the SDK with `client`'s endpoint and
 * keys (./fast-copy.ts) is put in words, keeping what it is; the failure as
 * it is when the client was made without a role.
 */
export function rewordFor(
  client: S3Client,
): (err: unknown, call: Pick<S3Call, 'operation' | 'bucket' | 'key'>) => unknown {
  const known = explained.get(clientBehind(client));
  if (known === undefined) return (err) => err;
  return (err, call) =>
    rewordS3Error(
      err,
      { ...call, endpoint: known.endpoint.endpoint, region: known.endpoint.region },
      known.role,
    );
}

/** Creates an S3 client for `endpoint` with `credentials` resolved by the caller. */
export function createS3Client(
  endpoint: Endpoint,
  credentials: AwsCredentialIdentity | AwsCredentialIdentityProvider | undefined,
  options: ClientOptions = {},
): S3Client {
  // A local directory is answered in this process: no sockets, no keys.
  if (isDirectoryEndpoint(endpoint.endpoint)) return createDirectoryClient(endpoint.endpoint);
  const maxSockets = options.maxSockets ?? 64;
  const agentOptions = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets };
  const client = new S3Client({
    region: endpoint.region,
    ...(endpoint.endpoint === undefined ? {} : { endpoint: endpoint.endpoint }),
    forcePathStyle: endpoint.forcePathStyle,
    ...(credentials === undefined ? {} : { credentials }),
    // The one policy (./retry.ts): full-jitter backoff on throttling, 5xx, resets and timeouts, counted.
    ...sdkRetryConfig(
      options.maxAttempts === undefined
        ? RETRY_POLICY
        : { ...RETRY_POLICY, maxAttempts: options.maxAttempts },
    ),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: new NodeHttpHandler({
      httpAgent: new HttpAgent(agentOptions),
      httpsAgent: new HttpsAgent(agentOptions),
      connectionTimeout: 10_000,
      requestTimeout: options.requestTimeoutMs ?? 300_000,
      throwOnRequestTimeout: true,
    }),
  });
  const { role } = options;
  if (role !== undefined) {
    // Outermost (initialize, high priority): the SDK's retries are done when the error arrives here.
    client.middlewareStack.add(
      (next, context) => async (args) => {
        try {
          return await next(args);
        } catch (err) {
          const input = args.input as { Bucket?: unknown; Key?: unknown };
          throw explainS3Error(
            err,
            {
              operation: (context.commandName ?? 'S3 call').replace(/Command$/, ''),
              bucket: typeof input.Bucket === 'string' ? input.Bucket : undefined,
              key: typeof input.Key === 'string' ? input.Key : undefined,
              endpoint: endpoint.endpoint,
              region: endpoint.region,
            },
            role,
          );
        }
      },
      { step: 'initialize', priority: 'high', name: 'regvaultExplainErrors' },
    );
    explained.set(client, { endpoint, role });
  }
  return client;
}
