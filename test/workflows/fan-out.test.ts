/**
 * The fan-out: the enqueue step sends every shard at once and the workflow
 * waits and counts until every shard has ended. A run's history (its
 * execution events) does not grow with the number of shards, unlike one Map
 * iteration per shard; the count ends the loop on the shards' results alone,
 * a dead-lettered shard included; past its deadline a backup fails, and a
 * restore part that stopped early sends the restore to its failure path.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { StateMachine } from 'aws-local-stepfunctions';
import { createLocalDeps } from '../../functions/commons/local/deps.ts';
import { runBackupLocally, substitute } from '../../functions/commons/local/runner.ts';
import { listFinishedShards, saveJob } from '../../functions/commons/vault/runs.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import { countFinishedShards, enqueueShards } from '../../functions/commons/workflows/fan-out.ts';
import { failDeadLetters } from '../../functions/commons/workflows/sqs-worker.ts';
import type { MessageSender } from '../../functions/commons/workflows/worker.ts';
import { PROJECT_ROOT } from '../../infra/house-function.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { clientFor, createBucket, locationOn, putObjects } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;
let deps: WorkflowDeps & { close(): void };

/** `count` small objects in a new bucket, keys spread over the key space. */
async function bucketOf(name: string, count: number): Promise<void> {
  await createBucket(client, name);
  await putObjects(
    client,
    name,
    Array.from({ length: count }, (_, i) => ({
      key: `data/${String(i).padStart(5, '0')}`,
      body: `${i}`,
    })),
    32,
  );
}

/** A local backup of `bucket`, with its shard count and its execution's events. */
async function backUp(bucket: string) {
  let shards = 0;
  const result = await runBackupLocally(
    {
      source: { bucket, region: s3.region, endpoint: s3.endpoint, forcePathStyle: true },
      targetObjectsPerShard: 100,
    },
    {
      deps,
      workers: 8,
      // The count looks once the workers have run dry: the loop's length is then the
      // same for any number of shards (with a shorter poll it grows with elapsed time).
      shardPollMs: 120_000,
      onStateDone: (state, output) => {
        if (state !== 'PlanShards') return;
        const plan = output as { linkShardIds: string[]; dataShardIds: string[] };
        shards = plan.linkShardIds.length + plan.dataShardIds.length;
      },
    },
  );
  return { result, shards };
}

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-fan-out' });
  client = clientFor(s3);
  await createBucket(client, 'vault');
  await bucketOf('few-shards', 500);
  await bucketOf('many-shards', 5_000);
  deps = createLocalDeps({
    vault: { location: locationOn(s3, 'vault', '', 'vault'), credentials: s3.credentials },
  });
}, 120_000);

afterAll(async () => {
  deps?.close();
  client?.destroy();
  await s3?.stop();
});

describe('fanning shards out to the copy workers', () => {
  it('runs a backup of ten times the shards in an execution of the same length', async () => {
    // Act
    const few = await backUp('few-shards');
    const many = await backUp('many-shards');

    // Assess: both complete, one with about ten times the shards of the other ...
    expect([few.result.status, many.result.status]).toEqual(['SUCCEEDED', 'SUCCEEDED']);
    expect((many.result.output as { objects: number }).objects).toBe(5_000);
    expect(few.shards).toBeGreaterThanOrEqual(3);
    expect(many.shards).toBeGreaterThanOrEqual(few.shards * 5);
    // ... and the same history, give or take one more wait and count (six events);
    // one Map iteration per shard would have added at least four events per shard.
    expect(Math.abs(many.result.events - few.result.events)).toBeLessThanOrEqual(6);
    expect(many.result.events).toBeLessThan(few.result.events + 4 * (many.shards - few.shards));
  }, 180_000);

  it('fails the backup past its deadline with how far the shards got, and marks the snapshot failed', async () => {
    // Prepare: no local worker takes a message, and the shards have one second.
    const input = {
      source: {
        bucket: 'few-shards',
        region: s3.region,
        endpoint: s3.endpoint,
        forcePathStyle: true,
      },
      targetObjectsPerShard: 100,
    };

    // Act
    const result = await runBackupLocally(input, {
      deps,
      workers: 0,
      copyTimeoutSeconds: 1,
      shardPollMs: 300,
    });

    // Assess
    expect(result.status).toBe('FAILED');
    expect(result.error).toBe('BackupFailed');
    expect(result.cause).toMatch(
      /FAILED: shards: 0 of (\d+) shards finished; workflow: CopyTimedOut: 0 of \1 shards ended by /,
    );
    expect(result.messages).toBe(0);
  }, 60_000);

  it('sends a restore whose blob part stopped early to its failure path, naming the part, before any link part', async () => {
    // Prepare: the restore definition with every task stubbed, a count that sees one part aborted.
    const text = readFileSync(join(PROJECT_ROOT, 'state-machines', 'restore.asl.json'), 'utf8');
    const called: string[] = [];
    let failure: unknown;
    const stub =
      (name: string, output: unknown) =>
      async (input: unknown): Promise<unknown> => {
        called.push(name);
        if (name === 'DescribeRestoreFailure') failure = (input as { error?: unknown }).error;
        return output;
      };
    const count = {
      total: 3,
      finished: 1,
      aborted: 1,
      overdue: false,
      firstAborted: 'p00001: AccessDenied',
    };
    const machine = new StateMachine(JSON.parse(substitute(text)), {
      validationOptions: { noValidate: true },
    });

    // Act
    const run = machine.run(
      {},
      {
        overrides: {
          taskResourceLocalHandlers: {
            ResolveSnapshot: stub('ResolveSnapshot', { runId: 'restore-1' }),
            CheckClusterTargetAndSnapshot: stub('CheckClusterTargetAndSnapshot', { ok: true }),
            EnqueueBlobParts: stub('EnqueueBlobParts', { total: 3, enqueued: 3, deadline: 'x' }),
            CountFinishedBlobParts: stub('CountFinishedBlobParts', count),
            EnqueueLinkParts: stub('EnqueueLinkParts', {}),
            DescribeRestoreFailure: stub('DescribeRestoreFailure', {
              rolledBack: false,
              error: 'RestoreFailed',
              message: 'm',
            }),
          } as never,
          waitTimeOverrides: { WaitForBlobParts: 0, WaitForLinkParts: 0 },
        },
      },
    );
    const outcome = await run.result.then(
      () => 'succeeded',
      () => 'failed',
    );

    // Assess
    expect(outcome).toBe('failed');
    expect(called).toEqual([
      'ResolveSnapshot',
      'CheckClusterTargetAndSnapshot',
      'EnqueueBlobParts',
      'CountFinishedBlobParts',
      'DescribeRestoreFailure',
    ]);
    expect(failure).toEqual({
      Error: 'ShardAborted',
      Cause: '1 of 3 restore parts stopped early; the first: p00001: AccessDenied',
    });
  });

  it('sends only the shards that have not ended, and counts a dead-lettered shard as ended and aborted', async () => {
    // Prepare: a planned run of three shards, one of which already ended.
    const runId = 'backup-counted';
    await saveJob(deps.vault, {
      purpose: 'backup',
      runId,
      snapshotId: 'counted',
      source: locationOn(s3, 'few-shards', '', 'vault'),
      target: locationOn(s3, 'vault', '', 'vault'),
      concurrency: 4,
      shards: ['a', 'b', 'c'].map((id) => ({ id: `objects-${id}`, kind: 'objects', prefix: id })),
    });
    const body = JSON.stringify({ runId, shardId: 'objects-a', seq: 0 });
    await failDeadLetters([{ messageId: 'm-a', body, receiveCount: 5 }], deps);
    const sent: string[] = [];
    const queue: MessageSender = {
      send: async (message) => {
        sent.push(message.shardId);
      },
      sendBatch: async (messages) => {
        sent.push(...messages.map((message) => message.shardId));
      },
    };

    // Act
    const enqueued = await enqueueShards({ runId, which: 'all', timeoutSeconds: 60 }, deps, queue);
    const counted = await countFinishedShards(
      { runId, which: 'all', deadline: enqueued.deadline },
      deps,
    );
    const late = await countFinishedShards(
      { runId, which: 'all', deadline: new Date(Date.now() - 1_000).toISOString() },
      deps,
    );

    // Assess
    expect(sent).toEqual(['objects-b', 'objects-c']);
    expect(enqueued).toMatchObject({ total: 3, enqueued: 2 });
    expect(counted).toMatchObject({ total: 3, finished: 1, aborted: 1, overdue: false });
    expect(counted.firstAborted).toMatch(/^objects-a: the copy worker failed on/);
    expect(late.overdue).toBe(true);
    expect([...(await listFinishedShards(deps.vault, runId)).finished]).toEqual(['objects-a']);
  });
});
