/**
 * The SQS side of the copy workers, shared by the Lambda handler and the local
 * poller: a batch of records in, the ids of records to retry out (SQS
 * `reportBatchItemFailures`), and the dead-letter path that ends the shard of
 * a message the workers gave up on, in the vault, with the reason.
 */
import { addTotals, emptyTotals, type Totals } from '../copy/model.ts';
import { InputError, messageOf } from '../errors.ts';
import { shardMessageSchema } from '../vault/runs.ts';
import type { WorkflowDeps } from './deps.ts';
import { handleShardMessage, type MessageSender, recordShardGaveUp } from './worker.ts';

export interface QueueRecord {
  readonly messageId: string;
  readonly body: string;
  /** How often SQS has delivered it (the `ApproximateReceiveCount` attribute). */
  readonly receiveCount?: number;
}

export interface BatchResult {
  readonly batchItemFailures: Array<{ itemIdentifier: string }>;
  /** What this batch copied, for the progress metrics. */
  readonly totals: Totals;
}

/**
 * Works through a batch. A message that can never work (bad JSON, no copy
 * message, a shard its run does not have) is dropped with a warning: the
 * workflow only sends shards of the run's job, so no run waits for it. Any
 * other error leaves the record for SQS to deliver again, and after the
 * queue's receive limit, for the dead-letter path.
 */
export async function processShardRecords(
  records: readonly QueueRecord[],
  deps: WorkflowDeps,
  transport: {
    sender: MessageSender;
    deadline: number;
    onProgress?: (totals: Totals) => void;
    local?: { readonly firstDelivery: boolean };
  },
): Promise<BatchResult> {
  const failures: Array<{ itemIdentifier: string }> = [];
  let totals = emptyTotals();
  for (const record of records) {
    try {
      let body: unknown;
      try {
        body = JSON.parse(record.body);
      } catch (err) {
        throw new InputError(`a copy worker message is not JSON: ${messageOf(err)}`);
      }
      totals = addTotals(totals, await handleShardMessage(body, deps, transport));
    } catch (err) {
      if (err instanceof InputError) {
        deps.log.warn('copy worker message can never work; dropped', {
          messageId: record.messageId,
          error: messageOf(err),
        });
        continue;
      }
      deps.log.warn('copy worker message failed; SQS will deliver it again', {
        messageId: record.messageId,
        receiveCount: record.receiveCount,
        error: messageOf(err),
      });
      failures.push({ itemIdentifier: record.messageId });
    }
  }
  return { batchItemFailures: failures, totals };
}

function copyMessageOf(body: string) {
  try {
    const parsed = shardMessageSchema.safeParse(JSON.parse(body));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Messages that reached the dead-letter queue: each one's shard ends as
 * aborted with why, so the workflow's count sees it end and the snapshot (or
 * the restore) fails naming it. Returns how many shards it ended; a body that
 * is no copy message, a run with no job or a shard that already ended is
 * only logged.
 */
export async function failDeadLetters(
  records: readonly QueueRecord[],
  deps: WorkflowDeps,
): Promise<number> {
  let ended = 0;
  for (const record of records) {
    const message = copyMessageOf(record.body);
    if (message === undefined) {
      deps.log.warn('a dead letter that is not a copy message; dropped', {
        messageId: record.messageId,
      });
      continue;
    }
    const reason = `the copy worker failed on ${message.runId} shard ${message.shardId} (message ${message.seq}) ${record.receiveCount ?? 'several'} times and the message went to the dead-letter queue; see the worker's logs`;
    if (await recordShardGaveUp(message, reason, deps)) ended++;
    else
      deps.log.warn('a dead letter for a shard that has ended or a run with no job; dropped', {
        messageId: record.messageId,
        runId: message.runId,
        shardId: message.shardId,
      });
  }
  return ended;
}
