/**
 * The SQS side of the copy workers against a real queue with a real redrive
 * policy on the sandbox server: what fails its task at once, what SQS gets
 * back to deliver again, and how a message that reached the dead-letter
 * queue fails the waiting task with the shard it was for.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import {
  CreateQueueCommand,
  DeleteMessageCommand,
  GetQueueAttributesCommand,
  type Message,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createLocalDeps } from '../../functions/commons/local/deps.ts';
import { vaultKeys } from '../../functions/commons/vault/format.ts';
import { putJson, rootOf } from '../../functions/commons/vault/store.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import {
  failDeadLetters,
  processShardRecords,
  type QueueRecord,
} from '../../functions/commons/workflows/sqs-worker.ts';
import type { ShardOutcome, TaskCallbacks } from '../../functions/commons/workflows/worker.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, locationOn } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let sqs: SQSClient;
let deps: WorkflowDeps & { close(): void };

/** The Step Functions callbacks as calls recorded in order (no Step Functions runs here). */
function recordingCallbacks() {
  const calls: Array<{ kind: string; token: string; error?: string; cause?: string }> = [];
  const callbacks: TaskCallbacks = {
    async success(token: string, _output: ShardOutcome) {
      calls.push({ kind: 'success', token });
    },
    async failure(token, error, cause) {
      calls.push({ kind: 'failure', token, error, cause });
    },
    async heartbeat(token) {
      calls.push({ kind: 'heartbeat', token });
      return true;
    },
  };
  return { calls, callbacks };
}

const transport = (callbacks: TaskCallbacks) => ({
  callbacks,
  sender: {
    async send() {
      throw new Error('no continuation is expected in these tests');
    },
  },
  deadline: Date.now() + 60_000,
});

const asRecord = (message: Message): QueueRecord => ({
  messageId: message.MessageId ?? '',
  body: message.Body ?? '',
  receiveCount: Number(message.Attributes?.ApproximateReceiveCount ?? 0),
});

async function receive(queueUrl: string, waitSeconds = 2): Promise<Message[]> {
  const answer = await sqs.send(
    new ReceiveMessageCommand({
      QueueUrl: queueUrl,
      MaxNumberOfMessages: 10,
      WaitTimeSeconds: waitSeconds,
      MessageSystemAttributeNames: ['ApproximateReceiveCount'],
    }),
  );
  return answer.Messages ?? [];
}

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-sqs-worker' });
  client = clientFor(s3);
  await createBucket(client, 'vault');
  sqs = new SQSClient({ endpoint: s3.endpoint, region: s3.region, credentials: s3.credentials });
  deps = createLocalDeps({
    vault: { location: locationOn(s3, 'vault', '', 'vault'), credentials: s3.credentials },
  });
});

afterAll(async () => {
  deps?.close();
  sqs?.destroy();
  client?.destroy();
  await s3?.stop();
});

describe('copy worker messages from SQS', () => {
  it('fails the waiting task at once for a message that can never work, naming the fields', async () => {
    // Prepare
    const { calls, callbacks } = recordingCallbacks();
    const records: QueueRecord[] = [
      { messageId: 'm-1', body: JSON.stringify({ taskToken: 'token-bad', runId: 5 }) },
    ];
    // Act
    const result = await processShardRecords(records, deps, transport(callbacks));
    // Assess
    expect(result.batchItemFailures).toEqual([]);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ kind: 'failure', token: 'token-bad', error: 'InputError' });
    expect(calls[0]?.cause).toContain('runId');
    expect(calls[0]?.cause).toContain('shardId');
  });

  it('leaves a message that may work later to SQS, and fails its task once SQS dead-letters it', async () => {
    // Prepare: a queue that dead-letters after two receives, as the stack's does after five.
    const dlq = (await sqs.send(new CreateQueueCommand({ QueueName: 'copy-dlq' }))).QueueUrl ?? '';
    const dlqArn =
      (
        await sqs.send(
          new GetQueueAttributesCommand({ QueueUrl: dlq, AttributeNames: ['QueueArn'] }),
        )
      ).Attributes?.['QueueArn'] ?? '';
    const queue =
      (
        await sqs.send(
          new CreateQueueCommand({
            QueueName: 'copy',
            Attributes: {
              VisibilityTimeout: '1',
              RedrivePolicy: JSON.stringify({ deadLetterTargetArn: dlqArn, maxReceiveCount: 2 }),
            },
          }),
        )
      ).QueueUrl ?? '';
    // No job was ever written for this run: a worker cannot tell that from a slow vault.
    const message = {
      runId: 'backup-never-planned',
      shardId: 'blobs-0003',
      taskToken: 'token-7',
      seq: 2,
    };
    await sqs.send(
      new SendMessageCommand({ QueueUrl: queue, MessageBody: JSON.stringify(message) }),
    );
    const { calls, callbacks } = recordingCallbacks();
    // Act: work the queue as the event source mapping does until SQS gives up.
    const retried: string[] = [];
    const deadline = Date.now() + 30_000;
    let deadLettered: Message[] = [];
    while (deadLettered.length === 0 && Date.now() < deadline) {
      const batch = (await receive(queue, 1)).map(asRecord);
      if (batch.length > 0) {
        const result = await processShardRecords(batch, deps, transport(callbacks));
        retried.push(...result.batchItemFailures.map((f) => f.itemIdentifier));
        for (const record of batch) {
          if (!retried.includes(record.messageId))
            throw new Error(`record ${record.messageId} was not left for a retry`);
        }
      }
      deadLettered = await receive(dlq, 0);
    }
    const failed = await failDeadLetters(deadLettered.map(asRecord), callbacks);
    for (const m of deadLettered)
      await sqs.send(new DeleteMessageCommand({ QueueUrl: dlq, ReceiptHandle: m.ReceiptHandle }));
    // Assess
    expect(retried.length).toBe(2);
    expect(deadLettered).toHaveLength(1);
    expect(failed).toBe(1);
    expect(calls).toEqual([
      {
        kind: 'failure',
        token: 'token-7',
        error: 'CopyWorkerGaveUp',
        cause: expect.stringContaining('backup-never-planned shard blobs-0003 (message 2)'),
      },
    ]);
  });

  it('answers a duplicate of a finished shard with the same success and copies nothing', async () => {
    // Prepare: the shard's result, as its last worker wrote it.
    const totals = {
      listed: 3,
      copied: 3,
      skipped: 0,
      failed: 0,
      bytesListed: 30,
      bytesCopied: 30,
      uploadsSkipped: 0,
      pages: 1,
    };
    await putJson(
      deps.vault,
      vaultKeys.runShardResult(rootOf(deps.vault), 'backup-done', 'links-0000'),
      { shardId: 'links-0000', totals, messages: 1 },
    );
    const { calls, callbacks } = recordingCallbacks();
    const body = JSON.stringify({
      runId: 'backup-done',
      shardId: 'links-0000',
      taskToken: 'token-dup',
      seq: 0,
    });
    // Act
    const result = await processShardRecords(
      [{ messageId: 'm-dup', body }],
      deps,
      transport(callbacks),
    );
    // Assess
    expect(result.batchItemFailures).toEqual([]);
    expect(result.totals.copied).toBe(0);
    expect(calls).toEqual([{ kind: 'success', token: 'token-dup' }]);
  });
});
