/**
 * Moving one object: server-side CopyObject, ranged UploadPartCopy for large
 * objects, or a streamed GET to (multipart) PUT between endpoints that cannot
 * see each other. Memory is bounded by a shared byte budget: a streamed part is
 * buffered only after its bytes are reserved, so at most `budget` bytes of
 * object data are in memory at once, whatever the object sizes.
 */

import { createHash } from 'node:crypto';
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  PutObjectCommand,
  type S3Client,
  UploadPartCommand,
  UploadPartCopyCommand,
} from '@aws-sdk/client-s3';
import { type FastCopier, md5Base64 } from '../s3/fast-copy.ts';
import { getObjectBytes } from '../s3/get-object.ts';
import { cleanEtag, type ListedObject } from './model.ts';
import { multipart } from './multipart.ts';

/** How objects move from source to target. */
export const CopyMode = {
  /** The target's client reads the source itself: CopyObject / UploadPartCopy. */
  ServerSide: 'server-side',
  /** Bytes flow through this process: GET from the source, PUT to the target. */
  Stream: 'stream',
} as const;
export type CopyMode = (typeof CopyMode)[keyof typeof CopyMode];

export interface TransferSettings {
  readonly mode: CopyMode;
  /** Server-side: objects above this use UploadPartCopy (S3 refuses CopyObject above 5 GiB). */
  readonly multipartCopyThreshold: number;
  /** Part size for UploadPartCopy and for streamed multipart uploads. */
  readonly partSize: number;
  /** Parts of one object in flight at once. */
  readonly partConcurrency: number;
}

/** S3's own limits: CopyObject up to 5 GiB, parts of 5 MiB..5 GiB, at most 10,000 parts. */
export const S3_LIMITS = {
  maxCopyObjectBytes: 5 * 1024 ** 3,
  minPartBytes: 5 * 1024 ** 2,
  maxParts: 10_000,
} as const;

export const DEFAULT_TRANSFER: TransferSettings = {
  mode: CopyMode.ServerSide,
  multipartCopyThreshold: S3_LIMITS.maxCopyObjectBytes,
  partSize: 64 * 1024 ** 2,
  partConcurrency: 4,
};

/**
 * A counting semaphore over bytes. `reserve(n)` waits until n bytes are free;
 * a request larger than the whole budget waits for an empty budget and then
 * runs alone, so progress never stalls.
 */
export class ByteBudget {
  readonly #limit: number;
  #used = 0;
  readonly #waiting: Array<{ bytes: number; resolve: () => void }> = [];
  #peak = 0;

  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Most bytes held at once so far. */
  get peak(): number {
    return this.#peak;
  }

  async reserve(bytes: number): Promise<void> {
    if (this.#fits(bytes) && this.#waiting.length === 0) {
      this.#take(bytes);
      return;
    }
    await new Promise<void>((resolve) => this.#waiting.push({ bytes, resolve }));
  }

  release(bytes: number): void {
    this.#used -= bytes;
    while (this.#waiting.length > 0) {
      const next = this.#waiting[0];
      if (next === undefined || !this.#fits(next.bytes)) break;
      this.#waiting.shift();
      this.#take(next.bytes);
      next.resolve();
    }
  }

  #fits(bytes: number): boolean {
    return this.#used === 0 || this.#used + bytes <= this.#limit;
  }

  #take(bytes: number): void {
    this.#used += bytes;
    this.#peak = Math.max(this.#peak, this.#used);
  }
}

export interface TransferContext {
  readonly source: {
    readonly client: S3Client;
    readonly bucket: string;
    /** ListObjectsV2 outside the SDK pipeline (see s3/fast-copy.ts). */
    readonly fast?: FastCopier;
  };
  readonly target: {
    readonly client: S3Client;
    readonly bucket: string;
    /** CopyObject and PutObject outside the SDK pipeline (same endpoint, credentials and retries; far less CPU). */
    readonly fast?: FastCopier;
    /** Uploads carry Content-MD5 (the target has Object Lock default retention). */
    readonly contentMd5?: boolean;
  };
  readonly settings: TransferSettings;
  readonly budget: ByteBudget;
}

export interface TransferResult {
  /** ETag of the object written to the target. */
  readonly targetEtag: string;
  /** S3 requests the transfer made (for accounting and tests). */
  readonly requests: number;
  /** How the content was checked against the digest it was expected to have, if one was given. */
  readonly verified?: DigestCheck;
}

/**
 * How a blob's bytes were checked against its digest: by the SHA-256 the
 * server computed for the copy (no extra read), by hashing while streaming,
 * or not at all (the server computes no additional checksums, or the copy was
 * a multipart server-side copy whose checksum is composite).
 */
export const DigestCheck = {
  Server: 'server-sha256',
  Stream: 'stream-sha256',
  Unverified: 'unverified',
} as const;
export type DigestCheck = (typeof DigestCheck)[keyof typeof DigestCheck];

/** The copied bytes do not hash to the digest the key names: the source is corrupt. */
export class DigestMismatchError extends Error {
  override readonly name = 'DigestMismatch' as const;
  readonly Code = 'DigestMismatch';
}

const hexToBase64 = (digest: string) =>
  Buffer.from(digest.replace(/^sha256:/, ''), 'hex').toString('base64');

/** `CopySource` header value: bucket and key with each path segment URL-encoded. */
export function copySourceOf(bucket: string, key: string): string {
  return `${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
}

/** The S3 calls `transferObject` makes for `size` bytes under `settings`, for failure reports. */
export function transferOperation(settings: TransferSettings, size: number): string {
  if (settings.mode === CopyMode.ServerSide)
    return size <= settings.multipartCopyThreshold ? 'CopyObject' : 'UploadPartCopy';
  return size <= settings.partSize ? 'GetObject/PutObject' : 'GetObject/UploadPart';
}

/** Part ranges covering `size` bytes with parts of at least `partSize` and at most 10,000 parts. */
export function partRanges(size: number, partSize: number): Array<{ start: number; end: number }> {
  const effective = Math.max(partSize, Math.ceil(size / S3_LIMITS.maxParts), 1);
  const ranges: Array<{ start: number; end: number }> = [];
  for (let start = 0; start < size; start += effective) {
    ranges.push({ start, end: Math.min(size, start + effective) - 1 });
  }
  return ranges;
}

/**
 * Copies one listed object to `targetKey` in the mode the context says. With
 * `digest` (a blob), the bytes are checked against it where that costs no
 * extra read; a mismatch leaves nothing at the target and throws
 * DigestMismatchError.
 */
export async function transferObject(
  ctx: TransferContext,
  object: ListedObject,
  targetKey: string,
  digest?: string,
): Promise<TransferResult> {
  const { mode, multipartCopyThreshold, partSize } = ctx.settings;
  if (mode === CopyMode.ServerSide) {
    if (object.size <= multipartCopyThreshold) return copyWhole(ctx, object, targetKey, digest);
    const result = await copyInParts(ctx, object, targetKey);
    return digest === undefined ? result : { ...result, verified: DigestCheck.Unverified };
  }
  return object.size <= partSize
    ? streamWhole(ctx, object, targetKey, digest)
    : streamInParts(ctx, object, targetKey, digest);
}

async function copyWhole(
  ctx: TransferContext,
  object: ListedObject,
  targetKey: string,
  digest: string | undefined,
): Promise<TransferResult> {
  const copySource = copySourceOf(ctx.source.bucket, object.key);
  let result: {
    CopyObjectResult?:
      | { ETag?: string | undefined; ChecksumSHA256?: string | undefined }
      | undefined;
  };
  if (ctx.target.fast !== undefined) {
    const fast = await ctx.target.fast.copyObject({
      bucket: ctx.target.bucket,
      key: targetKey,
      copySource,
      checksumSha256: digest !== undefined,
    });
    result = { CopyObjectResult: { ETag: fast.etag, ChecksumSHA256: fast.checksumSha256 } };
  } else {
    result = await ctx.target.client.send(
      new CopyObjectCommand({
        Bucket: ctx.target.bucket,
        Key: targetKey,
        CopySource: copySource,
        // The server hashes the copy as it writes it: the digest check costs no read.
        ...(digest === undefined ? {} : { ChecksumAlgorithm: 'SHA256' as const }),
      }),
    );
  }
  const copied = { targetEtag: cleanEtag(result.CopyObjectResult?.ETag), requests: 1 };
  if (digest === undefined) return copied;
  const checksum = result.CopyObjectResult?.ChecksumSHA256;
  if (checksum === undefined) return { ...copied, verified: DigestCheck.Unverified };
  if (checksum !== hexToBase64(digest)) {
    await ctx.target.client.send(
      new DeleteObjectCommand({ Bucket: ctx.target.bucket, Key: targetKey }),
    );
    throw new DigestMismatchError(
      `${object.key} does not hash to ${digest} (the server's SHA-256 of the copy is ${Buffer.from(checksum, 'base64').toString('hex')}); the source blob is corrupt and was not kept`,
    );
  }
  return { ...copied, requests: 1, verified: DigestCheck.Server };
}

async function copyInParts(
  ctx: TransferContext,
  object: ListedObject,
  targetKey: string,
): Promise<TransferResult> {
  const source = copySourceOf(ctx.source.bucket, object.key);
  return multipart(
    ctx,
    targetKey,
    partRanges(object.size, ctx.settings.partSize),
    undefined,
    async (uploadId, partNumber, range) => {
      const part = await ctx.target.client.send(
        new UploadPartCopyCommand({
          Bucket: ctx.target.bucket,
          Key: targetKey,
          UploadId: uploadId,
          PartNumber: partNumber,
          CopySource: source,
          CopySourceRange: `bytes=${range.start}-${range.end}`,
        }),
      );
      return part.CopyPartResult?.ETag ?? '';
    },
  );
}

/**
 * GETs `range` of the source object into one buffer (its bytes already
 * reserved); a body cut mid-stream is read again from the start.
 */
async function readRange(
  ctx: TransferContext,
  key: string,
  range: { start: number; end: number } | undefined,
): Promise<{ body: Uint8Array; contentType: string | undefined }> {
  const { body, response } = await getObjectBytes(ctx.source.client, {
    Bucket: ctx.source.bucket,
    Key: key,
    ...(range === undefined ? {} : { Range: `bytes=${range.start}-${range.end}` }),
  });
  return { body, contentType: response.ContentType };
}

function checkStreamed(key: string, actualHex: string, digest: string): void {
  if (actualHex !== digest.replace(/^sha256:/, '')) {
    throw new DigestMismatchError(
      `${key} does not hash to ${digest} (its bytes hash to sha256:${actualHex}); the source blob is corrupt and was not written`,
    );
  }
}

async function streamWhole(
  ctx: TransferContext,
  object: ListedObject,
  targetKey: string,
  digest: string | undefined,
): Promise<TransferResult> {
  await ctx.budget.reserve(object.size);
  try {
    const { fast: sourceFast } = ctx.source;
    const { fast: targetFast } = ctx.target;
    if (sourceFast !== undefined && targetFast !== undefined) {
      const { body, contentType } = await sourceFast.getObject({
        bucket: ctx.source.bucket,
        key: object.key,
      });
      if (body.byteLength !== object.size)
        throw new Error(
          `GetObject ${object.key}: listed ${object.size} bytes, got ${body.byteLength}`,
        );
      if (digest !== undefined)
        checkStreamed(object.key, createHash('sha256').update(body).digest('hex'), digest);
      const put = await targetFast.putObject({
        bucket: ctx.target.bucket,
        key: targetKey,
        body,
        contentType,
        contentMd5: ctx.target.contentMd5 === true,
      });
      return {
        targetEtag: cleanEtag(put.etag),
        requests: 2,
        ...(digest === undefined ? {} : { verified: DigestCheck.Stream }),
      };
    }
    const { body, contentType } = await readRange(ctx, object.key, undefined);
    if (digest !== undefined)
      checkStreamed(object.key, createHash('sha256').update(body).digest('hex'), digest);
    const put = await ctx.target.client.send(
      new PutObjectCommand({
        Bucket: ctx.target.bucket,
        Key: targetKey,
        Body: body,
        ContentLength: body.byteLength,
        ...(contentType === undefined ? {} : { ContentType: contentType }),
        ...(ctx.target.contentMd5 === true ? { ContentMD5: md5Base64(body) } : {}),
      }),
    );
    return {
      targetEtag: cleanEtag(put.ETag),
      requests: 2,
      ...(digest === undefined ? {} : { verified: DigestCheck.Stream }),
    };
  } finally {
    ctx.budget.release(object.size);
  }
}

async function streamInParts(
  ctx: TransferContext,
  object: ListedObject,
  targetKey: string,
  digest: string | undefined,
): Promise<TransferResult> {
  const ranges = partRanges(object.size, ctx.settings.partSize);
  // Parts arrive out of order; each is hashed in order once its predecessors are,
  // holding its (already budgeted) buffer only until then.
  const hash = createHash('sha256');
  let nextToHash = 1;
  const hashed = new Map<number, () => void>();
  let abandoned = false;
  const hashInOrder = async (partNumber: number, body: Uint8Array) => {
    if (digest === undefined) return;
    if (partNumber !== nextToHash)
      await new Promise<void>((resolve) => hashed.set(partNumber, resolve));
    if (abandoned) return;
    hash.update(body);
    nextToHash++;
    hashed.get(nextToHash)?.();
    hashed.delete(nextToHash);
  };
  // A failed part ends the upload: release every part waiting for its turn.
  const abandon = () => {
    abandoned = true;
    for (const wake of hashed.values()) wake();
    hashed.clear();
  };
  const result = await multipart(
    ctx,
    targetKey,
    ranges,
    undefined,
    async (uploadId, partNumber, range) => {
      const bytes = range.end - range.start + 1;
      await ctx.budget.reserve(bytes);
      try {
        const { fast: sourceFast } = ctx.source;
        const body =
          sourceFast === undefined
            ? (await readRange(ctx, object.key, range)).body
            : (await sourceFast.getObject({ bucket: ctx.source.bucket, key: object.key, range }))
                .body;
        if (body.byteLength !== bytes) {
          throw new Error(
            `GetObject ${object.key} range ${range.start}-${range.end}: expected ${bytes} bytes, got ${body.byteLength}`,
          );
        }
        const { fast: targetFast } = ctx.target;
        const etag =
          targetFast === undefined
            ? ((
                await ctx.target.client.send(
                  new UploadPartCommand({
                    Bucket: ctx.target.bucket,
                    Key: targetKey,
                    UploadId: uploadId,
                    PartNumber: partNumber,
                    Body: body,
                    ContentLength: bytes,
                    ...(ctx.target.contentMd5 === true ? { ContentMD5: md5Base64(body) } : {}),
                  }),
                )
              ).ETag ?? '')
            : (
                await targetFast.putObject({
                  bucket: ctx.target.bucket,
                  key: targetKey,
                  body,
                  uploadId,
                  partNumber,
                  contentMd5: ctx.target.contentMd5 === true,
                })
              ).etag;
        await hashInOrder(partNumber, body);
        return etag;
      } catch (err) {
        abandon();
        throw err;
      } finally {
        ctx.budget.release(bytes);
      }
    },
    () => {
      if (digest !== undefined) checkStreamed(object.key, hash.digest('hex'), digest);
    },
  );
  // Each part was also a GET.
  return {
    ...result,
    requests: result.requests + ranges.length,
    ...(digest === undefined ? {} : { verified: DigestCheck.Stream }),
  };
}
