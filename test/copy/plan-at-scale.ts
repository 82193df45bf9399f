/**
 * Plans a synthetic registry (synthetic-registry.ts) in a process of its own,
 * so that the test can cap its heap (`--max-old-space-size`), then finds the
 * shard of every key. Prints what it measured as one line of JSON.
 *
 *   tsx test/copy/plan-at-scale.ts '<SyntheticRegistryOptions and target as JSON>'
 */
import type { Lister } from '../../functions/commons/copy/policy.ts';
import { registryCopyPolicy } from '../../functions/commons/registry/copy-policy.ts';
import { shardFinder } from './coverage.ts';
import { SyntheticRegistry, type SyntheticRegistryOptions } from './synthetic-registry.ts';

export interface ScalePlanInput extends SyntheticRegistryOptions {
  readonly targetObjectsPerShard: number;
  readonly countPages?: number;
}

export interface ScalePlanOutput {
  readonly objects: number;
  readonly blobs: number;
  readonly links: number;
  readonly estimatedObjects: number;
  readonly linkShards: number;
  readonly blobShards: number;
  readonly otherShards: number;
  readonly requests: number;
  /** The shard ids as a backup's plan output carries them, in bytes of JSON. */
  readonly idBytes: number;
  readonly planSeconds: number;
  /** The largest heap in use while planning, MiB: live objects after a collection every 32 LISTs (with --expose-gc). */
  readonly peakHeapMiB: number;
  /** The process's peak resident set, planning and finding included, MiB. */
  readonly peakRssMiB: number;
  /** Keys no shard, or more than one shard, lists. */
  readonly unheld: number;
  /** Keys each shard lists, by kind: the largest and the mean. */
  readonly held: Record<'links' | 'blobs', { readonly max: number; readonly mean: number }>;
  /** Shards holding more than `target` x 1.1, with what they hold and their estimate. */
  readonly over: ReadonlyArray<{ id: string; held: number; estimated: number }>;
}

const MIB = 1024 * 1024;

async function main(): Promise<void> {
  const input = JSON.parse(process.argv[2] ?? '{}') as ScalePlanInput;
  const registry = new SyntheticRegistry(input);
  // The heap in use after a full collection, every 32 pages (run with --expose-gc).
  const gc = (globalThis as { gc?: () => void }).gc;
  let peakHeap = 0;
  const sample = () => {
    gc?.();
    peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed);
  };
  const list: Lister = {
    async page(prefix, options) {
      if (registry.requests % 32 === 0) sample();
      return registry.page(prefix, options);
    },
  };
  const started = performance.now();
  const split = await registryCopyPolicy.split(list, input.root ?? '', {
    targetObjectsPerShard: input.targetObjectsPerShard,
    ...(input.countPages === undefined ? {} : { countPages: input.countPages }),
  });
  const planSeconds = (performance.now() - started) / 1000;
  sample();

  const shards = [...split.linkShards, ...split.dataShards];
  const find = shardFinder(shards);
  const held = new Float64Array(shards.length);
  let unheld = 0;
  for (const key of registry.keys()) {
    const index = find(key);
    if (index < 0) unheld++;
    else held[index] = (held[index] ?? 0) + 1;
  }
  const byKind = (kind: 'links' | 'blobs') => {
    const counts = shards.flatMap((shard, i) => (shard.kind === kind ? [held[i] ?? 0] : []));
    const sum = counts.reduce((a, b) => a + b, 0);
    return { max: Math.max(0, ...counts), mean: Math.round(sum / Math.max(1, counts.length)) };
  };
  const output: ScalePlanOutput = {
    objects: registry.size,
    blobs: registry.blobs,
    links: registry.links,
    estimatedObjects: split.estimatedObjects,
    linkShards: split.linkShards.length,
    blobShards: split.dataShards.filter((shard) => shard.kind === 'blobs').length,
    otherShards: split.dataShards.filter((shard) => shard.kind === 'objects').length,
    requests: registry.requests,
    idBytes: JSON.stringify({
      linkShardIds: split.linkShards.map((shard) => shard.id),
      dataShardIds: split.dataShards.map((shard) => shard.id),
    }).length,
    planSeconds: Math.round(planSeconds * 100) / 100,
    peakHeapMiB: Math.round(peakHeap / MIB),
    peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    unheld,
    held: { links: byKind('links'), blobs: byKind('blobs') },
    over: shards.flatMap((shard, i) =>
      (held[i] ?? 0) > input.targetObjectsPerShard * 1.1
        ? [{ id: shard.id, held: held[i] ?? 0, estimated: shard.estimatedObjects ?? 0 }]
        : [],
    ),
  };
  process.stdout.write(`${JSON.stringify(output)}\n`);
}

await main();
