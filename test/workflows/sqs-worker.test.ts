/**
 * The SQS side of the copy workers against a real queue with a real redrive
 * policy on the sandbox server: what is dropped at once, what SQS gets back
 * to deliver again, how a message that reached the dead-letter queue ends its
 * shard in the vault as aborted (so the workflow's count sees it end), and
 * that a shard delivered twice is counted once.
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
import {
  type CopyJob,
  collectRunRecords,
  countListedShards,
  listFinishedShards,
  loadShardResult,
  type ShardMessage,
  saveJob,
  shardMessageSchema,
} from '../../functions/commons/vault/runs.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import {
  failDeadLetters,
  processShardRecords,
  type QueueRecord,
} from '../../functions/commons/workflows/sqs-worker.ts';
import type { MessageSender } from '../../functions/commons/workflows/worker.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, listAll, locationOn, putObjects } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let sqs: SQSClient;
let deps: WorkflowDeps & { close(): void };

/** The copy queue as calls recorded in order (these shards need no continuation). */
function recordingSender(): MessageSender & { sent: ShardMessage[] } {
  const sent: ShardMessage[] = [];
  return {
    sent,
    async send(message) {
      sent.push(message);
    },
    async sendBatch(messages) {
      sent.push(...messages);
    },
  };
}

const transport = (sender: MessageSender = recordingSender()) => ({
  sender,
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

type BackupJob = Extract<CopyJob, { purpose: 'backup' }>;

/** A backup job of one plain bucket: by default its objects split into two key ranges. */
async function plannedRun(
  runId: string,
  source: string,
  shards: BackupJob['shards'] = [
    { id: 'objects-0000', kind: 'objects', prefix: '', endBefore: 'k-0010' },
    { id: 'objects-0001', kind: 'objects', prefix: '', startAt: 'k-0010' },
  ],
): Promise<BackupJob> {
  const job: BackupJob = {
    purpose: 'backup',
    runId,
    snapshotId: runId.replace(/^backup-/, ''),
    source: locationOn(s3, source, '', 'vault'),
    target: locationOn(s3, 'vault', '', 'vault'),
    concurrency: 4,
    shards,
  };
  await saveJob(deps.vault, job);
  return job;
}

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-sqs-worker' });
  client = clientFor(s3);
  await createBucket(client, 'vault');
  await createBucket(client, 'source');
  await putObjects(
    client,
    'source',
    Array.from({ length: 20 }, (_, i) => ({
      key: `k-${String(i).padStart(4, '0')}`,
      body: `object ${i}`,
    })),
  );
  sqs = new SQSClient({ endpoint: s3.endpoint, region: s3.region, credentials: s3.credentials });
  deps = createLocalDeps({
    vault: { location: locationOn(s3, 'vault', '', 'vault'), credentials: s3.credentials },
  });
}, 60_000);

afterAll(async () => {
  deps?.close();
  sqs?.destroy();
  client?.destroy();
  await s3?.stop();
});

describe('copy worker messages from SQS', () => {
  it('drops a message that can never work instead of leaving it to SQS', async () => {
    // Prepare
    const records: QueueRecord[] = [
      { messageId: 'm-1', body: JSON.stringify({ runId: 5 }) },
      { messageId: 'm-2', body: 'not json' },
    ];

    // Act
    const result = await processShardRecords(records, deps, transport());

    // Assess
    expect(result.batchItemFailures).toEqual([]);
    expect(result.totals.listed).toBe(0);
  });

  it('refuses a message with a field regvault never writes, naming it, instead of dropping the field', () => {
    // Prepare
    const message = { runId: 'backup-x', shardId: 'links-0001', seq: 0, shardID: 'blobs-0002' };

    // Act
    const parsed = shardMessageSchema.safeParse(message);

    // Assess
    expect(parsed.success).toBe(false);
    expect(JSON.stringify(parsed.error?.issues)).toContain('shardID');
  });

  it('leaves a message that may work later to SQS, and drops its dead letter when the run has no job', async () => {
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
    const message = { runId: 'backup-never-planned', shardId: 'blobs-0003', seq: 2 };
    await sqs.send(
      new SendMessageCommand({ QueueUrl: queue, MessageBody: JSON.stringify(message) }),
    );

    // Act: work the queue as the event source mapping does until SQS gives up.
    const retried: string[] = [];
    const deadline = Date.now() + 30_000;
    let deadLettered: Message[] = [];
    while (deadLettered.length === 0 && Date.now() < deadline) {
      const batch = (await receive(queue, 1)).map(asRecord);
      if (batch.length > 0) {
        const result = await processShardRecords(batch, deps, transport());
        retried.push(...result.batchItemFailures.map((f) => f.itemIdentifier));
        for (const record of batch) {
          if (!retried.includes(record.messageId))
            throw new Error(`record ${record.messageId} was not left for a retry`);
        }
      }
      deadLettered = await receive(dlq, 0);
    }
    const ended = await failDeadLetters(deadLettered.map(asRecord), deps);
    for (const m of deadLettered)
      await sqs.send(new DeleteMessageCommand({ QueueUrl: dlq, ReceiptHandle: m.ReceiptHandle }));

    // Assess: nothing is written for a run that has no job.
    expect(retried.length).toBe(2);
    expect(deadLettered).toHaveLength(1);
    expect(ended).toBe(0);
    expect(
      [...(await listAll(client, 'vault')).keys()].filter((key) => key.includes('never')),
    ).toEqual([]);
  });

  it('ends the shard of a dead letter as aborted, with why, so the count sees it end', async () => {
    // Prepare: a planned run whose second shard's message the workers gave up on.
    const job = await plannedRun('backup-dead-letter', 'source');
    const body = JSON.stringify({ runId: job.runId, shardId: 'objects-0001', seq: 2 });

    // Act
    const ended = await failDeadLetters([{ messageId: 'm-dl', body, receiveCount: 5 }], deps);
    const again = await failDeadLetters([{ messageId: 'm-dl', body, receiveCount: 5 }], deps);

    // Assess
    expect(ended).toBe(1);
    expect(again).toBe(0);
    const finished = await listFinishedShards(deps.vault, job.runId);
    expect([...finished.finished]).toEqual(['objects-0001']);
    expect(finished.aborted).toEqual(['objects-0001']);
    const result = await loadShardResult(deps.vault, job.runId, 'objects-0001');
    expect(result?.aborted).toContain(
      `failed on ${job.runId} shard objects-0001 (message 2) 5 times`,
    );
    const collected = await collectRunRecords(deps.vault, job.runId);
    expect(collected.results.map((r) => r.shardId)).toEqual(['objects-0001']);
  });

  it('frees the blob shards when a link shard is dead-lettered, as a link shard that aborts does', async () => {
    // Prepare
    const job = await plannedRun('backup-dead-links', 'source', [
      { id: 'links-0000', kind: 'links', prefix: '' },
    ]);
    const body = JSON.stringify({ runId: job.runId, shardId: 'links-0000', seq: 0 });

    // Act
    await failDeadLetters([{ messageId: 'm-links', body, receiveCount: 5 }], deps);

    // Assess
    expect(await countListedShards(deps.vault, job.runId)).toBe(1);
  });

  it('counts a shard delivered twice once: the same totals as one delivery', async () => {
    // Prepare: the same plan twice, one delivered once and one delivered twice at once.
    const once = await plannedRun('backup-once', 'source');
    const twice = await plannedRun('backup-twice', 'source');
    const first = (job: BackupJob, shardId: string) => ({
      messageId: `${job.runId}-${shardId}`,
      body: JSON.stringify({ runId: job.runId, shardId, seq: 0 }),
    });

    // Act
    for (const shard of once.shards)
      await processShardRecords([first(once, shard.id)], deps, transport());
    for (const shard of twice.shards)
      await Promise.all([
        processShardRecords([first(twice, shard.id)], deps, transport()),
        processShardRecords([first(twice, shard.id)], deps, transport()),
      ]);
    // And once more after the shards have ended (a re-run enqueue, a late redelivery).
    const late = await processShardRecords([first(twice, 'objects-0000')], deps, transport());

    // Assess
    const totalsOf = async (runId: string) => {
      const run = await collectRunRecords(deps.vault, runId);
      return {
        records: run.records.length,
        results: run.results
          .map((r) => ({ shardId: r.shardId, listed: r.totals.listed, failed: r.totals.failed }))
          .sort((a, b) => a.shardId.localeCompare(b.shardId)),
      };
    };
    const single = await totalsOf(once.runId);
    expect(single.records).toBe(20);
    expect(single.results).toEqual([
      { shardId: 'objects-0000', listed: 10, failed: 0 },
      { shardId: 'objects-0001', listed: 10, failed: 0 },
    ]);
    expect(await totalsOf(twice.runId)).toEqual(single);
    expect([...(await listFinishedShards(deps.vault, twice.runId)).finished].sort()).toEqual([
      'objects-0000',
      'objects-0001',
    ]);
    expect(late.totals.listed).toBe(0);
  });
});
