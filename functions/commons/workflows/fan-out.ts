/**
 * How both workflows fan shards out to the copy workers, the same on AWS and
 * on one machine: one step enqueues a message per shard of the run's job
 * (SendMessageBatch, ten a request), then the state machine waits and counts
 * the shards' results in the vault until every one has ended. The execution's
 * history grows with the time the copy takes (one wait and one count per
 * poll), never with the number of shards, and how many shards copy at once is
 * the workers' concurrency (the event source's, or the local pool's), not the
 * state machine's.
 */
import PQueue from 'p-queue';
import { RunLeaseLostError } from '../vault/run-lease.ts';
import {
  type CopyJob,
  firstSendOfSavedJob,
  listFinishedShards,
  loadJob,
  loadShardResult,
} from '../vault/runs.ts';
import { renewBackupLease } from './backup.ts';
import type { WorkflowDeps } from './deps.ts';
import { type MessageSender, SEND_BATCH } from './worker.ts';

/**
 * Which of the job's shards a fan-out covers: a backup's every shard (link
 * shards first; its blob shards wait for them in the worker), or a restore's
 * blob parts, then the rest (links and plain objects), blobs before links.
 */
export const SHARD_SETS = ['all', 'blobs', 'rest'] as const;
export type ShardSet = (typeof SHARD_SETS)[number];

/** Send requests in flight at once while enqueueing. */
const SENDS_IN_FLIGHT = 8;

/** The ids of a job's shards in `which`, in the job's order. */
function shardIdsOf(job: CopyJob, which: ShardSet): string[] {
  const shards = job.purpose === 'backup' ? job.shards : job.parts;
  return shards
    .filter((shard) => which === 'all' || (which === 'blobs') === (shard.kind === 'blobs'))
    .map((shard) => shard.id);
}

export interface EnqueueEvent {
  readonly runId: string;
  readonly which: ShardSet;
  /** How long the shards may take, from now (the stack's `copyTimeoutHours`). */
  readonly timeoutSeconds: number;
}

export interface EnqueueOutput {
  /** Shards the count waits for. */
  readonly total: number;
  /** Messages sent: shards that had not ended already. */
  readonly enqueued: number;
  /** When the count gives up waiting (ISO time). */
  readonly deadline: string;
}

/**
 * Sends the first message of every shard in `which` that has not ended
 * (one LIST of the run's results first), ten to a request. A retried step
 * sends again what has not ended; a shard sent twice is safe (docs/consistency.md).
 */
export async function enqueueShards(
  event: EnqueueEvent,
  deps: WorkflowDeps,
  queue: MessageSender,
): Promise<EnqueueOutput> {
  const job = await loadJob(deps.vault, event.runId);
  const ids = shardIdsOf(job, event.which);
  // A retried step sends only what has not ended; the first send of a job planned here lists nothing.
  const { finished } = firstSendOfSavedJob(job.runId)
    ? { finished: new Set<string>() }
    : await listFinishedShards(deps.vault, job.runId);
  const pending = ids.filter((id) => !finished.has(id));
  const sends = new PQueue({ concurrency: SENDS_IN_FLIGHT });
  const batches: Array<Promise<void>> = [];
  for (let at = 0; at < pending.length; at += SEND_BATCH) {
    const batch = pending
      .slice(at, at + SEND_BATCH)
      .map((shardId) => ({ runId: job.runId, shardId, seq: 0 }));
    batches.push(sends.add(() => queue.sendBatch(batch)));
  }
  await Promise.all(batches);
  deps.log.info('shards enqueued', {
    runId: job.runId,
    which: event.which,
    total: ids.length,
    enqueued: pending.length,
  });
  return {
    total: ids.length,
    enqueued: pending.length,
    deadline: new Date(deps.now().getTime() + event.timeoutSeconds * 1000).toISOString(),
  };
}

export interface CountEvent {
  readonly runId: string;
  readonly which: ShardSet;
  readonly deadline: string;
}

export interface ShardCount {
  readonly total: number;
  /** Shards that have ended, aborted ones included. */
  readonly finished: number;
  /** Shards that stopped early (a worker's abort, or the dead-letter path). */
  readonly aborted: number;
  /** The first aborted shard and why, or "" (for the restore's failure message). */
  readonly firstAborted: string;
  /** Past the deadline with shards still running. */
  readonly overdue: boolean;
}

/**
 * How many of the shards in `which` have ended: one LIST of the run's
 * results per 1,000 shards, and one GET when one aborted (to say why).
 */
export async function countFinishedShards(
  event: CountEvent,
  deps: WorkflowDeps,
): Promise<ShardCount> {
  const job = await loadJob(deps.vault, event.runId);
  // A backup's count renews its run lease: on AWS the steps are all that keep it alive.
  // A lease lost to a run that saw this one dead is finalize's to act on (it fails then).
  if (job.purpose === 'backup')
    await renewBackupLease(job, deps, { unlessFresh: true }).catch((err: unknown) => {
      if (!(err instanceof RunLeaseLostError)) throw err;
      deps.log.warn('the run lost its lease', { runId: job.runId, error: err.message });
    });
  const ids = shardIdsOf(job, event.which);
  const { finished, aborted } = await listFinishedShards(deps.vault, job.runId);
  const wanted = new Set(ids);
  const abortedHere = aborted.filter((id) => wanted.has(id));
  const first = abortedHere[0];
  const why = first === undefined ? undefined : await loadShardResult(deps.vault, job.runId, first);
  const done = ids.filter((id) => finished.has(id)).length;
  return {
    total: ids.length,
    finished: done,
    aborted: abortedHere.length,
    firstAborted: first === undefined ? '' : `${first}: ${why?.aborted ?? 'stopped early'}`,
    overdue: done < ids.length && deps.now().getTime() > Date.parse(event.deadline),
  };
}
