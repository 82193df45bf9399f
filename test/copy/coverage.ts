/**
 * Which shard of a plan holds a key, as the copy engine lists a shard: the
 * keys below its prefix from `startAt` (inclusive) up to `endBefore`. A plan
 * must hold every key of its source in exactly one shard.
 */
import { firstIndex } from '../../functions/commons/copy/key-ranges.ts';
import { compareKeys, type Shard } from '../../functions/commons/copy/model.ts';

/** Whether `shard` lists `key`. */
export function holds(shard: Shard, key: string): boolean {
  return (
    key.startsWith(shard.prefix) &&
    (shard.startAt === undefined || compareKeys(key, shard.startAt) >= 0) &&
    (shard.endBefore === undefined || compareKeys(key, shard.endBefore) < 0)
  );
}

/** The ids of every shard that lists `key` (one, in a sound plan). */
export function holders(shards: readonly Shard[], key: string): string[] {
  return shards.filter((shard) => holds(shard, key)).map((shard) => shard.id);
}

/** The first key after every key below `prefix` (undefined: none, for ''). */
function afterPrefix(prefix: string): string | undefined {
  if (prefix === '') return undefined;
  return `${prefix.slice(0, -1)}${String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)}`;
}

const larger = (a: string, b: string) => (compareKeys(a, b) >= 0 ? a : b);
const smaller = (a: string | undefined, b: string | undefined) =>
  a === undefined ? b : b === undefined || compareKeys(a, b) <= 0 ? a : b;

/**
 * A finder for millions of keys: the index of the one shard that lists a key,
 * or -1 where none or several do. A shard lists an interval of keys, from
 * `low` (the larger of its prefix and `startAt`) up to `high` (the smaller of
 * `endBefore` and the end of its prefix). With the shards sorted by `low`,
 * the candidate is the last one starting at or before the key, and no other
 * shard holds the key when none before the candidate reaches past it.
 */
export function shardFinder(shards: readonly Shard[]): (key: string) => number {
  const intervals = shards
    .map((shard, index) => ({
      index,
      shard,
      low: larger(shard.startAt ?? '', shard.prefix),
      high: smaller(shard.endBefore, afterPrefix(shard.prefix)),
    }))
    .sort((a, b) => compareKeys(a.low, b.low));
  // reach[i]: how far the shards before the i-th reach (undefined: to the end).
  const reach: Array<string | undefined> = [];
  let furthest: string | undefined = '';
  for (const interval of intervals) {
    reach.push(furthest);
    furthest =
      furthest === undefined || interval.high === undefined
        ? undefined
        : larger(furthest, interval.high);
  }
  // Ordering by code unit (`<`) is S3's for the keys this is used with (no surrogates);
  // `holds` decides with the engine's comparison.
  const startsAfter = (i: number, key: string) => (intervals[i]?.low ?? '') > key;
  let last = 0;
  return (key) => {
    // Keys come mostly in order: the last candidate first.
    const at =
      !startsAfter(last, key) && (last + 1 === intervals.length || startsAfter(last + 1, key))
        ? last
        : firstIndex(intervals.length, (i) => startsAfter(i, key)) - 1;
    last = Math.max(0, at);
    const candidate = intervals[at];
    const before = reach[at];
    const alone = before !== undefined && before <= key;
    return candidate !== undefined && alone && holds(candidate.shard, key) ? candidate.index : -1;
  };
}
