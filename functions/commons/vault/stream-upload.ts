/**
 * A stream written into the vault as it comes, in parts, with its size and
 * SHA-256: what a database dump read from a pod's `pg_dump` becomes (issue
 * 20), with no local file and no more than a part held.
 */
import { createHash } from 'node:crypto';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { VaultError } from '../errors.ts';
import { resumableBody } from '../s3/get-object.ts';
import { openUpload, type Vault } from './store.ts';

/** What was written: the object's size and the SHA-256 of its bytes (hex). */
export interface StreamedObject {
  readonly key: string;
  readonly bytes: number;
  readonly sha256: string;
}

/**
 * Writes `stream` to `key`: one PUT when it ends small, else a multipart
 * upload of `partBytes` parts. A stream that fails aborts the upload, so
 * nothing is left at `key` from this write.
 */
export async function uploadStream(
  vault: Vault,
  key: string,
  contentType: string,
  stream: AsyncIterable<Buffer | string>,
  partBytes?: number,
): Promise<StreamedObject> {
  const upload = openUpload(vault, key, contentType, partBytes);
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    for await (const chunk of stream) {
      const piece = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      hash.update(piece);
      bytes += piece.byteLength;
      await upload.write(piece);
    }
  } catch (err) {
    await upload.abort();
    throw err;
  }
  await upload.close();
  return { key, bytes, sha256: hash.digest('hex') };
}

/**
 * Reads `key` as a stream, hashing as it goes: the stream fails at its end
 * when the bytes are not `sha256` (a damaged dump is not taken as good).
 */
export async function* downloadStream(
  vault: Vault,
  key: string,
  sha256: string,
): AsyncGenerator<Buffer> {
  const input = { Bucket: vault.location.bucket, Key: key };
  const first = await vault.client.send(new GetObjectCommand(input));
  const hash = createHash('sha256');
  for await (const chunk of resumableBody(vault.client, input, first)) {
    const piece = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    hash.update(piece);
    yield piece;
  }
  const found = hash.digest('hex');
  if (found !== sha256)
    throw new VaultError(
      `${key} in the vault has SHA-256 ${found}, not the ${sha256} its snapshot recorded; the dump is damaged: restore another snapshot`,
    );
}
