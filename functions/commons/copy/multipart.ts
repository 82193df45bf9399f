/**
 * Multipart uploads for the copy engine: one upload run to its end or
 * aborted, and a Complete that stays idempotent when a retry follows an
 * answer the network lost (the vault's own uploads use it too).
 */
import { createHash } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import { cleanEtag } from './model.ts';
import type { TransferContext, TransferResult } from './transfer.ts';

/** Runs a multipart upload whose parts come from `uploadPart`, aborting it on any failure. */
export async function multipart(
  ctx: TransferContext,
  targetKey: string,
  ranges: ReadonlyArray<{ start: number; end: number }>,
  contentType: string | undefined,
  uploadPart: (
    uploadId: string,
    partNumber: number,
    range: { start: number; end: number },
  ) => Promise<string>,
  beforeComplete?: () => void,
): Promise<TransferResult> {
  const { client, bucket } = ctx.target;
  const created = await client.send(
    new CreateMultipartUploadCommand({
      Bucket: bucket,
      Key: targetKey,
      ...(contentType === undefined ? {} : { ContentType: contentType }),
    }),
  );
  const uploadId = created.UploadId;
  if (uploadId === undefined)
    throw new Error(`CreateMultipartUpload for ${targetKey} returned no UploadId`);
  try {
    const parts = new PQueue({ concurrency: ctx.settings.partConcurrency });
    const etags = await Promise.all(
      ranges.map((range, index) => parts.add(() => uploadPart(uploadId, index + 1, range))),
    );
    // Throwing here aborts the upload: nothing is written.
    beforeComplete?.();
    const completed = await completeMultipart(ctx.target, targetKey, uploadId, etags);
    return { targetEtag: cleanEtag(completed), requests: ranges.length + 2 };
  } catch (err) {
    await client
      .send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: targetKey, UploadId: uploadId }))
      .catch(() => undefined);
    throw err;
  }
}

/** The ETag S3 gives a multipart object: the MD5 of its parts' MD5s, a dash, the number of parts. */
export function multipartEtag(partEtags: readonly string[]): string | undefined {
  const digests = partEtags.map(cleanEtag);
  if (!digests.every((etag) => /^[0-9a-f]{32}$/.test(etag))) return undefined;
  const md5 = createHash('md5');
  for (const digest of digests) md5.update(Buffer.from(digest, 'hex'));
  return `${md5.digest('hex')}-${digests.length}`;
}

/**
 * CompleteMultipartUpload, idempotent under retries: when a retried Complete
 * is answered NoSuchUpload, the first one may have succeeded and only its
 * answer was lost (the connection reset after the server acted). The object
 * is then looked at: a HEAD matching the ETag the parts make proves it was
 * completed; anything else is the failure it was.
 */
export async function completeMultipart(
  target: { readonly client: S3Client; readonly bucket: string },
  targetKey: string,
  uploadId: string,
  etags: readonly string[],
): Promise<string | undefined> {
  const { client, bucket } = target;
  try {
    const completed = await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: targetKey,
        UploadId: uploadId,
        MultipartUpload: { Parts: etags.map((ETag, index) => ({ ETag, PartNumber: index + 1 })) },
      }),
    );
    return completed.ETag;
  } catch (err) {
    const { name, $metadata } = err as { name?: string; $metadata?: { attempts?: number } };
    const expected = multipartEtag(etags);
    if (name !== 'NoSuchUpload' || ($metadata?.attempts ?? 1) < 2 || expected === undefined)
      throw err;
    const head = await client
      .send(new HeadObjectCommand({ Bucket: bucket, Key: targetKey, IfMatch: `"${expected}"` }))
      .catch(() => undefined);
    if (head === undefined || cleanEtag(head.ETag) !== expected) throw err;
    return head.ETag;
  }
}
