/**
 * The key ranges around a registry's trees (Distribution's two: before the
 * blobs, between blobs and repositories, after the repositories; Quay's one,
 * its blobs): a registry writes mostly inside the trees, but a bucket may
 * hold anything, and every key of the source must fall in some shard.
 */
import type { Shard } from '../copy/model.ts';
import { keyJustBefore } from '../copy/model.ts';
import type { Lister } from '../copy/policy.ts';

/** A key range outside the registry's trees: from `startAt` (inclusive) to `endBefore`. */
interface Gap {
  readonly startAt?: string;
  readonly endBefore?: string;
}

/** Whether a gap holds any key: the first key of one listing page from its start. */
async function gapHoldsKeys(list: Lister, gap: Gap): Promise<boolean> {
  const page = await list.page(
    '',
    gap.startAt === undefined ? {} : { startAfter: keyJustBefore(gap.startAt) },
  );
  const first = page.keys[0];
  return first !== undefined && (gap.endBefore === undefined || first < gap.endBefore);
}

/** The key just past every key below `prefix` (which ends in '/'). */
const past = (prefix: string) => `${prefix.slice(0, -1)}0`;

/**
 * A shard for each key range around the registry's trees (`trees`: their
 * prefixes, sorted, each ending in '/') that holds a key (a registry writes
 * only inside them, so usually none: an empty range's shard would cost its
 * LIST and run files on every backup for nothing). One LIST each, all at once.
 */
export async function otherShards(
  list: Lister,
  base: string,
  trees: readonly string[],
): Promise<Shard[]> {
  const gaps: Gap[] = trees.map((tree, index) => {
    const before = trees[index - 1];
    return before === undefined ? { endBefore: tree } : { startAt: past(before), endBefore: tree };
  });
  const last = trees.at(-1);
  if (last !== undefined) gaps.push({ startAt: past(last) });
  const holds = await Promise.all(gaps.map((gap) => gapHoldsKeys(list, gap)));
  return gaps.flatMap((gap, index) =>
    holds[index] === true
      ? [
          {
            id: `other-${index}`,
            kind: 'objects' as const,
            prefix: '',
            registryPrefix: base,
            ...gap,
          },
        ]
      : [],
  );
}
