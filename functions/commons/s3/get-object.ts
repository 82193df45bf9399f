/**
 * GetObject with its body read to the end, retried by the one policy
 * (./retry.ts) where the SDK stops: the SDK retries the request up to its
 * headers, and a body cut after them (a reset mid-body) used to end the call
 * with `Error: aborted`.
 */
import {
  GetObjectCommand,
  type GetObjectCommandInput,
  type GetObjectCommandOutput,
  HeadObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { rewordFor } from './client.ts';
import {
  backoffMs,
  isRetryable,
  noteRetry,
  RETRY_POLICY,
  retrySinkOf,
  withRetries,
} from './retry.ts';

/** A response body that ended before its Content-Length: the connection broke mid-body. */
export class BodyCutShortError extends Error {
  override readonly name = 'BodyCutShort' as const;
  readonly Code = 'BodyCutShort';
}

/**
 * GetObject with its body read to the end. The SDK retries the request up to
 * its headers; a body cut after them (a reset mid-body) is read again from
 * the start by the same policy. Failures of the request itself are thrown as
 * the SDK left them (it retried them already).
 */
export async function getObjectBytes(
  client: S3Client,
  input: GetObjectCommandInput,
): Promise<{ readonly body: Uint8Array; readonly response: GetObjectCommandOutput }> {
  let requestFailed = false;
  const read = withRetries(
    async () => {
      let response: GetObjectCommandOutput;
      try {
        response = await client.send(new GetObjectCommand(input));
      } catch (err) {
        requestFailed = true;
        throw err;
      }
      const body = (await response.Body?.transformToByteArray()) ?? new Uint8Array();
      const expected = response.ContentLength;
      if (expected !== undefined && body.byteLength !== expected)
        throw new BodyCutShortError(
          `GetObject ${input.Key}: the body ended after ${body.byteLength} of ${expected} bytes`,
        );
      return { body, response };
    },
    (err) => !requestFailed && isRetryable(err),
    RETRY_POLICY,
    retrySinkOf(client),
  );
  // The request's own failures were explained by the client; a body that kept breaking is put in the same words.
  return read.catch((err: unknown) => {
    throw requestFailed
      ? err
      : rewordFor(client)(err, { operation: 'GetObject', bucket: input.Bucket, key: input.Key });
  });
}

/**
 * The body of a GetObject already answered (`first`), as a stream that
 * survives cuts: when the body breaks, the rest is asked for by Range from
 * the byte reached, with If-Match on the object's ETag so the bytes after
 * the cut are of the same object (a changed object fails with 412, not
 * with a mix). Retried and counted by the one policy.
 */
export async function* resumableBody(
  client: S3Client,
  input: GetObjectCommandInput,
  first: GetObjectCommandOutput,
): AsyncGenerator<Uint8Array> {
  let response = first;
  let offset = 0;
  for (let attempt = 1; ; attempt++) {
    try {
      const body = response.Body;
      if (body !== undefined) {
        const chunks =
          Symbol.asyncIterator in body
            ? (body as AsyncIterable<Uint8Array>)
            : [await body.transformToByteArray()];
        for await (const chunk of chunks) {
          offset += chunk.byteLength;
          yield chunk;
        }
      }
      if (first.ContentLength !== undefined && offset < first.ContentLength)
        throw new BodyCutShortError(
          `GetObject ${input.Key}: the body ended after ${offset} of ${first.ContentLength} bytes`,
        );
      return;
    } catch (err) {
      if (!isRetryable(err)) throw err;
      if (attempt >= RETRY_POLICY.maxAttempts)
        throw rewordFor(client)(err, {
          operation: 'GetObject',
          bucket: input.Bucket,
          key: input.Key,
        });
      noteRetry(retrySinkOf(client));
      await new Promise((resolve) => setTimeout(resolve, backoffMs(attempt, false)));
      response = await client.send(
        new GetObjectCommand({
          ...input,
          Range: `bytes=${offset}-`,
          ...(first.ETag === undefined ? {} : { IfMatch: first.ETag }),
        }),
      );
    }
  }
}

/** An object's size and ETag (as S3 gives it, quoted); undefined when the key does not exist. */
export async function headObject(
  client: S3Client,
  bucket: string,
  key: string,
): Promise<{ readonly size: number; readonly etag: string } | undefined> {
  try {
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return { size: head.ContentLength ?? 0, etag: head.ETag ?? '' };
  } catch (err) {
    const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (status === 404) return undefined;
    throw err;
  }
}
