/**
 * The copy worker: one message copies part of one shard. A backup shard is
 * listed page by page, and a restore part (one inventory part) copied page by
 * page, until the worker's deadline, then handed on with a continuation
 * message carrying the cursor and running totals. What was copied, skipped and
 * failed is written to the vault under the run (vault/runs.ts), so the message
 * stays small; a shard's end is its result in the run's `shards/` folder,
 * which the workflow's count step counts. A backup's blob shard lists nothing
 * until every link shard has listed its links (docs/consistency.md).
 *
 * Redelivery is safe: each continuation writes the same record file for its
 * sequence number, a duplicated continuation whose chain cuts its pages
 * elsewhere only repeats records that are collected once per key, and a
 * message for a shard that has already finished does nothing.
 */
import { type CopyContext, createCopyContext } from '../copy/context.ts';
import { copyEntries, type ListEntry } from '../copy/entries.ts';
import {
  addTotals,
  emptyTotals,
  type InventoryRecord,
  type ListedObject,
  type Shard,
  type Totals,
} from '../copy/model.ts';
import type { ShardRunResult } from '../copy/object-copy.ts';
import { genericCopyPolicy } from '../copy/plan.ts';
import { runShard } from '../copy/shard-runner.ts';
import { type TargetCheck, targetStateFor } from '../copy/target-state.ts';
import { CopyMode } from '../copy/transfer.ts';
import { InputError, inputErrorFrom, VaultError } from '../errors.ts';
import {
  type BlobLayout,
  blobLayoutOf,
  DISTRIBUTION_LAYOUT,
  layoutBase,
  QUAY_LAYOUT,
} from '../registry/blob-layout.ts';
import { registryCopyPolicy, selectiveRegistryPolicy } from '../registry/copy-policy.ts';
import { quayCopyPolicy } from '../registry/quay-copy-policy.ts';
import { backupKeyFor, SnapshotStatus, vaultRoot } from '../vault/format.ts';
import { InventoryLookup } from '../vault/inventory-lookup.ts';
import {
  type CopyJob,
  countListedShards,
  loadJob,
  loadShardResult,
  markShardListed,
  type ShardMessage,
  type ShardResult,
  saveShardResult,
  shardMessageSchema,
  writeRunRecords,
} from '../vault/runs.ts';
import { readCompleteManifest, readInventoryPart, readManifest } from '../vault/store.ts';
import type { WorkflowDeps } from './deps.ts';

/** Where shard messages go (the copy queue in AWS): a run's first messages, and continuations. */
export interface MessageSender {
  /** `delayMs`: deliver no sooner (SQS rounds it up to whole seconds, at most 900). */
  send(message: ShardMessage, options?: { delayMs?: number }): Promise<void>;
  /** Up to SEND_BATCH messages in one request (SQS SendMessageBatch); every one is sent or it throws. */
  sendBatch(messages: readonly ShardMessage[]): Promise<void>;
}

/** Messages in one SendMessageBatch request: SQS takes at most ten. */
export const SEND_BATCH = 10;

/** SQS's DelaySeconds for a delay in ms: whole seconds, at least 1, at most 900. */
export function sqsDelay(delayMs: number | undefined): { DelaySeconds?: number } {
  if (delayMs === undefined || delayMs <= 0) return {};
  return { DelaySeconds: Math.min(900, Math.max(1, Math.ceil(delayMs / 1000))) };
}

/** How long a blob shard waits before it looks again whether every link shard has listed. */
export const LINKS_LISTED_POLL_MS = 250;

/**
 * The link shards of a run this process works on: the ones it has listed
 * and the ones it is listing now. A blob shard of that run waits in process
 * for a link shard listing here rather than polling the vault: the local
 * runner works every message of a run in one process. A Lambda container
 * works one message at a time, so there blob shards poll the markers.
 */
interface LinksHere {
  readonly listed: Set<string>;
  readonly listing: Set<string>;
  readonly waiters: Array<() => void>;
}

/** By run id: the last few runs (tests run several in one process, some at once). */
const linksHere = new Map<string, LinksHere>();

function linksHereOf(runId: string): LinksHere {
  let here = linksHere.get(runId);
  if (here === undefined) {
    here = { listed: new Set(), listing: new Set(), waiters: [] };
    linksHere.set(runId, here);
    if (linksHere.size > 16) linksHere.delete(linksHere.keys().next().value ?? '');
  }
  return here;
}

function wake(here: LinksHere): void {
  for (const waiter of here.waiters.splice(0)) waiter();
}

/** A run ended its shard: it listed everything, or it aborted (a cursor then tells a retry where). */
const ended = (result: ShardRunResult) => result.next === undefined || result.aborted !== undefined;

/**
 * Remembers in this process that a link shard has listed, and writes its
 * marker in the vault for blob shards worked elsewhere, unless every message
 * of the run is worked here (the local runner's memory queue).
 */
async function markListed(
  deps: WorkflowDeps,
  runId: string,
  shardId: string,
  soleProcess: boolean,
): Promise<void> {
  if (!soleProcess) await markShardListed(deps.vault, runId, shardId);
  const here = linksHereOf(runId);
  here.listed.add(shardId);
  wake(here);
}

/**
 * True when every link shard of the backup has listed its links: at once for
 * those listed here, after waiting for those listing here, else one LIST of
 * the markers.
 */
async function linksListed(
  job: Extract<CopyJob, { purpose: 'backup' }>,
  deps: WorkflowDeps,
): Promise<boolean> {
  const ids = job.shards.filter((shard) => shard.kind === 'links').map((shard) => shard.id);
  if (ids.length === 0) return true;
  const here = linksHereOf(job.runId);
  while (ids.some((id) => here.listing.has(id) && !here.listed.has(id)))
    await new Promise<void>((resolve) => here.waiters.push(resolve));
  if (ids.every((id) => here.listed.has(id))) return true;
  return (await countListedShards(deps.vault, job.runId)) >= ids.length;
}

/**
 * True when the backup has ended (its manifest is no longer running): a blob
 * shard still waiting for link shards then stops instead of coming back.
 */
async function backupEnded(job: CopyJob, deps: WorkflowDeps): Promise<boolean> {
  const manifest = await readManifest(deps.vault, job.snapshotId);
  return manifest !== undefined && manifest.status !== SnapshotStatus.Running;
}

/**
 * The copy context of the run this process is working on: every message of
 * one run handled here shares it (one copy queue with its lanes, one memory
 * budget, one target state), as the shards of one `runPlan` do. A Lambda
 * container serves one message at a time; the local runner serves several.
 */
let shared: { runId: string; context: Promise<CopyContext> } | undefined;

function contextFor(job: CopyJob, deps: WorkflowDeps): Promise<CopyContext> {
  if (shared?.runId !== job.runId) shared = { runId: job.runId, context: openContext(job, deps) };
  const opened = shared.context;
  // A context that failed to open (a vault hiccup) is not kept: the next message tries again.
  opened.catch(() => {
    if (shared?.context === opened) shared = undefined;
  });
  return opened;
}

/** What the target holds, decided once per run by the one target-state function. */
function targetCheckOf(job: CopyJob, deps: WorkflowDeps): TargetCheck {
  if (job.purpose === 'restore') return { kind: job.targetMayHoldObjects ? 'list' : 'empty' };
  const previous = job.previousSnapshotId;
  if (previous !== undefined) {
    return {
      kind: 'inventory',
      open: async () => {
        const manifest = await readCompleteManifest(deps.vault, previous);
        if (manifest === undefined)
          throw new VaultError(
            `the previous snapshot ${previous} disappeared from the vault during the backup`,
          );
        return new InventoryLookup(deps.vault, manifest);
      },
    };
  }
  return { kind: job.targetEmpty === true ? 'empty' : 'list' };
}

/** The blob layout below a backup job's registry prefix. */
const backupLayoutOf = (job: CopyJob): BlobLayout =>
  job.purpose === 'backup' && job.registryLayout === 'quay' ? QUAY_LAYOUT : DISTRIBUTION_LAYOUT;

async function openContext(job: CopyJob, deps: WorkflowDeps): Promise<CopyContext> {
  const [sourceClient, targetClient, same] = await Promise.all([
    deps.s3(job.source),
    deps.s3(job.target),
    deps.sameAccess(job.source, job.target),
  ]);
  const root = vaultRoot(job.purpose === 'backup' ? job.target.prefix : job.source.prefix);
  const mapKey =
    job.purpose === 'backup'
      ? (key: string) =>
          backupKeyFor(
            root,
            job.snapshotId,
            job.registryPrefix,
            key.slice(job.source.prefix.length),
            backupLayoutOf(job).digestOf,
          )
      : (key: string) => key;
  return createCopyContext({
    // Server-side copies go through the target's client, which must be able to read the source.
    source: { location: job.source, client: same ? targetClient : sourceClient },
    target: { location: job.target, client: targetClient },
    mapKey,
    // A restore copies entries from its inventory: no shard of it is listed.
    policy:
      job.purpose === 'backup' && job.registryPrefix !== undefined
        ? job.registryLayout === 'quay'
          ? quayCopyPolicy
          : job.selection === undefined
            ? registryCopyPolicy
            : selectiveRegistryPolicy(job.selection)
        : genericCopyPolicy,
    targetState: await targetStateFor(
      targetClient,
      job.target.bucket,
      job.target.prefix,
      targetCheckOf(job, deps),
    ),
    concurrency: job.concurrency,
    transfer: { mode: same ? CopyMode.ServerSide : CopyMode.Stream },
  });
}

async function restoreEntries(
  job: Extract<CopyJob, { purpose: 'restore' }>,
  deps: WorkflowDeps,
  partIndex: number,
): Promise<ListEntry[]> {
  const manifest = await readManifest(deps.vault, job.snapshotId);
  if (manifest === undefined)
    throw new VaultError(
      `snapshot ${job.snapshotId} disappeared from the vault during the restore`,
    );
  const records = await readInventoryPart(deps.vault, manifest, partIndex);
  const layout = blobLayoutOf(manifest.layout);
  const registryBase =
    layout === undefined ? undefined : layoutBase(layout, manifest.source.rootDirectory);
  return records.map((record) => {
    const relative = record.key.slice(job.sourcePrefix.length);
    // A blob's digest: its key names its content.
    const digest =
      layout !== undefined && registryBase !== undefined && relative.startsWith(registryBase)
        ? layout.digestOf(relative.slice(registryBase.length))
        : undefined;
    return {
      object: { key: record.targetKey, size: record.size, etag: record.etag },
      targetKey: `${job.target.prefix}${relative}`,
      ...(digest === undefined ? {} : { digest }),
    };
  });
}

/**
 * Copies these source objects of a backup run again, with the run's own copy
 * context (its target, key mapping, policy and checks), as one list: the
 * retry of the objects a run recorded failed. What it copied and what failed
 * again come back with the records.
 */
export async function copyObjectsOfRun(
  job: Extract<CopyJob, { purpose: 'backup' }>,
  objects: readonly ListedObject[],
  deps: WorkflowDeps,
  id: string,
): Promise<{ records: InventoryRecord[]; result: ShardRunResult }> {
  const ctx = await contextFor(job, deps);
  const root = vaultRoot(job.target.prefix);
  const entries = objects.map((object) => {
    const relative = object.key.slice(job.source.prefix.length);
    const { digestOf } = backupLayoutOf(job);
    const digest =
      job.registryPrefix !== undefined && relative.startsWith(job.registryPrefix)
        ? digestOf(relative.slice(job.registryPrefix.length))
        : undefined;
    return {
      object,
      targetKey: backupKeyFor(root, job.snapshotId, job.registryPrefix, relative, digestOf),
      ...(digest === undefined ? {} : { digest }),
    };
  });
  const records: InventoryRecord[] = [];
  const result = await copyEntries(ctx, id, entries, { onRecord: (r) => records.push(r) });
  return { records, result };
}

/**
 * Copies one shard of a backup run again from its start, in this process and
 * with no deadline: the retry of a shard that aborted (its unlisted keys are
 * unknown) or never ended (its run died).
 */
export async function copyShardAgain(
  job: Extract<CopyJob, { purpose: 'backup' }>,
  shard: Shard,
  deps: WorkflowDeps,
): Promise<{ records: InventoryRecord[]; result: ShardRunResult }> {
  const ctx = await contextFor(job, deps);
  const records: InventoryRecord[] = [];
  const result = await runShard(ctx, shard, { onRecord: (r) => records.push(r) });
  return { records, result };
}

/** Handles one shard message; throws only when the message cannot be worked on at all. */
export async function handleShardMessage(
  raw: unknown,
  deps: WorkflowDeps,
  transport: {
    sender: MessageSender;
    deadline: number;
    /** This message's running totals after each page (the local runner's progress). */
    onProgress?: (totals: Totals) => void;
    /**
     * Present when the message came from the local runner's memory queue,
     * which works every message of the run in this process: a link shard's
     * listed marker is then kept in memory only. On its first delivery (the
     * memory queue delivers each message once; it puts back only a failed
     * one) its shard cannot have finished, so the vault is not asked. SQS
     * delivers at least once, so its messages are always looked up.
     */
    local?: { readonly firstDelivery: boolean };
  },
): Promise<Totals> {
  const parsed = shardMessageSchema.safeParse(raw);
  if (!parsed.success) {
    throw inputErrorFrom(parsed.error, 'copy worker message', '(message)');
  }
  const message = parsed.data;
  if (
    transport.local?.firstDelivery !== true &&
    (await loadShardResult(deps.vault, message.runId, message.shardId)) !== undefined
  ) {
    // A duplicate delivery of a finished shard (SQS at least once, or a re-run enqueue).
    deps.log.info('shard already finished; message dropped', {
      runId: message.runId,
      shardId: message.shardId,
      seq: message.seq,
    });
    return emptyTotals();
  }
  const job = await loadJob(deps.vault, message.runId);
  const ctx = await contextFor(job, deps);
  const records: InventoryRecord[] = [];
  const onRecord = (record: InventoryRecord) => records.push(record);
  let result: ShardRunResult;
  let onListed: (() => void) | undefined;
  const resume = {
    ...(message.cursor === undefined ? {} : { cursor: message.cursor }),
    deadline: transport.deadline,
    onRecord,
    onListed: () => onListed?.(),
    ...(transport.onProgress === undefined ? {} : { onProgress: transport.onProgress }),
  };
  let marking: Promise<void> | undefined;
  if (job.purpose === 'backup') {
    const shard = job.shards.find((candidate) => candidate.id === message.shardId);
    if (shard === undefined)
      throw new InputError(`run ${job.runId} has no shard ${message.shardId}`);
    if (shard.kind === 'links') {
      // Said as soon as the last phase is listed: the blob shards start while its copies trail.
      onListed = () => {
        marking ??= markListed(deps, job.runId, shard.id, transport.local !== undefined);
      };
    } else if (message.cursor === undefined && !(await linksListed(job, deps))) {
      // Blobs are listed only after every link is listed (docs/consistency.md): look again soon.
      if (await backupEnded(job, deps)) return emptyTotals();
      await transport.sender.send(message, { delayMs: LINKS_LISTED_POLL_MS });
      return emptyTotals();
    }
    const here = shard.kind === 'links' ? linksHereOf(job.runId) : undefined;
    here?.listing.add(shard.id);
    try {
      result = await runShard(ctx, shard, resume);
      // A link shard that ended without listing everything (aborted, with a cursor
      // for a retry) still frees the blob shards: the run fails on its result, and
      // finalize says why. Only a shard that hands on has not ended.
      if (shard.kind === 'links' && ended(result))
        marking ??= markListed(deps, job.runId, shard.id, transport.local !== undefined);
      await marking;
    } finally {
      // Blob shards waiting here on a shard that handed on or failed look at the vault instead.
      if (here !== undefined) {
        here.listing.delete(shard.id);
        wake(here);
      }
    }
  } else {
    // A restore part streams its blobs through the worker (the vault and the
    // registry's bucket have different keys), so it too hands on at the deadline.
    const part = job.parts.find((candidate) => candidate.id === message.shardId);
    if (part === undefined)
      throw new InputError(`run ${job.runId} has no restore part ${message.shardId}`);
    const entries = await restoreEntries(job, deps, part.partIndex);
    result = await copyEntries(ctx, part.id, entries, resume);
  }
  const totals = addTotals(message.totals ?? emptyTotals(), result.totals);
  const last = ended(result);
  // The last message's file also carries the shard's result: finalize reads one file per message.
  const shardResult: ShardResult | undefined = last
    ? {
        shardId: message.shardId,
        totals,
        messages: message.seq + 1,
        ...(result.aborted === undefined ? {} : { aborted: result.aborted }),
      }
    : undefined;
  await writeRunRecords(
    deps.vault,
    job.runId,
    message.shardId,
    message.seq,
    {
      records,
      failures: result.failures,
      uploadIds: result.uploadIds,
      ...(shardResult === undefined ? {} : { result: shardResult }),
    },
    // The memory queue's run is finalized in this process, which then reads them back.
    { keep: transport.local !== undefined },
  );
  if (shardResult === undefined) {
    await transport.sender.send({ ...message, seq: message.seq + 1, cursor: result.next, totals });
    return result.totals;
  }
  await saveShardResult(deps.vault, job.runId, shardResult);
  if (result.aborted === undefined)
    deps.log.info('shard finished', { runId: job.runId, shardId: message.shardId, ...totals });
  else
    deps.log.warn('shard stopped early', {
      runId: job.runId,
      shardId: message.shardId,
      aborted: result.aborted,
    });
  return result.totals;
}

/**
 * Ends a shard whose message the workers gave up on (it reached the
 * dead-letter queue): its result says it was aborted and why, so the
 * workflow's count sees it end and finalize names it. A link shard also
 * frees the blob shards waiting for it, as a link shard that aborts itself
 * does. A shard that has a result already, or a run with no job, is left as
 * it is; false then.
 */
export async function recordShardGaveUp(
  message: ShardMessage,
  reason: string,
  deps: WorkflowDeps,
): Promise<boolean> {
  if ((await loadShardResult(deps.vault, message.runId, message.shardId)) !== undefined)
    return false;
  let job: CopyJob;
  try {
    job = await loadJob(deps.vault, message.runId);
  } catch (err) {
    if (err instanceof VaultError) return false;
    throw err;
  }
  const result: ShardResult = {
    shardId: message.shardId,
    totals: message.totals ?? emptyTotals(),
    messages: message.seq + 1,
    aborted: reason,
  };
  await writeRunRecords(deps.vault, job.runId, message.shardId, message.seq, {
    records: [],
    failures: [],
    uploadIds: [],
    result,
  });
  await saveShardResult(deps.vault, job.runId, result);
  if (
    job.purpose === 'backup' &&
    job.shards.some((shard) => shard.id === message.shardId && shard.kind === 'links')
  )
    await markListed(deps, job.runId, message.shardId, false);
  return true;
}
