/**
 * The full pulls of a verification: a sample of the matched tags' images
 * pulled completely, every blob streamed and hashed.
 */
import PQueue from 'p-queue';
import { messageOf } from '../errors.ts';
import type { RegistryClient } from './client.ts';
import type { VerifyOptions, VerifyReport } from './verify.ts';
import type { Tally } from './verify-progress.ts';
import type { RepositoryFindings } from './verify-repository.ts';

/** An even spread of `count` items (first, last and between), deterministic. */
export function spread<T>(items: readonly T[], count: number): T[] {
  if (count >= items.length) return [...items];
  if (count <= 0) return [];
  const picked: T[] = [];
  for (let i = 0; i < count; i++) {
    const item = items[Math.round((i * (items.length - 1)) / Math.max(1, count - 1))];
    if (item !== undefined) picked.push(item);
  }
  return picked;
}

/** Progress is told at most once per this many streamed bytes (and at every image's end). */
const BYTES_PER_PROGRESS = 16 * 1024 ** 2;

/**
 * Full pulls of the sample: several images at once, their blob streams bounded
 * together, and a blob several images share streamed and hashed once.
 */
export async function pullSample(
  client: RegistryClient,
  checked: readonly RepositoryFindings[],
  present: ReadonlyArray<{ repository: string; tag: string; digest: string }>,
  options: VerifyOptions,
  tally: Tally,
): Promise<VerifyReport['pulls']> {
  const pick = options.pick ?? spread;
  const sample = pick(present, options.sample ?? 3);
  const closures = new Map(
    checked.flatMap((f) =>
      [...f.closures].map(([digest, blobs]) => [`${f.name}@${digest}`, blobs]),
    ),
  );
  const counted = new Set<string>();
  for (const image of sample) {
    for (const blob of closures.get(`${image.repository}@${image.digest}`) ?? []) {
      const key = `${blob.digest} ${blob.size}`;
      if (counted.has(key)) continue;
      counted.add(key);
      tally.pullTotalBytes += blob.size;
    }
  }
  tally.pullsTotal = sample.length;
  const concurrency = options.pullConcurrency ?? 4;
  const streams = new PQueue({ concurrency });
  const images = new PQueue({ concurrency });
  const verified = new Map<string, Promise<void>>();
  let untold = 0;
  const onBytes = (bytes: number) => {
    tally.pullBytes += bytes;
    untold += bytes;
    if (untold < BYTES_PER_PROGRESS) return;
    untold = 0;
    tally.emit('pulls');
  };
  return Promise.all(
    sample.map((image) =>
      images.add(async (): Promise<VerifyReport['pulls'][number]> => {
        try {
          const pulled = await client.pull(image.repository, image.digest, {
            limit: (task) => streams.add(task),
            verified,
            onBytes,
          });
          return {
            repository: image.repository,
            tag: image.tag,
            ok: true,
            digest: pulled.digest,
            blobs: pulled.blobs.length,
            bytes: pulled.bytes,
          };
        } catch (err) {
          return {
            repository: image.repository,
            tag: image.tag,
            ok: false,
            error: messageOf(err),
          };
        } finally {
          tally.pullsDone++;
          tally.emit('pulls');
        }
      }),
    ),
  );
}
