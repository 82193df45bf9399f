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
  type S3Client,
} from '@aws-sdk/client-s3';
import { rewordFor } from './client.ts';
import { isRetryable, withRetries } from './retry.ts';

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
  );
  // The request's own failures were explained by the client; a body that kept breaking is put in the same words.
  return read.catch((err: unknown) => {
    throw requestFailed
      ? err
      : rewordFor(client)(err, { operation: 'GetObject', bucket: input.Bucket, key: input.Key });
  });
}
