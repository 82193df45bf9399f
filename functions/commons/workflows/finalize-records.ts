/**
 * Finalize's pass over what a backup's copy workers wrote, shard by shard:
 * each shard's record files are read, its records go into the inventory
 * (written part by part as they come) and into the catalog and reference
 * check, and only counts and a sample of failures stay. Finalize so holds a
 * few shards' records at a time, not the snapshot's: at 10 million objects
 * the records alone took gigabytes.
 */
import type { Failure } from '../copy/model.ts';
import { blobLayoutOf, DISTRIBUTION_LAYOUT, layoutBase } from '../registry/blob-layout.ts';
import type { SnapshotCatalog, SnapshotManifest } from '../vault/format.ts';
import { InventoryWriter } from '../vault/inventory.ts';
import {
  listRunRecordFiles,
  readShardRecords,
  type ShardRecords,
  type ShardResult,
} from '../vault/runs.ts';
import type { BackupState } from './backup.ts';
import { RegistryRecords } from './catalog.ts';
import { DatabaseRecords } from './catalog-database.ts';
import type { WorkflowDeps } from './deps.ts';
import { databaseTagsOf } from './registry-state.ts';

/** Shards whose record files are read ahead of the one being added. */
const SHARDS_READ_AHEAD = 8;

/** Failures kept to show (the manifest's sample); the rest are counted. */
export const FAILURE_SAMPLE = 100;

/** What finalize learns from a run's record files. */
export interface RunTally {
  readonly inventory: SnapshotManifest['inventory'];
  readonly catalog: SnapshotCatalog;
  /** The reference check (a registry's only). */
  readonly references?: { ok: boolean; detail: string };
  /** Tag links read because their tag moved. */
  readonly tagLinksRead: number;
  readonly objects: number;
  readonly bytes: number;
  readonly verified: Record<'server-sha256' | 'stream-sha256' | 'unverified', number>;
  readonly results: ShardResult[];
  readonly failures: { count: number; sample: Failure[]; digestMismatches: number; gone: number };
  readonly uploadIds: string[];
}

/**
 * The order shards are added in: every link shard first (the reference check
 * needs every link's reference before the blobs), then the others by id,
 * which is their key order. `linkShardIds` are the plan's (when finalize
 * runs without a plan, link shards are known by their id).
 */
function shardOrder(
  linkShardIds: readonly string[],
  ids: Iterable<string>,
): { order: string[]; links: Set<string> } {
  const planned = new Set(linkShardIds);
  const all = [...new Set([...linkShardIds, ...ids])];
  const links = new Set(all.filter((id) => planned.has(id) || id.startsWith('links-')));
  return {
    order: [...[...links].sort(), ...all.filter((id) => !links.has(id)).sort()],
    links,
  };
}

/** Reads the record files of every shard of `state.runId` and tallies them. */
export async function tallyRun(
  deps: WorkflowDeps,
  state: BackupState,
  plan: { readonly linkShardIds: readonly string[]; readonly dataShardIds: readonly string[] },
): Promise<RunTally> {
  const layout = blobLayoutOf(state.layout);
  const registryBase =
    layout === undefined
      ? undefined
      : `${state.source.prefix}${layoutBase(layout, state.rootDirectory)}`;
  const files = await listRunRecordFiles(deps.vault, state.runId);
  const { order, links } = shardOrder(plan.linkShardIds, [...plan.dataShardIds, ...files.keys()]);
  const writer = new InventoryWriter(deps.vault, state.snapshotId, registryBase, {
    layout: layout ?? DISTRIBUTION_LAYOUT,
  });
  // Distribution's catalog comes from its links; Quay's from its database's tags.
  const registry = state.layout === 'registry' ? new RegistryRecords(deps, state) : undefined;
  const database =
    state.layout === 'quay'
      ? new DatabaseRecords(await databaseTagsOf(state.runId, deps), registryBase ?? '')
      : undefined;
  let objects = 0;
  let bytes = 0;
  const verified = { 'server-sha256': 0, 'stream-sha256': 0, unverified: 0 };
  const results: ShardResult[] = [];
  const failures = { count: 0, sample: [] as Failure[], digestMismatches: 0, gone: 0 };
  const uploads = new Set<string>();

  const add = async (id: string, shard: ShardRecords) => {
    if (shard.result !== undefined) results.push(shard.result);
    for (const failure of shard.failures) {
      failures.count++;
      if (failures.sample.length < FAILURE_SAMPLE) failures.sample.push(failure);
      if (failure.code === 'DigestMismatch') failures.digestMismatches++;
      if (failure.sourceGone === true) failures.gone++;
    }
    for (const upload of shard.uploadIds) uploads.add(upload);
    for (const record of shard.records) {
      objects++;
      bytes += record.size;
      if (record.verified !== undefined) verified[record.verified]++;
    }
    await writer.add(shard.records);
    database?.addBlobs(shard.records);
    if (registry === undefined) return;
    if (links.has(id)) await registry.addLinkShard(shard.records);
    else registry.addBlobs(shard.records);
  };

  try {
    // Reads run ahead in a window; shards are added strictly in order.
    const reads: Array<Promise<ShardRecords>> = [];
    const readShard = (index: number) => {
      const id = order[index];
      if (id === undefined || reads[index] !== undefined) return;
      const shardFiles = files.get(id) ?? [];
      reads[index] =
        shardFiles.length === 0
          ? Promise.resolve({ records: [], failures: [], uploadIds: [] })
          : readShardRecords(deps.vault, shardFiles);
      // Awaited in order below; a failure here must not go unhandled meanwhile.
      reads[index].catch(() => undefined);
    };
    for (let index = 0; index < order.length; index++) {
      for (let ahead = index; ahead <= index + SHARDS_READ_AHEAD; ahead++) readShard(ahead);
      const shard = await (reads[index] as Promise<ShardRecords>);
      delete reads[index];
      await add(order[index] ?? '', shard);
    }
  } catch (err) {
    await writer.abort();
    throw err;
  }
  const inventory = await writer.finish();
  const { catalog, references } = registry?.finish() ??
    database?.finish() ?? { catalog: { repositories: [] } };
  return {
    inventory,
    catalog,
    ...(references === undefined ? {} : { references }),
    tagLinksRead: registry?.reads ?? 0,
    objects,
    bytes,
    verified,
    results,
    failures,
    uploadIds: [...uploads].sort(),
  };
}
