/**
 * The SQS side of the copy workers, shared by the Lambda handler and the local
 * poller: a batch of records in, the ids of records to retry out (SQS
 * `reportBatchItemFailures`), and the dead-letter path that fails the waiting
 * task with the reason.
 */
import { addTotals, emptyTotals, type Totals } from '../copy/model.ts';
import { InputError, messageOf } from '../errors.ts';
import { shardMessageSchema } from '../vault/runs.ts';
import type { WorkflowDeps } from './deps.ts';
import { handleShardMessage, type MessageSender, type TaskCallbacks } from './worker.ts';

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

function tokenOf(body: string): string | undefined {
  try {
    const parsed = JSON.parse(body) as { taskToken?: unknown };
    return typeof parsed.taskToken === 'string' ? parsed.taskToken : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Works through a batch. A message that can never work (bad JSON, unknown
 * run or shard) fails its task at once instead of bouncing to the DLQ; any
 * other error leaves the record for SQS to deliver again.
 */
export async function processShardRecords(
  records: readonly QueueRecord[],
  deps: WorkflowDeps,
  transport: {
    callbacks: TaskCallbacks;
    sender: MessageSender;
    deadline: number;
    onProgress?: (totals: Totals) => void;
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
      const token = tokenOf(record.body);
      if (err instanceof InputError && token !== undefined) {
        await transport.callbacks.failure(token, err.name, err.message);
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

/** A message that reached the dead-letter queue: fail the waiting task with why. */
export async function failDeadLetters(
  records: readonly QueueRecord[],
  callbacks: TaskCallbacks,
): Promise<number> {
  let failed = 0;
  for (const record of records) {
    const token = tokenOf(record.body);
    if (token === undefined) continue;
    // The token was readable, so the task is failed either way; the shard is named only
    // when the whole message is one regvault wrote.
    const parsed = shardMessageSchema.safeParse(JSON.parse(record.body));
    const shard = parsed.success
      ? `${parsed.data.runId} shard ${parsed.data.shardId} (message ${parsed.data.seq})`
      : '(a message that is not a copy message)';
    await callbacks.failure(
      token,
      'CopyWorkerGaveUp',
      `the copy worker failed on ${shard} ${record.receiveCount ?? 'several'} times and the message went to the dead-letter queue; see the worker's logs`,
    );
    failed++;
  }
  return failed;
}
