/**
 * The vault format (docs/vault-format.md), version 1:
 *
 *   <vault>/blobs/sha256/<2 hex>/<hex>            one pool of blobs, shared by every snapshot
 *   <vault>/snapshots/<id>/manifest.json           written last; complete only when it says so
 *   <vault>/snapshots/<id>/inventory.jsonl.gz      every source key: size, ETag, vault key
 *   <vault>/snapshots/<id>/catalog.json            repository -> tag -> manifest digest
 *   <vault>/snapshots/<id>/objects/<key>           everything that is not a blob (links, the rest)
 *   <vault>/snapshots/<id>/cluster/*.yaml          the captured registry configuration
 *   <vault>/snapshots/<id>/resources/              captured cluster objects and their index.json
 *   <vault>/runs/<id>/...                          working state of a run (plans, shard results)
 *   <vault>/locks/<name>.json                      run leases: one per source being backed up (vault/run-lease.ts)
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { failureSchema, totalsSchema } from '../copy/model.ts';
import { blobDigestOf } from '../registry/layout.ts';
import type { RepositorySelection } from '../registry/selection.ts';

/**
 * Changes only when an older regvault would misread a vault written by a
 * newer one. Optional manifest fields are added within a version: readers
 * drop fields they do not know, and every such field is one whose absence
 * errs on the safe side (an older prune that ignores `expiresAt` keeps the
 * snapshot). Bumping for those would make every older reader refuse the
 * whole vault for no gain.
 */
export const VAULT_FORMAT_VERSION = 1;

/** The longest snapshot ttl accepted: a century, far inside what a Date holds. */
export const MAX_TTL_DAYS = 36_500;

const DAY_MS = 24 * 60 * 60 * 1000;

/** When a snapshot started at `startedAt` with a ttl of `ttlDays` expires (as Velero's `status.expiration`). */
export function expiresAtOf(startedAt: Date, ttlDays: number): string {
  return new Date(startedAt.getTime() + ttlDays * DAY_MS).toISOString();
}

/**
 * A snapshot id: UTC time to the millisecond plus a random suffix, so ids sort
 * by time (two backups in one second still sort in the order they started).
 */
export function newSnapshotId(now: Date = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '');
  return `${stamp}-${randomBytes(3).toString('hex')}`;
}

/**
 * The one form of a snapshot id, as `newSnapshotId` makes it (every version
 * so far has made this form). test/cli/docs-ids.test.ts holds every id the
 * docs show to it.
 */
export const SNAPSHOT_ID = /^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{6}$/;

/** A snapshot id for messages and docs. */
export const SNAPSHOT_ID_EXAMPLE = '20261123T020000.000Z-4f9c2a';

/** Normalises a vault prefix to '' or 'path/'. */
export function vaultRoot(prefix: string): string {
  const trimmed = prefix.replace(/^\/+/, '').replace(/\/+$/, '');
  return trimmed === '' ? '' : `${trimmed}/`;
}

const POOL_BLOB = /^[0-9a-f]{2}\/([0-9a-f]{64})$/;

/** The digest (`sha256:<hex>`) of a pool blob's vault key (`vaultKeys.blob`); undefined for any other key. */
export function poolBlobDigestOf(root: string, key: string): string | undefined {
  const pool = vaultKeys.blobPool(root);
  const hex = key.startsWith(pool) ? POOL_BLOB.exec(key.slice(pool.length))?.[1] : undefined;
  return hex === undefined ? undefined : `sha256:${hex}`;
}

export const vaultKeys = {
  /** The folder every snapshot's blobs share. */
  blobPool: (root: string) => `${root}blobs/sha256/`,
  blob: (root: string, digest: string) => {
    const hex = digest.replace(/^sha256:/, '');
    return `${root}blobs/sha256/${hex.slice(0, 2)}/${hex}`;
  },
  snapshot: (root: string, id: string) => `${root}snapshots/${id}/`,
  manifest: (root: string, id: string) => `${root}snapshots/${id}/manifest.json`,
  inventory: (root: string, id: string) => `${root}snapshots/${id}/inventory.jsonl.gz`,
  catalog: (root: string, id: string) => `${root}snapshots/${id}/catalog.json`,
  objects: (root: string, id: string) => `${root}snapshots/${id}/objects/`,
  cluster: (root: string, id: string, name: string) => `${root}snapshots/${id}/cluster/${name}`,
  /** A registry database's dump (`pg_dump -C` text), by the database's name. */
  database: (root: string, id: string, name: string) =>
    `${root}snapshots/${id}/database/${encodeURIComponent(name)}.sql`,
  /** The folder of the snapshot's cluster objects (vault/resources.ts names the files). */
  resources: (root: string, id: string) => `${root}snapshots/${id}/resources/`,
  run: (root: string, id: string) => `${root}runs/${id}/`,
  runRecords: (root: string, runId: string, shardId: string, seq: number) =>
    `${root}runs/${runId}/records/${shardId}/${String(seq).padStart(6, '0')}.jsonl.gz`,
  runShardResult: (root: string, runId: string, shardId: string) =>
    `${root}runs/${runId}/shards/${shardId}.json`,
  /** The folder of run leases (vault/run-lease.ts names the files). */
  locks: (root: string) => `${root}locks/`,
} as const;

/**
 * Where a source object goes in the vault. `relativeKey` is the key below the
 * source location's prefix; a blob (its key under the registry prefix holds
 * its digest, as `digestOf` reads it: Distribution's layout unless told) goes to the shared pool, everything else under the snapshot.
 * Order-preserving within a shard, as the copy engine requires.
 */
export function backupKeyFor(
  root: string,
  snapshotId: string,
  registryPrefix: string | undefined,
  relativeKey: string,
  digestOf: (relativeKey: string) => string | undefined = blobDigestOf,
): string {
  if (registryPrefix !== undefined && relativeKey.startsWith(registryPrefix)) {
    const digest = digestOf(relativeKey.slice(registryPrefix.length));
    if (digest !== undefined) return vaultKeys.blob(root, digest);
  }
  return `${vaultKeys.objects(root, snapshotId)}${relativeKey}`;
}

export const SnapshotStatus = {
  Running: 'running',
  Complete: 'complete',
  Failed: 'failed',
} as const;
export type SnapshotStatus = (typeof SnapshotStatus)[keyof typeof SnapshotStatus];

/** The repositories a partial backup takes: globs to take (all when absent), globs to leave out. */
export const selectionSchema = z
  .object({
    repositories: z.array(z.string().min(1)).min(1).optional(),
    excludeRepositories: z.array(z.string().min(1)).min(1).optional(),
  })
  .strict();

/** A partial snapshot's selection, as its manifest records it. */
export type Selection = z.infer<typeof selectionSchema>;

/** A selection as a manifest records it; undefined when it takes every repository (no globs). */
export function selectionOf(given: RepositorySelection): Selection | undefined {
  const repositories = given.repositories === undefined ? [] : [...given.repositories];
  const excludeRepositories =
    given.excludeRepositories === undefined ? [] : [...given.excludeRepositories];
  if (repositories.length === 0 && excludeRepositories.length === 0) return undefined;
  return {
    ...(repositories.length === 0 ? {} : { repositories }),
    ...(excludeRepositories.length === 0 ? {} : { excludeRepositories }),
  };
}

/** A database dump in a snapshot. */
export const databaseDumpSchema = z.strictObject({
  name: z.string().min(1),
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type DatabaseDumpRecord = z.infer<typeof databaseDumpSchema>;

export const snapshotManifestSchema = z.object({
  formatVersion: z.literal(VAULT_FORMAT_VERSION),
  id: z.string().regex(SNAPSHOT_ID),
  status: z.enum(['running', 'complete', 'failed']),
  startedAt: z.string(),
  finishedAt: z.string().optional(),
  /**
   * Set when the backup was given a ttl (`startedAt` plus the ttl). Prune
   * judges such a snapshot by it instead of the policy: kept until then,
   * expired after, unless it is the newest complete one of its source or a
   * running backup builds on it (docs/integrity.md). Absent: the policy decides.
   */
  expiresAt: z.iso.datetime().optional(),
  toolVersion: z.string(),
  /**
   * `registry`: Docker Distribution's layout; `quay`: Quay's (blobs only,
   * by digest under the storage path; the catalog from its database);
   * `generic`: a plain bucket.
   */
  layout: z.enum(['registry', 'quay', 'generic']),
  source: z.object({
    profile: z.string(),
    resourceName: z.string().optional(),
    bucket: z.string(),
    endpoint: z.string().optional(),
    region: z.string(),
    prefix: z.string(),
    rootDirectory: z.string(),
  }),
  counts: z.object({
    objects: z.number().int().nonnegative(),
    blobs: z.number().int().nonnegative(),
    repositories: z.number().int().nonnegative(),
    tags: z.number().int().nonnegative(),
  }),
  bytes: z.number().int().nonnegative(),
  totals: totalsSchema,
  uploadsSkipped: z.array(z.string()),
  checks: z.record(z.string(), z.object({ ok: z.boolean(), detail: z.string() })),
  failures: z.object({ count: z.number().int().nonnegative(), sample: z.array(failureSchema) }),
  clusterFiles: z.array(z.string()),
  /**
   * The registry's database, dumped while the registry was quiesced (the
   * quay profile): its name, and the dump's size and SHA-256 (hex) under
   * `database/<name>.sql`. Absent for registries that keep no database.
   */
  database: databaseDumpSchema.optional(),
  /**
   * Counts of the cluster objects captured under `resources/` (its
   * `index.json` names them); absent when the backup captured none.
   */
  resources: z
    .object({
      objects: z.number().int().nonnegative(),
      secrets: z.number().int().nonnegative(),
      types: z.number().int().nonnegative(),
    })
    .optional(),
  /** The run that made it (its working files live under `runs/<runId>/` until cleaned). */
  runId: z.string(),
  /**
   * The run holds a lease (vault/run-lease.ts) while it runs: a `running`
   * manifest whose lease is gone or expired belongs to a dead run. Absent
   * (written before leases): judged by its age, as before.
   */
  leased: z.boolean().optional(),
  /**
   * A partial snapshot: the repositories the backup took (globs; all when
   * absent) and those it left out. Absent: the whole registry. fsck and
   * restore say a snapshot is partial; retention judges partial snapshots of
   * a selection apart from the whole registry's (docs/vault-format.md).
   */
  selection: selectionSchema.optional(),
  /**
   * `inventory.jsonl.gz` is a series of gzip members, one per part, so a
   * restore worker reads one part with a ranged GET. Blob parts come first.
   * A part's records are sorted by key; `first` and `last` are its lowest and
   * highest (absent in snapshots older than them), so a backup worker reads
   * only the parts that overlap its shard's keys.
   */
  inventory: z.object({
    records: z.number().int().nonnegative(),
    parts: z.array(
      z.object({
        kind: z.enum(['blobs', 'links', 'objects']),
        offset: z.number().int().nonnegative(),
        length: z.number().int().nonnegative(),
        records: z.number().int().nonnegative(),
        first: z.string().optional(),
        last: z.string().optional(),
      }),
    ),
  }),
});
/** `snapshots/<id>/manifest.json`. */
export type SnapshotManifest = z.infer<typeof snapshotManifestSchema>;

export const catalogSchema = z.object({
  repositories: z.array(z.object({ name: z.string(), tags: z.record(z.string(), z.string()) })),
});
/** `snapshots/<id>/catalog.json`: what the registry served, for verification after a restore. */
export type SnapshotCatalog = z.infer<typeof catalogSchema>;
