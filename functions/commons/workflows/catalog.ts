/**
 * What a backup's finalize learns from its records alone, shard by shard:
 * the catalog (repository -> tag -> manifest digest) and the reference
 * check. Neither re-reads what the workers just copied (docs/integrity.md).
 */
import PQueue from 'p-queue';
import type { InventoryRecord } from '../copy/model.ts';
import { REGISTRY_V2 } from '../registry/layout.ts';
import { catalogSchema, type SnapshotCatalog, vaultKeys } from '../vault/format.ts';
import { getBytes, getJson, rootOf } from '../vault/store.ts';
import type { BackupState } from './backup.ts';
import type { WorkflowDeps } from './deps.ts';

const TAG_LINK = /^repositories\/(.+)\/_manifests\/tags\/([^/]+)\/current\/link$/;
const TAG_INDEX =
  /^repositories\/(.+)\/_manifests\/tags\/([^/]+)\/index\/sha256\/([0-9a-f]{64})\/link$/;
const LAYER_LINK = /^repositories\/(.+)\/_layers\/sha256\/([0-9a-f]{64})\/link$/;
const REVISION_LINK = /^repositories\/(.+)\/_manifests\/revisions\/sha256\/([0-9a-f]{64})\/link$/;

const BLOB_DATA = /^blobs\/sha256\/[0-9a-f]{2}\/([0-9a-f]{64})\/data$/;

/** What refers to a blob: a tag (its manifest), a revision link, a layer link. */
export const Referrer = { Tag: 0, Revision: 1, Layer: 2 } as const;
export type Referrer = (typeof Referrer)[keyof typeof Referrer];

const DIGEST_BYTES = 32;
/** Bytes of a digest in a reference's sort key; the key's other three bytes are its index. */
const PREFIX_BYTES = 5;
/** References beyond three bytes of index are sorted by comparing digests. */
const INDEX_LIMIT = 2 ** 24;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Blob digests the links refer to, 37 bytes each (the digest, what refers,
 * and an index into a table of names): a million layer links take 37 MB, not
 * a set of key strings ten times that. Sorted once, then matched against the
 * blobs as they come in key order (a blob's key sorts by its digest).
 */
export class References {
  #digests = Buffer.alloc(DIGEST_BYTES * 1024);
  #referrers = new Uint8Array(1024);
  #names = new Uint32Array(1024);
  #count = 0;
  #order: Uint32Array | undefined;
  #cursor = 0;
  #lastBlob: Buffer | undefined;

  add(hex: string, referrer: Referrer, name: number): void {
    if (this.#order !== undefined) throw new Error('a reference came after the blobs');
    if (this.#count === this.#referrers.length) this.#grow();
    this.#digests.write(hex, this.#count * DIGEST_BYTES, DIGEST_BYTES, 'hex');
    this.#referrers[this.#count] = referrer;
    this.#names[this.#count] = name;
    this.#count++;
  }

  #grow(): void {
    const size = this.#referrers.length * 2;
    const digests = Buffer.alloc(size * DIGEST_BYTES);
    this.#digests.copy(digests);
    this.#digests = digests;
    const referrers = new Uint8Array(size);
    referrers.set(this.#referrers);
    this.#referrers = referrers;
    const names = new Uint32Array(size);
    names.set(this.#names);
    this.#names = names;
  }

  #compare(index: number, digest: Buffer): number {
    const at = index * DIGEST_BYTES;
    return this.#digests.compare(digest, 0, DIGEST_BYTES, at, at + DIGEST_BYTES);
  }

  /** Orders two references by digest (a typed array's sort comparator). */
  readonly #byDigest = (a: number, b: number): number =>
    this.#digests.compare(
      this.#digests,
      b * DIGEST_BYTES,
      (b + 1) * DIGEST_BYTES,
      a * DIGEST_BYTES,
      (a + 1) * DIGEST_BYTES,
    );

  /**
   * The references in digest order. Sorted as 64-bit integers, each a
   * digest's first five bytes above its index, which a typed array sorts
   * natively (a comparator that compares buffers took seconds at millions of
   * links); runs that share the five bytes are then sorted by the whole digest.
   */
  #sorted(): Uint32Array {
    if (this.#order !== undefined) return this.#order;
    const count = this.#count;
    if (count >= INDEX_LIMIT || !LITTLE_ENDIAN) {
      this.#order = Uint32Array.from({ length: count }, (_, i) => i).sort(this.#byDigest);
      return this.#order;
    }
    const keys = new BigUint64Array(count);
    const bytes = new Uint8Array(keys.buffer);
    const digests = this.#digests;
    for (let i = 0; i < count; i++) {
      const at = i * DIGEST_BYTES;
      const key = i * 8;
      // Little-endian: the digest's first byte is the key's most significant.
      for (let b = 0; b < PREFIX_BYTES; b++) bytes[key + 7 - b] = digests[at + b] ?? 0;
      bytes[key] = i & 0xff;
      bytes[key + 1] = (i >>> 8) & 0xff;
      bytes[key + 2] = (i >>> 16) & 0xff;
    }
    keys.sort();
    const order = new Uint32Array(count);
    for (let i = 0; i < count; i++) {
      const key = i * 8;
      order[i] = (bytes[key] ?? 0) | ((bytes[key + 1] ?? 0) << 8) | ((bytes[key + 2] ?? 0) << 16);
    }
    const prefix = (index: number) => keys[index] ?? 0n;
    for (let start = 0, end = 1; end <= count; end++) {
      if (end < count && prefix(end) >> 24n === prefix(start) >> 24n) continue;
      if (end - start > 1) order.subarray(start, end).sort(this.#byDigest);
      start = end;
    }
    this.#order = order;
    return order;
  }

  /**
   * A blob of the snapshot, in ascending digest order: every reference to a
   * lower digest had no blob, and is handed to `missing`.
   */
  blob(hex: string, missing: (referrer: Referrer, name: number, hex: string) => void): void {
    const digest = Buffer.from(hex, 'hex');
    if (this.#lastBlob !== undefined && this.#lastBlob.compare(digest) > 0)
      throw new Error(`blobs came out of digest order at sha256:${hex}`);
    this.#lastBlob = digest;
    const order = this.#sorted();
    for (; this.#cursor < order.length; this.#cursor++) {
      const index = order[this.#cursor] ?? 0;
      const side = this.#compare(index, digest);
      if (side > 0) return;
      if (side < 0) this.#missing(index, missing);
    }
  }

  /** The references past the last blob: none of them has one. */
  end(missing: (referrer: Referrer, name: number, hex: string) => void): void {
    const order = this.#sorted();
    for (; this.#cursor < order.length; this.#cursor++)
      this.#missing(order[this.#cursor] ?? 0, missing);
  }

  #missing(index: number, missing: (referrer: Referrer, name: number, hex: string) => void): void {
    const at = index * DIGEST_BYTES;
    missing(
      (this.#referrers[index] ?? 0) as Referrer,
      this.#names[index] ?? 0,
      this.#digests.toString('hex', at, at + DIGEST_BYTES),
    );
  }
}

/** Dangling references shown in a check's detail; the rest are counted. */
export const DANGLING_SHOWN = 5;

/**
 * What a backup's finalize learns of a registry from its records, fed shard
 * by shard so that it holds one shard's records at a time:
 *  - the catalog (repository -> tag -> manifest digest), without re-reading
 *    what was just copied: a tag whose current link is unchanged since the
 *    previous snapshot keeps that snapshot's digest; a tag with one index
 *    entry points at it (the registry writes the index entry before the
 *    current link); only a tag moved since (several index entries, a changed
 *    current link) has its current link read, once;
 *  - the reference check, from the records alone (no read): every tag's
 *    manifest has a revision link and a blob in the snapshot, every revision
 *    link and every layer link has its blob. Manifests are not parsed here (a
 *    full backup would read one object in eleven again); the restore's proof
 *    and `regvault fsck` read them.
 * Every link shard comes first (a repository's links are all in one shard),
 * then the blob shards in key order; what it holds grows with the tags and
 * the links' references, 37 bytes a link, not with the blobs.
 */
export class RegistryRecords {
  readonly #deps: WorkflowDeps;
  readonly #state: BackupState;
  readonly #base: string;
  #before: Promise<Map<string, string>> | undefined;
  readonly #repositories = new Map<string, Record<string, string>>();
  /** Repository names, then `repo:tag` names, that references point into. */
  readonly #names: string[] = [];
  readonly #nameIndex = new Map<string, number>();
  readonly #references = new References();
  readonly #dangling: string[] = [];
  #danglingCount = 0;
  #layerLinks = 0;
  /** Tag links read because their tag moved. */
  reads = 0;

  constructor(deps: WorkflowDeps, state: BackupState) {
    this.#deps = deps;
    this.#state = state;
    this.#base = `${state.source.prefix}${state.rootDirectory}${REGISTRY_V2}`;
  }

  #previousTags(): Promise<Map<string, string>> {
    this.#before ??= (async () => {
      const before = new Map<string, string>();
      const previous = this.#state.previousSnapshotId;
      if (previous === undefined) return before;
      const catalog = await getJson(
        this.#deps.vault,
        vaultKeys.catalog(rootOf(this.#deps.vault), previous),
        catalogSchema,
      );
      for (const repository of catalog?.repositories ?? [])
        for (const [tag, digest] of Object.entries(repository.tags))
          before.set(`${repository.name}:${tag}`, digest);
      return before;
    })();
    return this.#before;
  }

  #name(name: string): number {
    let index = this.#nameIndex.get(name);
    if (index === undefined) {
      index = this.#names.length;
      this.#names.push(name);
      this.#nameIndex.set(name, index);
    }
    return index;
  }

  #dangle(what: string): void {
    this.#danglingCount++;
    if (this.#dangling.length < DANGLING_SHOWN) this.#dangling.push(what);
  }

  /** Every record of one link shard (any order). */
  async addLinkShard(records: readonly InventoryRecord[]): Promise<void> {
    const keys = new Set<string>();
    const indexes = new Map<string, string[]>();
    const currents: Array<{ repository: string; tag: string; record: InventoryRecord }> = [];
    for (const record of records) {
      const relative = record.key.slice(this.#base.length);
      keys.add(relative);
      const revision = REVISION_LINK.exec(relative);
      if (revision?.[1] !== undefined && revision[2] !== undefined) {
        this.#references.add(revision[2], Referrer.Revision, this.#name(revision[1]));
        continue;
      }
      const layer = LAYER_LINK.exec(relative);
      if (layer?.[1] !== undefined && layer[2] !== undefined) {
        this.#layerLinks++;
        this.#references.add(layer[2], Referrer.Layer, this.#name(layer[1]));
        continue;
      }
      const index = TAG_INDEX.exec(relative);
      if (index?.[1] !== undefined && index[2] !== undefined && index[3] !== undefined) {
        const name = `${index[1]}:${index[2]}`;
        indexes.set(name, [...(indexes.get(name) ?? []), `sha256:${index[3]}`]);
        continue;
      }
      const current = TAG_LINK.exec(relative);
      if (current?.[1] !== undefined && current[2] !== undefined)
        currents.push({ repository: current[1], tag: current[2], record });
    }
    if (currents.length === 0) return;
    const before = await this.#previousTags();
    const reads = new PQueue({ concurrency: 32 });
    const tags = await Promise.all(
      currents.map(async ({ repository, tag, record }) => {
        const name = `${repository}:${tag}`;
        const index = indexes.get(name) ?? [];
        let digest = record.copied ? undefined : before.get(name);
        if (digest === undefined && index.length === 1) digest = index[0];
        if (digest === undefined) {
          this.reads++;
          const body = await reads.add(() => getBytes(this.#deps.vault, record.targetKey));
          digest = (body ?? Buffer.alloc(0)).toString('utf8').trim();
        }
        return { repository, tag, digest };
      }),
    );
    for (const { repository, tag, digest } of tags) {
      const known = this.#repositories.get(repository) ?? {};
      known[tag] = digest;
      this.#repositories.set(repository, known);
      const hex = digest.replace(/^sha256:/, '');
      if (!keys.has(`repositories/${repository}/_manifests/revisions/sha256/${hex}/link`))
        this.#dangle(`${repository}:${tag} (revision link)`);
      if (/^[0-9a-f]{64}$/.test(hex))
        this.#references.add(hex, Referrer.Tag, this.#name(`${repository}:${tag}`));
      else this.#dangle(`${repository}:${tag} (manifest blob ${digest})`);
    }
  }

  /** Records of the blob tree, in key order, after every link shard. */
  addBlobs(records: readonly InventoryRecord[]): void {
    for (const record of records) {
      const blob = BLOB_DATA.exec(record.key.slice(this.#base.length));
      if (blob?.[1] !== undefined) this.#references.blob(blob[1], this.#missing);
    }
  }

  readonly #missing = (referrer: Referrer, name: number, hex: string): void => {
    const who = this.#names[name] ?? '?';
    if (referrer === Referrer.Tag) this.#dangle(`${who} (manifest blob sha256:${hex})`);
    else if (referrer === Referrer.Revision) this.#dangle(`${who}@sha256:${hex} (manifest blob)`);
    else this.#dangle(`${who} layer sha256:${hex} (blob)`);
  };

  /** The catalog and the reference check, once every record was added. */
  finish(): { catalog: SnapshotCatalog; references: { ok: boolean; detail: string } } {
    this.#references.end(this.#missing);
    const catalog: SnapshotCatalog = {
      repositories: [...this.#repositories.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([name, tags]) => ({
          name,
          tags: Object.fromEntries(Object.entries(tags).sort(([a], [b]) => a.localeCompare(b))),
        })),
    };
    const references =
      this.#danglingCount === 0
        ? {
            ok: true,
            detail: `${catalog.repositories.length} repositories: every tag leads to a revision link and a manifest blob, and all ${this.#layerLinks} layer links to blobs, in the snapshot`,
          }
        : {
            ok: false,
            detail: `${this.#danglingCount} dangling references, e.g. ${this.#dangling.join(', ')}`,
          };
    return { catalog, references };
  }
}
