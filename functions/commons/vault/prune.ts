/**
 * Snapshot retention applied: garbage collection of the vault. Expired
 * snapshots (as vault/retention.ts judges them) lose their manifest first (so
 * nothing can pick them any more), then their own files; then a mark and
 * sweep removes pool blobs and snapshot objects that no remaining snapshot
 * refers to. Keys written after the oldest running backup started (less a
 * grace period) are never swept, because a running backup writes objects
 * before its inventory names them. The rules and why they are safe:
 * docs/integrity.md.
 */
import { DeleteObjectCommand, DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { z } from 'zod';
import { inventoryRecordSchema } from '../copy/model.ts';
import { messageOf } from '../errors.ts';
import type { StepLogger } from '../log.ts';
import { DigestSet } from '../registry/fsck-layout.ts';
import { poolBlobDigestOf, type SnapshotManifest, SnapshotStatus, vaultKeys } from './format.ts';
import {
  DEFAULT_GRACE_MS,
  type PlanOptions,
  type PrunePlan,
  planPrune,
  type RetentionPolicy,
  runningBackupOf,
} from './retention.ts';
import {
  eachInventoryRecord,
  eachListedKey,
  getBytes,
  gunzipLines,
  type ListedKey,
  listKeys,
  listSnapshotIds,
  listSnapshots,
  readManifest,
  readObjectLock,
  rootOf,
  type Vault,
  type VaultObjectLock,
} from './store.ts';

export interface PruneOptions extends PlanOptions {
  readonly now: Date;
  /** Plan, mark and list, and report what would go; delete nothing. */
  readonly dryRun?: boolean;
  readonly log?: StepLogger;
}

export interface PruneReport {
  readonly dryRun: boolean;
  readonly plan: PrunePlan;
  /** Snapshots whose manifest was deleted (or would be, in a dry run). */
  readonly deletedSnapshots: string[];
  /** Keys deleted (or that would be): expired snapshots' own files, their runs, unreferenced objects and pool blobs. */
  readonly deleted: { readonly keys: number; readonly bytes: number; readonly poolBlobs: number };
  /** Unreferenced keys left alone because they are newer than the cutoff. */
  readonly keptForGrace: { readonly keys: number; readonly bytes: number; readonly cutoff: string };
  /** Keys referenced by the remaining snapshots (their inventories and running backups' records). */
  readonly marked: number;
  /** Why pool blobs were not swept this time, when they were not. */
  readonly poolSweepPostponed?: string;
  /** Why nothing was swept, when garbage collection was stopped for safety. */
  readonly sweepSkipped?: string;
  readonly failedDeletes: Array<{ key: string; message: string }>;
  /** The vault's Object Lock: a delete there leaves the locked versions until their retention ends. */
  readonly objectLock: VaultObjectLock;
}

/** Deletes keys in batches of 1000; returns the keys that could not be deleted. */
async function deleteKeys(
  vault: Vault,
  keys: readonly string[],
): Promise<Array<{ key: string; message: string }>> {
  const failed: Array<{ key: string; message: string }> = [];
  for (let start = 0; start < keys.length; start += 1000) {
    const batch = keys.slice(start, start + 1000);
    try {
      const response = await vault.client.send(
        new DeleteObjectsCommand({
          Bucket: vault.location.bucket,
          Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
        }),
      );
      for (const error of response.Errors ?? [])
        failed.push({
          key: error.Key ?? '',
          message: `${error.Code ?? 'Error'}: ${error.Message ?? ''}`,
        });
    } catch (err) {
      for (const key of batch) failed.push({ key, message: messageOf(err) });
    }
  }
  return failed;
}

const runRecordSchema = z.object({ r: inventoryRecordSchema });

/** Vault keys a running backup has recorded so far (its record files; see workflows/worker.ts). */
async function recordedKeys(vault: Vault, runId: string): Promise<string[]> {
  const keys: string[] = [];
  for (const file of await listKeys(vault, `${vaultKeys.run(rootOf(vault), runId)}records/`)) {
    const bytes = await getBytes(vault, file.key);
    if (bytes === undefined) continue;
    for (const line of await gunzipLines(bytes)) {
      const parsed = runRecordSchema.safeParse(line);
      if (parsed.success) keys.push(parsed.data.r.targetKey);
    }
  }
  return keys;
}

/**
 * Deletes one snapshot the safe way: its manifest first (so nothing picks it
 * any more), then its inventory, catalog, cluster files and its run's working
 * files. Its `objects/` stay: later snapshots may refer to them, and the next
 * prune sweeps the ones nobody does. Keys in `protect` are never deleted.
 */
export async function deleteSnapshot(
  vault: Vault,
  manifest: SnapshotManifest,
  options: { readonly dryRun?: boolean; readonly protect?: Pick<ReadonlySet<string>, 'has'> } = {},
): Promise<{ keys: number; bytes: number; failed: Array<{ key: string; message: string }> }> {
  const root = rootOf(vault);
  const manifestKey = vaultKeys.manifest(root, manifest.id);
  const own = (await listKeys(vault, vaultKeys.snapshot(root, manifest.id))).filter(
    (k) =>
      !k.key.startsWith(vaultKeys.objects(root, manifest.id)) &&
      options.protect?.has(k.key) !== true,
  );
  const run = await listKeys(vault, vaultKeys.run(root, manifest.runId));
  const files = [...own.filter((k) => k.key !== manifestKey), ...run];
  let failed: Array<{ key: string; message: string }> = [];
  if (options.dryRun !== true) {
    await vault.client.send(
      new DeleteObjectCommand({ Bucket: vault.location.bucket, Key: manifestKey }),
    );
    failed = await deleteKeys(
      vault,
      files.map((k) => k.key),
    );
  }
  return {
    keys: 1 + files.length - failed.length,
    bytes: [...own, ...run].reduce((sum, k) => sum + k.size, 0),
    failed,
  };
}

/**
 * What the remaining snapshots refer to, held only where a sweep can meet
 * it: pool blobs as their digests' bytes (vault/format.ts names a pool blob
 * by its digest), and keys inside the folders that may be deleted (expired
 * snapshots' and those without a manifest). A kept snapshot's own folder is
 * never swept, so its keys are not held: at 10 million objects they were
 * most of the marks.
 */
class Marks {
  readonly #root: string;
  readonly #pool: string;
  readonly #folders: readonly string[];
  readonly #blobs = new DigestSet();
  readonly #keys = new Set<string>();

  constructor(root: string, folders: readonly string[]) {
    this.#root = root;
    this.#pool = vaultKeys.blobPool(root);
    this.#folders = folders;
  }

  #blobOf(key: string): string | undefined {
    return poolBlobDigestOf(this.#root, key);
  }

  add(key: string): void {
    const digest = this.#blobOf(key);
    if (digest !== undefined) this.#blobs.add(digest);
    else if (key.startsWith(this.#pool) || this.#folders.some((folder) => key.startsWith(folder)))
      this.#keys.add(key);
  }

  has(key: string): boolean {
    const digest = this.#blobOf(key);
    return digest !== undefined ? this.#blobs.has(digest) : this.#keys.has(key);
  }

  get size(): number {
    return this.#blobs.size + this.#keys.size;
  }
}

/**
 * Watches for backups that start while prune runs and could reuse any pool
 * blob (no base snapshot). A snapshot folder without a manifest counts as one
 * when it holds a key newer than the cutoff: discovery writes the cluster
 * files just before the manifest. Older manifest-less folders are leftovers.
 */
class AdopterWatch {
  readonly #vault: Vault;
  readonly #settled = new Set<string>();
  readonly #manifests: readonly SnapshotManifest[];
  readonly #cutoffMs: number;

  constructor(
    vault: Vault,
    settled: Iterable<string>,
    manifests: readonly SnapshotManifest[],
    cutoffMs: number,
  ) {
    this.#vault = vault;
    for (const id of settled) this.#settled.add(id);
    this.#manifests = manifests;
    this.#cutoffMs = cutoffMs;
  }

  /** The id of a backup that may adopt pool blobs, if one appeared. */
  async check(): Promise<string | undefined> {
    for (const id of await listSnapshotIds(this.#vault)) {
      if (this.#settled.has(id)) continue;
      const manifest = await readManifest(this.#vault, id);
      if (manifest === undefined) {
        const keys = await listKeys(this.#vault, vaultKeys.snapshot(rootOf(this.#vault), id));
        if (keys.some((k) => k.lastModified > this.#cutoffMs)) return id;
        this.#settled.add(id);
        continue;
      }
      if (
        manifest.status === SnapshotStatus.Running &&
        (await runningBackupOf(this.#vault, manifest, this.#manifests)).adoptsFromPool
      )
        return id;
      // A backup with a base only reuses what that base (kept, and marked) refers to.
      this.#settled.add(id);
    }
    return undefined;
  }
}

/**
 * Applies `policy`: deletes expired snapshots (manifest first, then their own
 * files and their run's working files), then sweeps pool blobs and objects
 * of deleted snapshots that no remaining snapshot (complete, failed or
 * running) refers to, except keys newer than the cutoff. A key referenced by
 * a remaining snapshot is never deleted; when an inventory cannot be read,
 * nothing is swept.
 */
export async function prune(
  vault: Vault,
  policy: RetentionPolicy,
  options: PruneOptions,
): Promise<PruneReport> {
  const dryRun = options.dryRun ?? false;
  const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
  const log = options.log;
  const root = rootOf(vault);
  const plan = await planPrune(vault, policy, options.now, options);
  const failedDeletes: PruneReport['failedDeletes'] = [];
  let deletedKeys = 0;
  let deletedBytes = 0;
  let poolBlobs = 0;
  const expiredIds = new Set(plan.expire.map((v) => v.id));
  const manifests = await listSnapshots(vault);
  const expired = manifests.filter((m) => expiredIds.has(m.id));
  const remaining = manifests.filter((m) => !expiredIds.has(m.id));
  const cutoffMs =
    Math.min(options.now.getTime(), ...plan.running.map((r) => Date.parse(r.startedAt))) - graceMs;
  const cutoff = new Date(cutoffMs).toISOString();

  // 1. Mark: every key a remaining snapshot refers to, and what running backups have recorded so far.
  const marked = new Marks(
    root,
    [...new Set([...expiredIds, ...plan.withoutManifest])].map((id) =>
      vaultKeys.snapshot(root, id),
    ),
  );
  let sweepSkipped: string | undefined;
  try {
    const dead = new Set(plan.dead);
    for (const manifest of remaining) {
      for await (const record of eachInventoryRecord(vault, manifest)) marked.add(record.targetKey);
      // A dead run's records keep nothing: what it copied is its partial data, reclaimed.
      if (manifest.status === SnapshotStatus.Running && !dead.has(manifest.id))
        for (const key of await recordedKeys(vault, manifest.runId)) marked.add(key);
    }
  } catch (err) {
    sweepSkipped = `cannot read what the remaining snapshots refer to (${messageOf(err)}); nothing was swept: fix or delete that snapshot and prune again`;
    log?.warn('prune skips garbage collection', { reason: sweepSkipped });
  }

  // 2. Expired snapshots: the manifest first, so no restore or backup picks the snapshot while its files go.
  for (const manifest of expired) {
    const result = await deleteSnapshot(vault, manifest, { dryRun, protect: marked });
    failedDeletes.push(...result.failed);
    deletedKeys += result.keys;
    deletedBytes += result.bytes;
    log?.info('prune deleted an expired snapshot', {
      snapshotId: manifest.id,
      reason: plan.expire.find((v) => v.id === manifest.id)?.reason,
    });
  }
  // Read once, before the sweep: what a delete does to the objects it names.
  const objectLock = await readObjectLock(vault);
  const report = (grace: { keys: number; bytes: number }, postponed?: string): PruneReport => ({
    dryRun,
    objectLock,
    plan,
    deletedSnapshots: expired.map((m) => m.id),
    deleted: { keys: deletedKeys, bytes: deletedBytes, poolBlobs },
    keptForGrace: { ...grace, cutoff },
    marked: marked.size,
    failedDeletes,
    ...(postponed === undefined ? {} : { poolSweepPostponed: postponed }),
    ...(sweepSkipped === undefined ? {} : { sweepSkipped }),
  });
  if (sweepSkipped !== undefined) return report({ keys: 0, bytes: 0 });

  // 3. What may be swept: pool blobs, and what is left in snapshot folders without a manifest.
  const watch = new AdopterWatch(
    vault,
    // Only what the plan judged is settled: a backup that started since is checked.
    [...plan.keep, ...plan.expire].map((v) => v.id),
    manifests,
    cutoffMs,
  );
  const adopter = plan.running.find((r) => r.adoptsFromPool);
  const postpone = (id: string | undefined) =>
    id === undefined
      ? undefined
      : `backup ${id} started during the prune with no snapshot to build on`;
  let poolSweepPostponed =
    adopter !== undefined
      ? `the running backup ${adopter.id} has no snapshot to build on and may reuse any pool blob`
      : postpone(await watch.check());
  const orphanFolders: string[] = [...expiredIds];
  for (const id of plan.withoutManifest) {
    // A manifest that appeared since the plan is a backup starting: its folder is its own.
    if ((await readManifest(vault, id)) === undefined) orphanFolders.push(id);
  }

  // 4. Sweep as the listings come (the pool of a large vault is millions of
  // keys): delete in batches of 1,000, checking before each batch of pool
  // blobs (the first too: listing the pool can take minutes) that no backup
  // started that could reuse one.
  let graceKeys = 0;
  let graceBytes = 0;
  let batch: Array<ListedKey & { pool: boolean }> = [];
  const deleteBatch = async () => {
    if (poolSweepPostponed === undefined && batch.some((k) => k.pool))
      poolSweepPostponed = postpone(await watch.check());
    const now = poolSweepPostponed === undefined ? batch : batch.filter((k) => !k.pool);
    batch = [];
    if (now.length === 0) return;
    const failed = dryRun
      ? []
      : await deleteKeys(
          vault,
          now.map((k) => k.key),
        );
    const failedSet = new Set(failed.map((f) => f.key));
    failedDeletes.push(...failed);
    for (const key of now) {
      if (failedSet.has(key.key)) continue;
      deletedKeys++;
      deletedBytes += key.size;
      if (key.pool) poolBlobs++;
    }
  };
  const sweep = async (candidate: ListedKey & { pool: boolean }) => {
    if (marked.has(candidate.key)) return;
    if (candidate.pool && poolSweepPostponed !== undefined) return;
    if (candidate.lastModified > cutoffMs) {
      graceKeys++;
      graceBytes += candidate.size;
      return;
    }
    batch.push(candidate);
    if (batch.length >= 1000) await deleteBatch();
  };
  for await (const key of eachListedKey(vault, `${root}blobs/`))
    await sweep({ ...key, pool: true });
  for (const id of orphanFolders) {
    for await (const key of eachListedKey(vault, vaultKeys.snapshot(root, id))) {
      // In a dry run the expired snapshots' own files are still there, and already counted above.
      if (dryRun && expiredIds.has(id) && !key.key.startsWith(vaultKeys.objects(root, id)))
        continue;
      await sweep({ ...key, pool: false });
    }
  }
  await deleteBatch();
  log?.info('prune swept the vault', {
    dryRun,
    deletedKeys,
    deletedBytes,
    poolBlobs,
    keptForGrace: graceKeys,
    cutoff,
    poolSweepPostponed,
  });
  return report({ keys: graceKeys, bytes: graceBytes }, poolSweepPostponed);
}
