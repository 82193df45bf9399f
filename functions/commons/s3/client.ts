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
  /** Attempts per request, including the first (SDK standard retry: backoff with jitter). */
  readonly maxAttempts?: number;
  /** Abandon a request after this long (a hung connection becomes a retryable timeout). */
  readonly requestTimeoutMs?: number;
}

/** Creates an S3 client for `endpoint` with `credentials` resolved by the caller. */
export function createS3Client(
  endpoint: Endpoint,
  credentials: AwsCredentialIdentity | AwsCredentialIdentityProvider | undefined,
  options: ClientOptions = {},
): S3Client {
  const maxSockets = options.maxSockets ?? 64;
  const agentOptions = { keepAlive: true, maxSockets, maxFreeSockets: maxSockets };
  return new S3Client({
    region: endpoint.region,
    ...(endpoint.endpoint === undefined ? {} : { endpoint: endpoint.endpoint }),
    forcePathStyle: endpoint.forcePathStyle,
    ...(credentials === undefined ? {} : { credentials }),
    maxAttempts: options.maxAttempts ?? 6,
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
}
