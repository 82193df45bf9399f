/**
 * One setting for the copy's times (issue 18, item 3): the copy worker's
 * timeout. The queue's visibility timeout and a message's work budget derive
 * from it, on AWS (the stack, the Lambda handler) and on one machine (the
 * local runner's SQS receives and its workers) alike.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import { CreateQueueCommand, SQSClient } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import { copyTiming } from '../../functions/commons/workflows/copy-timing.ts';
import type { S3ServerHandle } from '../../sandbox/s3/index.ts';
import { putObjects, serverWithBuckets, vaultDeps } from '../support/s3.ts';

let s3: S3ServerHandle;
let client: S3Client;

beforeAll(async () => {
  ({ server: s3, client } = await serverWithBuckets('s3-copy-timing', ['vault', 'source']));
  await putObjects(
    client,
    'source',
    Array.from({ length: 30 }, (_, i) => ({ key: `data/${i}`, body: `${i}` })),
  );
}, 60_000);

afterAll(async () => {
  client?.destroy();
  await s3?.stop();
});

describe('the copy worker timeout', () => {
  it.each([
    [900, { handOffMarginMs: 90_000, messageBudgetMs: 810_000, visibilityTimeoutSeconds: 5_400 }],
    [300, { handOffMarginMs: 30_000, messageBudgetMs: 270_000, visibilityTimeoutSeconds: 1_800 }],
    [60, { handOffMarginMs: 6_000, messageBudgetMs: 54_000, visibilityTimeoutSeconds: 360 }],
  ])('of %i s gives the budget, the margin and the visibility timeout', (seconds, expected) => {
    // Act
    const timing = copyTiming(seconds);

    // Assess
    expect(timing).toEqual({ timeoutSeconds: seconds, ...expected });
  });

  it('sets the visibility of every message a local run receives from SQS, as the queue does on AWS', async () => {
    // Prepare
    const sqs = new SQSClient({
      endpoint: s3.endpoint,
      region: s3.region,
      credentials: s3.credentials,
    });
    const visibilities: number[] = [];
    sqs.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as { VisibilityTimeout?: number; WaitTimeSeconds?: number };
        if (input.WaitTimeSeconds !== undefined) visibilities.push(input.VisibilityTimeout ?? -1);
        return next(args);
      },
      { step: 'initialize', name: 'seeReceives' },
    );
    const queueUrl =
      (await sqs.send(new CreateQueueCommand({ QueueName: 'copy-timing' }))).QueueUrl ?? '';
    const deps = vaultDeps(s3, 'vault', 'timing/');

    // Act
    const result = await runBackupLocally(
      {
        source: { bucket: 'source', region: s3.region, endpoint: s3.endpoint },
        targetObjectsPerShard: 100,
      },
      {
        deps,
        workers: 2,
        transport: { kind: 'sqs', client: sqs, queueUrl },
        copyWorkerTimeoutSeconds: 120,
      },
    );

    // Assess
    expect(result.status).toBe('SUCCEEDED');
    expect(visibilities.length).toBeGreaterThan(0);
    expect(new Set(visibilities)).toEqual(new Set([copyTiming(120).visibilityTimeoutSeconds]));
    deps.close();
    sqs.destroy();
  }, 60_000);
});
