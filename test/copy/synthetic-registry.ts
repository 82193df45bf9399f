/**
 * A registry's bucket that is never written: millions of keys in the Docker
 * Distribution layout, generated on the fly from a few counts and listed as
 * S3 lists them (prefix, any delimiter, StartAfter, continuation, 1,000
 * entries a page, in byte order), so the planner can be run at a scale no
 * sandbox server holds. No key is kept: key i is computed from i, and a
 * listing finds where to start by binary search.
 *
 * Blobs: digests spread uniformly over the hex space, as sha256 spreads
 * them. Each 1/65,536 of the space (four hex digits) holds a Poisson count,
 * so fan-outs and pages vary as a real registry's do; within a cell the
 * digests are evenly spaced. Links: repositories `ns-NNNNN/app-NNNNN` with
 * layer links, revisions and tags (two links each), their sizes drawn from a
 * skewed (log-normal) distribution, and optionally a few giant ones.
 */
import { firstIndex } from '../../functions/commons/copy/key-ranges.ts';
import { compareKeys, PAGE_SIZE } from '../../functions/commons/copy/model.ts';
import type { ListedPage, Lister } from '../../functions/commons/copy/policy.ts';
import { registryPrefix } from '../../functions/commons/registry/layout.ts';
import { prng } from '../../sandbox/dataset.ts';

export interface SyntheticRegistryOptions {
  /** Blobs, about (their counts per cell are drawn). */
  readonly blobs: number;
  /** Links, about (their counts per repository are drawn). */
  readonly links: number;
  readonly repositories: number;
  /** Repositories per namespace (default 100). */
  readonly perNamespace?: number;
  /** Fan-outs from `00` on that hold the blobs (default all 256): fewer makes dense fan-outs from few blobs. */
  readonly fanOuts?: number;
  /** Every `giantEvery`-th repository holds `giantLinks` links (default none). */
  readonly giantEvery?: number;
  readonly giantLinks?: number;
  readonly seed?: number;
  /** The registry's root directory (default ''). */
  readonly root?: string;
}

/** Cells of the blob space per fan-out: a cell is four hex digits. */
const CELLS_PER_FAN_OUT = 256;
/** Hex digits that place a digest inside its cell. */
const PLACE_DIGITS = 9;

/** A 32-bit integer hash (lowbias32): a digest's jitter in its cell, from its index. */
function hash(n: number): number {
  let x = n >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

/** The digits after those that order a digest: the same for every key (they never decide an order). */
const TAIL = 'c0ffee'.repeat(11);

/** A standard normal draw (Box-Muller). */
function gaussian(random: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
}

/** A Poisson draw: exact for small means, normal for large ones. */
function poisson(random: () => number, mean: number): number {
  if (mean >= 30) return Math.max(0, Math.round(mean + Math.sqrt(mean) * gaussian(random)));
  const limit = Math.exp(-mean);
  let k = 0;
  for (let p = random(); p > limit; p *= random()) k++;
  return k;
}

/** Running totals of `counts`: item i's keys are [at[i], at[i + 1]). */
function running(counts: ArrayLike<number>): Float64Array {
  const at = new Float64Array(counts.length + 1);
  for (let i = 0; i < counts.length; i++) at[i + 1] = (at[i] ?? 0) + (counts[i] ?? 0);
  return at;
}

const pad = (n: number, width: number) => String(n).padStart(width, '0');

/** Evenly spaced, increasing hex digits for item `k` of `n`. */
const spaced = (k: number, n: number, digits: number) =>
  Math.floor(((k + 0.5) / n) * 16 ** digits)
    .toString(16)
    .padStart(digits, '0');

export class SyntheticRegistry implements Lister {
  /** LIST requests answered. */
  requests = 0;
  readonly base: string;
  readonly #blobsAt: Float64Array;
  readonly #linksAt: Float64Array;
  readonly #perNamespace: number;
  #lastCell = 0;
  #lastRepository = 0;

  constructor(options: SyntheticRegistryOptions) {
    const random = prng(options.seed ?? 1);
    this.base = registryPrefix(options.root);
    this.#perNamespace = options.perNamespace ?? 100;
    const cells = (options.fanOuts ?? 256) * CELLS_PER_FAN_OUT;
    const perCell = options.blobs / cells;
    this.#blobsAt = running(Array.from({ length: cells }, () => poisson(random, perCell)));
    const giant = (r: number) =>
      options.giantEvery !== undefined && r % options.giantEvery === options.giantEvery - 1;
    const giants = Array.from({ length: options.repositories }, (_, r) => giant(r)).filter(Boolean);
    const mean = (options.links - giants.length * (options.giantLinks ?? 0)) / options.repositories;
    // Log-normal with sigma 1: mean exp(mu + 1/2).
    const mu = Math.log(Math.max(1, mean)) - 0.5;
    this.#linksAt = running(
      Array.from({ length: options.repositories }, (_, r) =>
        giant(r)
          ? (options.giantLinks ?? 0)
          : Math.max(1, Math.round(Math.exp(mu + gaussian(random)))),
      ),
    );
  }

  get blobs(): number {
    return this.#blobsAt.at(-1) ?? 0;
  }

  get links(): number {
    return this.#linksAt.at(-1) ?? 0;
  }

  /** Every key. */
  get size(): number {
    return this.blobs + this.links;
  }

  /** Key `i` in listing order: the blobs, then the repositories. */
  keyAt(i: number): string {
    return i < this.blobs ? this.#blobKey(i) : this.#linkKey(i - this.blobs);
  }

  /** Every key, in listing order. */
  *keys(): Generator<string> {
    for (let i = 0; i < this.size; i++) yield this.keyAt(i);
  }

  async page(
    prefix: string,
    options: { delimiter?: string; token?: string; startAfter?: string } = {},
  ): Promise<ListedPage> {
    this.requests++;
    const { delimiter, token, startAfter } = options;
    let i = this.#seek(prefix, false);
    if (token !== undefined) i = Number(token);
    else if (startAfter !== undefined && compareKeys(startAfter, prefix) >= 0)
      i = this.#seek(startAfter, true);
    const keys: string[] = [];
    const prefixes: string[] = [];
    while (i < this.size) {
      const key = this.keyAt(i);
      if (!key.startsWith(prefix)) break;
      if (keys.length + prefixes.length === PAGE_SIZE) return { keys, prefixes, next: String(i) };
      const cut = delimiter === undefined ? -1 : key.indexOf(delimiter, prefix.length);
      if (cut < 0) {
        keys.push(key);
        i++;
        continue;
      }
      // A common prefix stands for every key below it.
      const common = key.slice(0, cut + (delimiter?.length ?? 0));
      prefixes.push(common);
      const from = i;
      i = from + firstIndex(this.size - from, (j) => !this.keyAt(from + j).startsWith(common));
    }
    return { keys, prefixes, next: undefined };
  }

  /** The first key at or after `bound` (after it only, with `after`). */
  #seek(bound: string, after: boolean): number {
    return firstIndex(this.size, (i) => {
      const order = compareKeys(this.keyAt(i), bound);
      return after ? order > 0 : order >= 0;
    });
  }

  /** Item of `at` that holds key `i`: the one the last call found, when it still does (keys are mostly read in order). */
  #itemOf(at: Float64Array, i: number, hint: number): number {
    if ((at[hint] ?? 0) <= i && i < (at[hint + 1] ?? 0)) return hint;
    return firstIndex(at.length - 1, (c) => (at[c + 1] ?? 0) > i);
  }

  #blobKey(i: number): string {
    const at = this.#blobsAt;
    const cell = this.#itemOf(at, i, this.#lastCell);
    this.#lastCell = cell;
    const first = at[cell] ?? 0;
    const inCell = (at[cell + 1] ?? 0) - first;
    const jitter = hash(i) / 2 ** 32;
    const place = Math.floor(((i - first + jitter) / inCell) * 16 ** PLACE_DIGITS);
    const digest = `${pad16(cell, 4)}${pad16(place, PLACE_DIGITS)}${TAIL.slice(0, 64 - 4 - PLACE_DIGITS)}`;
    return `${this.base}blobs/sha256/${digest.slice(0, 2)}/${digest}/data`;
  }

  #linkKey(j: number): string {
    const at = this.#linksAt;
    const r = this.#itemOf(at, j, this.#lastRepository);
    this.#lastRepository = r;
    const k = j - (at[r] ?? 0);
    const count = (at[r + 1] ?? 0) - (at[r] ?? 0);
    const name = `ns-${pad(Math.floor(r / this.#perNamespace), 5)}/app-${pad(r % this.#perNamespace, 5)}`;
    const repository = `${this.base}repositories/${name}/`;
    // Per tag: a revision and two tag links; the rest are layer links.
    const tags = Math.floor(count / 6);
    const layers = count - 3 * tags;
    const digest = (n: number, of: number) => `${spaced(n, of, 12)}${TAIL.slice(0, 52)}`;
    if (k < layers) return `${repository}_layers/sha256/${digest(k, layers)}/link`;
    if (k < layers + tags)
      return `${repository}_manifests/revisions/sha256/${digest(k - layers, tags)}/link`;
    const t = Math.floor((k - layers - tags) / 2);
    const tag = `${repository}_manifests/tags/v${pad(t, 5)}/`;
    return (k - layers - tags) % 2 === 0
      ? `${tag}current/link`
      : `${tag}index/sha256/${digest(t, tags)}/link`;
  }
}

const pad16 = (n: number, width: number) => n.toString(16).padStart(width, '0');
