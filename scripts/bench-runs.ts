/**
 * The runs of scripts/bench.ts in the order it makes them, each printing its
 * lines as it goes: the data set, the headline backup through the CLI and
 * the workflow (w), regvault's copy engine against the floor in alternating
 * rounds (a, b, a'), rclone and aws s3 sync on the same data (c, d), a 1%
 * change and then no change (e, f, g), and streaming across endpoints with
 * rclone in alternating rounds (h). Later runs start from what earlier ones
 * left: the last full copy's bucket and inventory, rclone's target.
 */
import { join } from 'node:path';
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { type DatasetObject, writeDataset } from '../sandbox/dataset.ts';
import type { S3ServerHandle } from '../sandbox/s3/index.ts';
import { benchObjects, changeOnePercent, dropBucket, listKeys, putLarge } from './bench-data.ts';
import {
  awsSync,
  type CopyRunResult,
  countedCopy,
  location,
  rcloneSync,
  regvaultCopy,
  sdkFloor,
} from './bench-peers.ts';
import { median, pairedRatio, total } from './bench-stats.ts';
import { benchWorkflow, type WorkflowBench } from './bench-workflow.ts';

/** The servers, clients and settings every run shares. */
export interface BenchContext {
  /** The server every peer copies within, and the streaming runs' target. */
  readonly server: S3ServerHandle;
  /** The streaming runs' source. */
  readonly remote: S3ServerHandle;
  readonly client: S3Client;
  readonly remoteClient: S3Client;
  /** Copies in flight, the same for every peer. */
  readonly concurrency: number;
  /** A scratch directory for inventories and peer config. */
  readonly dir: string;
  /** The bucket holding the data set. */
  readonly source: string;
  readonly log: (line: string) => void;
}

/** The inventory the last full copy writes, which the 1% run starts from. */
const fullInventory = (ctx: BenchContext) => join(ctx.dir, 'inventory-1.jsonl');

/**
 * Whether the first peer of a pair runs first in this round: the order swaps
 * every round, so neither always runs right after the other's clean-up, and
 * the last round runs the first peer first (the regvault bucket that the
 * incremental runs start from is the last thing written).
 */
export function firstPeerFirst(round: number, rounds: number): boolean {
  return (rounds - round) % 2 === 0;
}

/** Runs the two peers of a round in the order firstPeerFirst gives; the results come back as `[a, b]`. */
export async function inTurn<A, B>(
  round: number,
  rounds: number,
  a: () => Promise<A>,
  b: () => Promise<B>,
): Promise<[A, B]> {
  if (firstPeerFirst(round, rounds)) {
    const first = await a();
    return [first, await b()];
  }
  const first = await b();
  return [await a(), first];
}

/** The data set of `count` objects, written into the source bucket. */
export async function sourceData(ctx: BenchContext, count: number): Promise<DatasetObject[]> {
  const objects = benchObjects(count);
  ctx.log(
    `bench: ${objects.length} objects, ${(objects.reduce((a, o) => a + o.size, 0) / 1024 ** 2).toFixed(1)} MiB, concurrency ${ctx.concurrency}`,
  );
  await ctx.client.send(new CreateBucketCommand({ Bucket: ctx.source }));
  await writeDataset(ctx.client, ctx.source, objects, ctx.concurrency);
  return objects;
}

/**
 * (w) The headline: a backup as users run it, through the CLI and the
 * workflow (scripts/bench-workflow.ts), paired with the floor for `rounds`.
 */
export async function workflowRuns(
  ctx: BenchContext,
  rounds: number,
  runFloor: () => Promise<number>,
  objects: number,
): Promise<WorkflowBench> {
  const workflow = await benchWorkflow({
    server: ctx.server,
    client: ctx.client,
    source: ctx.source,
    objects,
    concurrency: ctx.concurrency,
    rounds,
    runFloor,
    runRclone: async () => {
      await ctx.client.send(new CreateBucketCommand({ Bucket: 'wf-rclone' }));
      const seconds = await rcloneSync(
        ctx.server,
        ctx.server,
        ctx.source,
        'wf-rclone',
        ctx.concurrency,
      );
      await dropBucket(ctx.client, 'wf-rclone');
      return seconds;
    },
    inTurn,
    log: ctx.log,
  });
  ctx.log(
    `(w) regvault backup through the CLI and the workflow: ${median(workflow.rounds).toFixed(2)} s (median of ${rounds}), ${pairedRatio(workflow.rounds, workflow.floorRounds).toFixed(3)} of the floor, ${pairedRatio(workflow.rounds, workflow.rcloneRounds).toFixed(3)} of rclone; ${workflow.requestsPerObjectFull.toFixed(4)} req/object, unchanged ${workflow.requestsPerObjectUnchanged.toFixed(4)}; CLI start ${workflow.cliStartupMs.toFixed(0)} ms; progress every ${workflow.progressMaxGapSeconds.toFixed(2)} s at most`,
  );
  return workflow;
}

export interface EngineRuns {
  readonly floorRuns: number[];
  readonly fullRuns: number[];
  readonly floorSeconds: number;
  readonly fullSeconds: number;
  readonly floorSdkSeconds: number;
  /** The last round's full copy, whose bucket and inventory the 1% run starts from. */
  readonly full: CopyRunResult;
  readonly fullRequests: Record<string, number>;
}

/**
 * (a) the floor and (b) regvault's full copy, alternating for `rounds` rounds,
 * each on a fresh target bucket, so that one slow round (the machine's speed
 * varies by a third) cannot decide the ratio; then (a') the floor's copies
 * through the SDK once. The last regvault round's bucket (rv-dst) and
 * inventory are kept.
 */
export async function engineRuns(
  ctx: BenchContext,
  rounds: number,
  runFloor: () => Promise<number>,
  objects: number,
): Promise<EngineRuns> {
  const { server, client, log } = ctx;
  const floorRuns: number[] = [];
  const fullRuns: number[] = [];
  let full!: CopyRunResult;
  let fullRequests: Record<string, number> = {};
  for (let round = 1; round <= rounds; round += 1) {
    const runFull = async () => {
      await client.send(new CreateBucketCommand({ Bucket: 'rv-dst' }));
      ({ result: full, requests: fullRequests } = await countedCopy(server, {
        source: location(server, ctx.source),
        target: location(server, 'rv-dst'),
        layout: 'registry',
        // As the CLI does: one LIST finds the target empty, so pages skip the target listing.
        targetCheck: 'auto',
        writeInventory: fullInventory(ctx),
        concurrency: ctx.concurrency,
      }));
      if (!full.ok)
        throw new Error(`regvault's full copy failed: ${JSON.stringify(full.failures)}`);
      if (round < rounds) await dropBucket(client, 'rv-dst');
      return full.seconds;
    };
    const [floorRound, fullRound] = await inTurn(round, rounds, runFloor, runFull);
    floorRuns.push(floorRound);
    fullRuns.push(fullRound);
    log(
      `round ${round}: (a) floor ${floorRound.toFixed(2)} s, (b) regvault full ${fullRound.toFixed(2)} s (${firstPeerFirst(round, rounds) ? 'floor' : 'regvault'} first), ratio ${(fullRound / floorRound).toFixed(3)}`,
    );
  }
  const floorSeconds = median(floorRuns);
  const fullSeconds = median(fullRuns);
  const floorSdkSeconds = await sdkFloor(client, ctx.source, ctx.concurrency);
  log(
    `(a) floor (SDK)     ${floorSdkSeconds.toFixed(2)} s  (the same copies through S3Client.send)`,
  );
  log(`(a) floor           ${floorSeconds.toFixed(2)} s  (median of ${rounds})`);
  log(
    `(b) regvault full   ${fullSeconds.toFixed(2)} s  (median of ${rounds})  ${(total(fullRequests) / objects).toFixed(4)} req/object ${JSON.stringify(fullRequests)}`,
  );
  return { floorRuns, fullRuns, floorSeconds, fullSeconds, floorSdkSeconds, full, fullRequests };
}

/** (c) rclone sync, server-side copy, into rclone-dst (kept for the 1% run); (d) aws s3 sync. */
export async function syncRuns(ctx: BenchContext): Promise<{ rclone: number; aws: number }> {
  const { server, client, log } = ctx;
  await client.send(new CreateBucketCommand({ Bucket: 'rclone-dst' }));
  const rclone = await rcloneSync(server, server, ctx.source, 'rclone-dst', ctx.concurrency);
  log(`(c) rclone sync     ${rclone.toFixed(2)} s`);
  await client.send(new CreateBucketCommand({ Bucket: 'aws-dst' }));
  const aws = await awsSync(server, ctx.source, 'aws-dst', ctx.concurrency, ctx.dir);
  await dropBucket(client, 'aws-dst');
  log(`(d) aws s3 sync     ${aws.toFixed(2)} s`);
  return { rclone, aws };
}

export interface ChangeRuns {
  readonly changed: Set<string>;
  readonly incremental: CopyRunResult;
  readonly incrementalRequests: Record<string, number>;
  readonly mismatched: number;
  readonly rcloneIncremental: number;
  /** Objects in the source after the change. */
  readonly sourceObjects: number;
  readonly unchangedRequests: Record<string, number>;
  readonly unchangedNonList: number;
}

/**
 * (e) 1% of the source changed: regvault with the full copy's inventory;
 * (f) rclone on the same change; (g) regvault again with nothing changed.
 * Drops rv-dst and rclone-dst after.
 */
export async function changeRuns(
  ctx: BenchContext,
  objects: readonly DatasetObject[],
): Promise<ChangeRuns> {
  const { server, client, log } = ctx;
  const changed = await changeOnePercent(
    client,
    ctx.source,
    objects,
    Math.max(2, Math.round(objects.length / 100)),
    4242,
  );
  const incrementalInventory = join(ctx.dir, 'inventory-2.jsonl');
  const againstInventory = (previousInventory: string) => ({
    source: location(server, ctx.source),
    target: location(server, 'rv-dst'),
    layout: 'registry',
    targetCheck: 'inventory',
    previousInventory,
    concurrency: ctx.concurrency,
  });
  const { result: incremental, requests: incrementalRequests } = await countedCopy(server, {
    ...againstInventory(fullInventory(ctx)),
    writeInventory: incrementalInventory,
  });
  const sourceNow = await listKeys(client, ctx.source);
  const targetNow = new Map((await listKeys(client, 'rv-dst')).map((k) => [k.key, k.etag]));
  const mismatched = sourceNow.filter((k) => targetNow.get(k.key) !== k.etag).length;
  log(
    `(e) regvault 1%     ${incremental.seconds.toFixed(2)} s  copied ${incremental.totals.copied} of ${changed.size} changed, ${mismatched} mismatched after`,
  );
  const rcloneIncremental = await rcloneSync(
    server,
    server,
    ctx.source,
    'rclone-dst',
    ctx.concurrency,
  );
  log(`(f) rclone 1%       ${rcloneIncremental.toFixed(2)} s`);
  await dropBucket(client, 'rclone-dst');

  const { result: unchanged, requests: unchangedRequests } = await countedCopy(
    server,
    againstInventory(incrementalInventory),
  );
  const unchangedNonList = total(unchangedRequests) - (unchangedRequests['ListObjectsV2'] ?? 0);
  log(
    `(g) regvault again  ${unchanged.seconds.toFixed(2)} s  ${(total(unchangedRequests) / sourceNow.length).toFixed(4)} req/object, ${unchangedNonList} other than LIST, copied ${unchanged.totals.copied}`,
  );
  await dropBucket(client, 'rv-dst');
  return {
    changed,
    incremental,
    incrementalRequests,
    mismatched,
    rcloneIncremental,
    sourceObjects: sourceNow.length,
    unchangedRequests,
    unchangedNonList,
  };
}

export interface StreamRuns {
  readonly streamRuns: number[];
  readonly streamRcloneRuns: number[];
  readonly streamPeakRssMiB: number;
}

/**
 * (h) Across endpoints: the remote server to this one, streaming, on up to
 * 2,000 objects of the set and one large object of `bigMib`. Both peers are
 * bound by the receiving server's CPU here, so one run each would compare
 * noise: they alternate for `rounds` rounds and the median of the rounds'
 * ratios counts.
 */
export async function streamRuns(
  ctx: BenchContext,
  objects: readonly DatasetObject[],
  bigMib: number,
  rounds: number,
): Promise<StreamRuns> {
  const { server, remote, client, remoteClient, concurrency, log } = ctx;
  await remoteClient.send(new CreateBucketCommand({ Bucket: 'stream-src' }));
  await writeDataset(remoteClient, 'stream-src', objects.slice(0, 2000), concurrency);
  if (bigMib > 0)
    await putLarge(remoteClient, 'stream-src', 'big/one-large-object', bigMib * 1024 ** 2);
  const regvaultRuns: number[] = [];
  const rcloneRuns: number[] = [];
  let peakRssMiB = 0;
  for (let round = 1; round <= rounds; round += 1) {
    const runRegvault = async () => {
      await client.send(new CreateBucketCommand({ Bucket: 'stream-rv' }));
      const stream = await regvaultCopy(remote, server, {
        source: location(remote, 'stream-src', 'remote'),
        target: location(server, 'stream-rv'),
        layout: 'generic',
        targetCheck: 'empty',
        concurrency,
      });
      await dropBucket(client, 'stream-rv');
      peakRssMiB = Math.max(peakRssMiB, stream.maxRssMiB);
      return stream;
    };
    const runRclone = async () => {
      await client.send(new CreateBucketCommand({ Bucket: 'stream-rclone' }));
      const seconds = await rcloneSync(remote, server, 'stream-src', 'stream-rclone', concurrency);
      await dropBucket(client, 'stream-rclone');
      return seconds;
    };
    const [stream, rcloneSeconds] = await inTurn(round, rounds, runRegvault, runRclone);
    regvaultRuns.push(stream.seconds);
    rcloneRuns.push(rcloneSeconds);
    log(
      `round ${round}: (h) stream regvault ${stream.seconds.toFixed(2)} s (peak RSS ${stream.maxRssMiB.toFixed(0)} MiB), rclone ${rcloneSeconds.toFixed(2)} s (${firstPeerFirst(round, rounds) ? 'regvault' : 'rclone'} first)`,
    );
  }
  return { streamRuns: regvaultRuns, streamRcloneRuns: rcloneRuns, streamPeakRssMiB: peakRssMiB };
}
