/**
 * Finalize's catalog and reference check for a registry whose references
 * live in its database (Quay): the live tags read from the database while
 * the registry was quiesced (registry-state.ts) are the catalog, and every
 * blob they name must be among the snapshot's blobs, matched as the blob
 * records come in digest order (catalog.ts `References`, 37 bytes a
 * reference). A blob the database names and the bucket lacks fails the
 * backup, naming it: a restore of it could not serve that tag.
 */
import type { InventoryRecord } from '../copy/model.ts';
import type { DatabaseTag } from '../registry/profile.ts';
import { quayBlobDigestOf } from '../registry/quay-layout.ts';
import type { SnapshotCatalog } from '../vault/format.ts';
import { DANGLING_SHOWN, References, Referrer } from './catalog.ts';

export class DatabaseRecords {
  readonly #base: string;
  readonly #tags: readonly DatabaseTag[] | undefined;
  readonly #references = new References();
  readonly #names: string[] = [];
  /** Missing blobs, by digest, with the tags that need them. */
  readonly #missing = new Map<string, string[]>();
  #needed = 0;

  /** `base`: the storage path's prefix in the source bucket (blob keys are `<base>sha256/...`). */
  constructor(tags: readonly DatabaseTag[] | undefined, base: string) {
    this.#base = base;
    this.#tags = tags;
    for (const tag of tags ?? []) {
      const name = this.#names.push(`${tag.repository}:${tag.tag}`) - 1;
      for (const blob of new Set(tag.blobs)) {
        this.#needed++;
        this.#references.add(blob.replace(/^sha256:/, ''), Referrer.Layer, name);
      }
    }
  }

  /** Records of the blob shards, in key order (a blob's key sorts by its digest). */
  addBlobs(records: readonly InventoryRecord[]): void {
    for (const record of records) {
      if (!record.key.startsWith(this.#base)) continue;
      const digest = quayBlobDigestOf(record.key.slice(this.#base.length));
      if (digest !== undefined) this.#references.blob(digest.slice('sha256:'.length), this.#miss);
    }
  }

  readonly #miss = (_referrer: Referrer, name: number, hex: string): void => {
    const digest = `sha256:${hex}`;
    this.#missing.set(digest, [...(this.#missing.get(digest) ?? []), this.#names[name] ?? '?']);
  };

  /** The catalog (repository -> tag -> manifest digest) and the reference check. */
  finish(): { catalog: SnapshotCatalog; references: { ok: boolean; detail: string } } {
    const tags = this.#tags;
    if (tags === undefined)
      return {
        catalog: { repositories: [] },
        references: {
          ok: false,
          detail:
            "the registry's live tags were not read from its database, so the snapshot has no catalog to check",
        },
      };
    this.#references.end(this.#miss);
    const repositories = new Map<string, Record<string, string>>();
    for (const tag of tags) {
      const known = repositories.get(tag.repository) ?? {};
      known[tag.tag] = tag.manifest;
      repositories.set(tag.repository, known);
    }
    const catalog: SnapshotCatalog = {
      repositories: [...repositories.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([name, byTag]) => ({
          name,
          tags: Object.fromEntries(Object.entries(byTag).sort(([a], [b]) => a.localeCompare(b))),
        })),
    };
    if (this.#missing.size === 0)
      return {
        catalog,
        references: {
          ok: true,
          detail: `${catalog.repositories.length} repositories, ${tags.length} tags in the database: all ${this.#needed} blobs their manifests need are in the snapshot`,
        },
      };
    const shown = [...this.#missing]
      .slice(0, DANGLING_SHOWN)
      .map(([digest, users]) => `${digest} (needed by ${users.slice(0, 3).join(', ')})`);
    return {
      catalog,
      references: {
        ok: false,
        detail: `${this.#missing.size} blobs the database names are not in the bucket: ${shown.join(', ')}${this.#missing.size > DANGLING_SHOWN ? `, and ${this.#missing.size - DANGLING_SHOWN} more` : ''}`,
      },
    };
  }
}
