/**
 * Counting a tree of keys cut into ranges with few LIST requests, and packing
 * the counted ranges into shards. A policy names the ranges (a registry: its
 * 256 blob fan-outs, its repositories) and, where keys lie uniformly over a
 * range (a blob's key is its sha256), how far into the range a key lies.
 *
 * `countRanges` takes the tree's first page, then lists the ranges it did not
 * reach in stripes, in parallel. A stripe walks page by page, so its counts
 * are exact, until one of two things ends the walk early:
 *  - a range of uniform keys has shown a full page: its count is estimated
 *    from how far into the range the page reached, and the walk jumps to the
 *    next range (so a dense fan-out costs one request, whatever it holds);
 *  - the count has spent its pages (twice its budget, shared out among the
 *    stripes still walking): the range a stripe stands in counts at least
 *    what it saw, and its ranges not reached get the mean of those it
 *    counted.
 * The stripes are sized from the first page to cost a few pages each. Where
 * covering every range would take more pages than the count's budget, there
 * are as many stripes as the budget, of about a page each: a sample, evenly
 * spread. A count costs at most twice its budget in requests, and is exact
 * where the tree takes fewer pages than its budget (about two million keys
 * at the default), but for dense ranges of uniform keys, which are estimated.
 */
import type PQueue from 'p-queue';
import { compareKeys, keyJustBefore, PAGE_SIZE } from './model.ts';
import type { ListedPage, Lister } from './policy.ts';

/** Pages a count lists before it samples instead: its stripes at a sample. */
export const COUNT_PAGES = 2_048;

/** Pages a stripe is cut to take, where the tree is walked. */
const STRIPE_PAGES = 4;

/**
 * The first index in [0, count) from which `holds` is true, for a predicate
 * false up to some index and true from there on (`count` when it never holds).
 */
export function firstIndex(count: number, holds: (index: number) => boolean): number {
  let lo = 0;
  let hi = count;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (holds(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** A tree of keys below `prefix`, cut into contiguous ranges. */
export interface RangeTree {
  readonly prefix: string;
  /**
   * The ranges' first keys, sorted (at least one): range i holds the keys
   * from `starts[i]` up to `starts[i + 1]`; the first range also holds any key
   * before `starts[0]`, the last every key after its start.
   */
  readonly starts: readonly string[];
  /**
   * How far into range `index` the key lies, in (0, 1], where the range's
   * keys are spread uniformly over it; undefined where they are not.
   */
  position?(index: number, key: string): number | undefined;
}

const Known = { Not: 0, Counted: 1, AtLeast: 2 } as const;

/** What is known of each range of a tree. */
class Tally {
  /** Keys per range: counted, estimated, or a lower bound where `known` says so. */
  readonly counts: Float64Array;
  readonly known: Uint8Array;
  readonly tree: RangeTree;

  constructor(tree: RangeTree) {
    this.tree = tree;
    this.counts = new Float64Array(tree.starts.length);
    this.known = new Uint8Array(tree.starts.length);
  }

  /** The range that holds `key`, for a key no lower than range `from` holds (a walk's keys only grow). */
  indexOf(key: string, from: number): number {
    const { starts } = this.tree;
    const beyond = (i: number) => compareKeys(starts[from + i] ?? '', key) > 0;
    // Mostly the range the walk stands in, or the next: two comparisons, not a search.
    if (from + 1 >= starts.length || beyond(1)) return from;
    if (from + 2 >= starts.length || beyond(2)) return from + 1;
    return from + firstIndex(starts.length - from, beyond) - 1;
  }

  set(index: number, count: number, known: (typeof Known)['Counted' | 'AtLeast']): void {
    this.counts[index] = count;
    this.known[index] = known;
  }

  /**
   * Gives each range of `stripe` not counted the mean of the ranges the
   * stripe counted (`fallback` where it counted none); a range counted at
   * least so many keeps its count where that is more.
   */
  fill(stripe: readonly [number, number], fallback: number): void {
    const [from, to] = stripe;
    let sum = 0;
    let counted = 0;
    for (let i = from; i < to; i++) {
      if (this.known[i] !== Known.Counted) continue;
      sum += this.counts[i] ?? 0;
      counted++;
    }
    const mean = counted > 0 ? sum / counted : fallback;
    for (let i = from; i < to; i++) {
      if (this.known[i] === Known.Not) this.counts[i] = mean;
      else if (this.known[i] === Known.AtLeast)
        this.counts[i] = Math.max(this.counts[i] ?? 0, mean);
    }
  }

  /** The mean of every counted range (`fallback` where none is). */
  mean(fallback: number): number {
    let sum = 0;
    let counted = 0;
    this.known.forEach((known, i) => {
      if (known !== Known.Counted) return;
      sum += this.counts[i] ?? 0;
      counted++;
    });
    return counted > 0 ? sum / counted : fallback;
  }
}

/** How a walk lists its next page: from a range's start, or on from the page before. */
type Next = { readonly startAfter?: string; readonly token?: string };

/** A walk through ranges [from, to) of a tree, page by page. */
class Walk {
  /** The range the walk stands in, and the keys of it seen so far. */
  #current: number;
  #seen = 0;
  #lastKey: string | undefined;
  /** The last range a page reached. */
  reached: number;
  /** The next page to list; undefined once the walk is done. */
  next: Next | undefined;
  /** The range the walk ends before. */
  to: number;
  readonly #tally: Tally;

  constructor(tally: Tally, from: number, to: number) {
    this.#tally = tally;
    this.to = to;
    this.#current = from;
    this.reached = from;
    this.next = this.#from(from);
  }

  /** The first range the walk has not counted. */
  get current(): number {
    return this.#current;
  }

  /** Counts one page listed as `next` said. */
  take(page: ListedPage): void {
    for (const key of page.keys) {
      const index = this.#tally.indexOf(key, this.#current);
      if (index >= this.to) {
        this.#finish();
        return;
      }
      while (this.#current < index) this.#close(this.#seen);
      this.#seen++;
      this.#lastKey = key;
      this.reached = index;
    }
    if (page.next === undefined) {
      this.#finish();
      return;
    }
    const at = this.#seen >= PAGE_SIZE ? this.#position() : undefined;
    if (at === undefined) {
      this.next = { token: page.next };
      return;
    }
    // A full page of uniform keys: estimate the range and jump to the next.
    this.#close(this.#seen / at);
    this.next = this.#from(this.#current);
  }

  /** Out of pages, the walk stops where it stands: the ranges after are left to the fill. */
  stop(): void {
    const at = this.#seen > 0 ? this.#position() : undefined;
    if (at !== undefined) this.#tally.set(this.#current, this.#seen / at, Known.Counted);
    else if (this.#seen > 0) this.#tally.set(this.#current, this.#seen, Known.AtLeast);
    this.next = undefined;
  }

  #from(index: number): Next | undefined {
    if (index >= this.to) return undefined;
    const start = this.#tally.tree.starts[index];
    return index === 0 || start === undefined ? {} : { startAfter: keyJustBefore(start) };
  }

  #position(): number | undefined {
    return this.#lastKey === undefined
      ? undefined
      : this.#tally.tree.position?.(this.#current, this.#lastKey);
  }

  #close(count: number): void {
    this.#tally.set(this.#current, count, Known.Counted);
    this.#current++;
    this.#seen = 0;
  }

  #finish(): void {
    while (this.#current < this.to) this.#close(this.#seen);
    this.next = undefined;
  }
}

/**
 * Keys per range of `tree` (estimates where sampled), from `first`, the
 * tree's first page (listed from its prefix without a delimiter), and the
 * stripes listed through `limit`, about `budget` pages at most.
 */
export async function countRanges(
  list: Lister,
  tree: RangeTree,
  first: ListedPage,
  limit: PQueue,
  budget = COUNT_PAGES,
): Promise<Float64Array> {
  const tally = new Tally(tree);
  const ranges = tree.starts.length;
  const lead = new Walk(tally, 0, ranges);
  lead.take(first);
  if (lead.next === undefined) return tally.counts;

  // From where the first page stopped: about as many pages as ranges left over
  // ranges that page reached; in stripes of a few pages (a stripe's last page
  // reaches past its end for nothing), or of one page each for a sample.
  const from = lead.current;
  const left = ranges - from;
  const wanted = Math.ceil(left / (lead.reached + 1));
  const stripes = wanted > budget ? budget : Math.ceil(wanted / STRIPE_PAGES);
  const bounds = Array.from({ length: stripes + 1 }, (_, j) =>
    j === 0 ? 0 : from + Math.round((j * left) / stripes),
  );
  lead.to = bounds[1] ?? ranges;
  let walks = [
    lead,
    ...bounds.slice(1, -1).map((start, j) => new Walk(tally, start, bounds[j + 2] ?? ranges)),
  ];
  // Rounds: the pages left are shared out evenly among the stripes still walking
  // (at least two each at first), so a dense stripe may walk on where others
  // finished early, and the outcome does not depend on which answer came first.
  for (let pages = 2 * budget; walks.length > 0 && pages >= walks.length; ) {
    const share = Math.floor(pages / walks.length);
    const spent = await Promise.all(
      walks.map(async (walk) => {
        let listed = 0;
        for (; listed < share && walk.next !== undefined; listed++) {
          const options = walk.next;
          // The page is taken inside the task: a suspended walk holds no page.
          await limit.add(async () => walk.take(await list.page(tree.prefix, options)));
        }
        return listed;
      }),
    );
    pages -= spent.reduce((sum, n) => sum + n, 0);
    walks = walks.filter((walk) => walk.next !== undefined);
  }
  for (const walk of walks) walk.stop();
  // A range no stripe counted holds at least the page that could not finish it.
  const fallback = tally.mean(PAGE_SIZE);
  for (let j = 0; j < stripes; j++) tally.fill([bounds[j] ?? 0, bounds[j + 1] ?? ranges], fallback);
  return tally.counts;
}

/** A run of contiguous items packed into one shard: its first item and their summed weight. */
export interface Run {
  readonly first: number;
  readonly weight: number;
}

/** Greedy runs of at most `cap` each (an item heavier than `cap` alone). */
function greedyRuns(weights: ArrayLike<number>, cap: number): Run[] {
  const runs: Array<{ first: number; weight: number }> = [];
  for (let i = 0; i < weights.length; i++) {
    const weight = weights[i] ?? 0;
    const open = runs.at(-1);
    if (open !== undefined && open.weight + weight <= cap) open.weight += weight;
    else runs.push({ first: i, weight });
  }
  return runs;
}

/**
 * Cuts `weights` (items in key order) into contiguous runs of at most
 * `target` each; an item heavier than `target` runs alone. The runs are as
 * few as greedy packing makes them, and as even as that many allow: the cap
 * is lowered while the count holds, so a plan of 73 at 12 is seven runs of
 * 10 or 11, not six of 12 and one of 1. Every item falls in exactly one run;
 * no weights, no runs.
 */
export function packRuns(weights: ArrayLike<number>, target: number): Run[] {
  const fewest = greedyRuns(weights, target);
  let total = 0;
  for (let i = 0; i < weights.length; i++) total += weights[i] ?? 0;
  let low = total / Math.max(1, fewest.length);
  let high = target;
  // Bisect the lowest cap that keeps the count (it only grows as the cap falls).
  for (let step = 0; step < 40 && high - low > 1e-6 * target; step++) {
    const cap = (low + high) / 2;
    if (greedyRuns(weights, cap).length <= fewest.length) high = cap;
    else low = cap;
  }
  return high < target ? greedyRuns(weights, high) : fewest;
}

/** A shard's key range and estimate. */
export interface ShardRange {
  readonly startAt?: string;
  readonly endBefore?: string;
  readonly estimatedObjects: number;
}

/**
 * Each run as a contiguous key range: from the start of its first item (the
 * first run from the tree's start) up to the next run's (the last to the
 * tree's end), so that together the ranges cover the tree exactly once.
 */
export function runRanges(runs: readonly Run[], startOf: (item: number) => string): ShardRange[] {
  return runs.map((run, index) => {
    const next = runs[index + 1];
    return {
      ...(index === 0 ? {} : { startAt: startOf(run.first) }),
      ...(next === undefined ? {} : { endBefore: startOf(next.first) }),
      estimatedObjects: Math.round(run.weight),
    };
  });
}
