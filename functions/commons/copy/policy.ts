/**
 * The copy policy: what the copy engine is told about a source, so that it
 * knows keys, listings and lanes and nothing of what the keys mean. A policy
 * splits a source into shards, in the order they are to be listed, and says
 * how each of its shards is listed: in which passes, what each pass copies,
 * and what a listed key is (left out, or named by its content). Every caller
 * opens the same copy job and passes the policy in: the registry's lives in
 * registry/copy-policy.ts, `genericCopyPolicy` (plan.ts) copies any bucket by
 * key range.
 */
import type { Shard, ShardKind } from './model.ts';

/** One page of a listing made while planning. */
export interface ListedPage {
  readonly keys: string[];
  readonly prefixes: string[];
  /** The continuation token, when the listing goes on. */
  readonly next: string | undefined;
}

/** The LIST requests a policy plans with; each one counts in the plan's `requests`. */
export interface Lister {
  page(
    prefix: string,
    options?: { delimiter?: string; token?: string; startAfter?: string },
  ): Promise<ListedPage>;
}

/** How a policy is asked to split a source. */
export interface SplitOptions {
  /**
   * Objects a shard should hold at most (counted where the policy walks a
   * tree, estimated where it samples); a shard holds more only where one
   * unit the policy does not split (a registry's repository) is larger.
   */
  readonly targetObjectsPerShard: number;
  /** Generic buckets: how many levels of `/` prefixes delimiter listings discover (default 2). */
  readonly discoveryDepth?: number;
  /** LIST requests in flight while planning (default 16). */
  readonly listConcurrency?: number;
  /**
   * Registries: LIST pages counting one tree may take before it samples
   * instead (default `COUNT_PAGES`, 2,048: exact counts up to about two
   * million links; copy/key-ranges.ts).
   */
  readonly countPages?: number;
}

/**
 * A source split into shards. The copy engine lists every shard of
 * `linkShards` before any shard of `dataShards` starts listing; the names are
 * those of the plan's one two-step order, a registry's links before its blobs.
 */
export interface Split {
  readonly linkShards: readonly Shard[];
  readonly dataShards: readonly Shard[];
  readonly estimatedObjects: number;
}

/**
 * A listing by delimiter, so that directories a pass copies nothing from come
 * back as one common prefix each.
 */
export interface RollUp {
  readonly delimiter: string;
  /** Whether a common prefix is such a directory; any other is listed in full. */
  covers(commonPrefix: string, listingPrefix: string): boolean;
}

/** One pass over a shard's keys. */
export interface Pass {
  readonly rollUp?: RollUp;
  /**
   * Every copy of this pass finishes before the next pass is listed, and the
   * pass's listing is never handed on to another worker.
   */
  readonly barrier?: boolean;
  /**
   * An earlier barrier pass whose listing this one is the same as (the same
   * roll-up). When that pass copied nothing and was listed whole in this run,
   * its pages are taken again instead of a second listing: nothing it
   * captured is new, so nothing it captured can point at a key written after
   * its listing (docs/consistency.md, "An unchanged shard").
   */
  readonly relists?: number;
}

/** What a pass does with one listed key (undefined: nothing, another pass copies it). */
export type KeyTreatment =
  /**
   * Copied. `digest` (`sha256:<hex>`) when the key names its content: an
   * object of the same size in the target is then the same object, and the
   * bytes are checked against the digest where that costs no extra read.
   */
  | {
      readonly leaveOut?: undefined;
      readonly digest?: string;
      /**
       * In a barrier pass: the next pass need not wait for this copy, whose
       * key names its content (a registry's tag index entry). It runs after
       * the pass's other copies and before the shard ends.
       */
      readonly trails?: boolean;
    }
  /**
   * Left out on purpose and counted in `uploadsSkipped` (a registry's
   * unfinished upload); `uploadId` is reported in the shard's `uploadIds`.
   */
  | { readonly leaveOut: true; readonly uploadId?: string };

/** A plain key, copied: shared, since most keys are. */
export const COPY: KeyTreatment = {};

/** How one shard is listed and copied. */
export interface ShardRoute {
  /** The passes over the shard's keys, in order (at least one). */
  readonly passes: readonly Pass[];
  /** Copies the shard may keep queued ahead of its listing (default: the queue's concurrency). */
  readonly lookahead?: number;
  /** What pass `pass` does with a listed key. Called once per listed key and pass. */
  treat(key: string, pass: number): KeyTreatment | undefined;
}

/** The part of a copy that depends on what the source holds: its shards and how each is listed. */
export interface CopyPolicy {
  /** Splits the source below `prefix` (for a registry: its root directory) into shards. */
  split(list: Lister, prefix: string, options: SplitOptions): Promise<Split>;
  /** How a shard this policy planned is listed and copied. */
  route(shard: Shard): ShardRoute;
  /**
   * Called before a run of a shard starts listing, with a lister of the
   * source: a policy that must learn something first does it here (a partial
   * registry backup, which blobs its repositories link to). Absent: nothing.
   */
  prepare?(shard: Shard, list: Lister): Promise<void>;
  /**
   * The previous backup's shards again, sized by what its snapshot held,
   * when they still cover the source and fit it; undefined when the source
   * must be split afresh. Absent: every backup is split afresh.
   */
  reuse?(
    list: Lister,
    prefix: string,
    previous: PreviousPlan,
    options: SplitOptions,
  ): Promise<Split | undefined>;
}

/** The plan of the last complete backup of a source, and the objects of each kind its snapshot held. */
export interface PreviousPlan {
  readonly shards: readonly Shard[];
  readonly objects: Readonly<Partial<Record<ShardKind, number>>>;
}
