/**
 * The SQS copy worker: each message copies part of a shard and hands the rest
 * on; a shard's last message writes its result, which the workflow counts.
 * Records that fail for a reason that may pass are returned as batch item
 * failures for SQS to deliver again.
 */
import type { SQSBatchResponse } from 'aws-lambda';
import { lambda, metrics, runtime, sqsEventSchema, sqsSender } from './commons/aws/runtime.ts';
import { copyTiming } from './commons/workflows/copy-timing.ts';
import { processShardRecords } from './commons/workflows/sqs-worker.ts';

export const handler = lambda(
  sqsEventSchema,
  async (records, deps, context): Promise<SQSBatchResponse> => {
    const { config } = await runtime();
    // The time left now is the function's timeout, the one setting the margin comes from.
    const left = context.getRemainingTimeInMillis();
    const { handOffMarginMs } = copyTiming(Math.round(left / 1000));
    const result = await processShardRecords(records, deps, {
      sender: sqsSender(config.COPY_QUEUE_URL),
      deadline: Date.now() + Math.max(10_000, left - handOffMarginMs),
    });
    metrics.addMetric('CopyMessagesRetried', 'Count', result.batchItemFailures.length);
    metrics.addMetric('ObjectsCopied', 'Count', result.totals.copied);
    metrics.addMetric('ObjectsSkipped', 'Count', result.totals.skipped);
    metrics.addMetric('ObjectsFailed', 'Count', result.totals.failed);
    metrics.addMetric('BytesCopied', 'Bytes', result.totals.bytesCopied);
    return { batchItemFailures: result.batchItemFailures };
  },
);
