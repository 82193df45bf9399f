/**
 * The proof's hashing of blobs in the target that no reference walk reaches
 * (Quay's: its references are in its database): each key read back and
 * hashed against the digest its key names, a few at once.
 */
import { createHash } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import PQueue from 'p-queue';
import { objectReader } from '../registry/fsck-sources.ts';

/** Blobs of one bucket checked against their digests as they are handed in. */
export class BlobHasher {
  readonly #reader: ReturnType<typeof objectReader>;
  readonly #queue: PQueue;
  readonly #corrupt: Array<{ key: string; actual: string }> = [];
  #failed: unknown;
  hashed = 0;
  bytes = 0;

  constructor(client: S3Client, bucket: string, concurrency: number) {
    this.#reader = objectReader(client, bucket);
    this.#queue = new PQueue({ concurrency });
  }

  /** Queues `key`, which must hash to `digest`. */
  check(key: string, digest: string): void {
    void this.#queue
      .add(async () => {
        const body = await this.#reader.open(key);
        if (body === undefined) {
          this.#corrupt.push({ key, actual: 'nothing (gone)' });
          return;
        }
        const hash = createHash('sha256');
        for await (const chunk of body) {
          hash.update(chunk);
          this.bytes += chunk.byteLength;
        }
        this.hashed++;
        const actual = `sha256:${hash.digest('hex')}`;
        if (actual !== digest) this.#corrupt.push({ key, actual });
      })
      .catch((err: unknown) => {
        this.#failed ??= err;
      });
  }

  /** Waits for every queued blob; those that did not hash to their digest. */
  async done(): Promise<Array<{ key: string; actual: string }>> {
    await this.#queue.onIdle();
    if (this.#failed !== undefined) throw this.#failed;
    return this.#corrupt;
  }
}
