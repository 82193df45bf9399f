/**
 * A registry backup plans with the last backup's shards when they still fit:
 * counting every repository's links and every fan-out's blobs costs about
 * one LIST per 800 objects (26 of an unchanged 20,000-object re-run's 112
 * requests), and a registry mostly grows at the edges of shards it already
 * has. The shards are ranges that cover each tree from its start to its end,
 * so a key written since falls in one of them whatever it is; what reuse can
 * get wrong is only the balance. That is checked one backup late: the last
 * snapshot's counts against the estimates its shards were planned with, so a
 * source that grew (or shrank) far since a plan is split afresh by the backup
 * after the one that copied the change.
 */
import type { ShardKind } from '../copy/model.ts';
import type { Lister, PreviousPlan, Split, SplitOptions } from '../copy/policy.ts';
import { registryPrefix } from './layout.ts';
import { otherShards } from './plan-gaps.ts';

/** How far a kind's objects may have grown or shrunk against the plan's estimates before it is split afresh. */
export const REUSE_DRIFT = 2;

type PlannedShard = PreviousPlan['shards'][number];

/** True when `shards` are one contiguous cover of a tree: first from its start, each next from the last's end, the last to its end. */
function coversTree(shards: readonly PlannedShard[]): boolean {
  if (shards.length === 0) return false;
  return shards.every((shard, index) => {
    const next = shards[index + 1];
    const opens = index === 0 ? shard.startAt === undefined : true;
    const closes =
      next === undefined ? shard.endBefore === undefined : shard.endBefore === next.startAt;
    return opens && closes && (next === undefined || next.prefix === shard.prefix);
  });
}

/**
 * The previous shards of one kind with their estimates scaled to what the
 * snapshot held, or undefined when they do not cover their tree or the
 * count moved more than `REUSE_DRIFT` either way, or their number is far
 * from what `target` would cut now (the shard size was changed).
 */
function rescaled(
  shards: readonly PlannedShard[],
  held: number | undefined,
  target: number,
): PlannedShard[] | undefined {
  if (!coversTree(shards) || held === undefined) return undefined;
  const estimated = shards.reduce((sum, shard) => sum + (shard.estimatedObjects ?? 0), 0);
  if (estimated === 0 || held === 0) return undefined;
  const factor = held / estimated;
  if (factor > REUSE_DRIFT || factor < 1 / REUSE_DRIFT) return undefined;
  const ideal = Math.max(1, Math.ceil(held / target));
  if (shards.length > ideal * REUSE_DRIFT + 1 || shards.length * REUSE_DRIFT < ideal)
    return undefined;
  return shards.map((shard) => ({
    ...shard,
    estimatedObjects: Math.round((shard.estimatedObjects ?? 0) * factor),
  }));
}

/**
 * The registry policy's `reuse`: the previous link and blob shards under the
 * same root, rescaled, and the ranges around the trees checked again (three
 * LISTs) since a key there has no shard unless one is made for it.
 */
export async function reuseRegistryPlan(
  list: Lister,
  root: string,
  previous: PreviousPlan,
  options: SplitOptions,
): Promise<Split | undefined> {
  const base = registryPrefix(root);
  const ofKind = (kind: ShardKind) =>
    previous.shards.filter((shard) => shard.kind === kind && shard.registryPrefix === base);
  const target = options.targetObjectsPerShard;
  const linkShards = rescaled(ofKind('links'), previous.objects.links, target);
  const blobShards = rescaled(ofKind('blobs'), previous.objects.blobs, target);
  if (linkShards === undefined || blobShards === undefined) return undefined;
  const dataShards = [
    ...blobShards,
    ...(await otherShards(list, base, [`${base}blobs/sha256/`, `${base}repositories/`])),
  ];
  const estimatedObjects = [...linkShards, ...dataShards].reduce(
    (sum, shard) => sum + (shard.estimatedObjects ?? 0),
    0,
  );
  return { linkShards, dataShards, estimatedObjects };
}
