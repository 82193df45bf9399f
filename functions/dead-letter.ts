/** Messages the copy workers gave up on: fail the waiting task with the reason. */
import type { SQSEvent } from 'aws-lambda';
import { lambda, metrics, stepFunctionsCallbacks } from './commons/aws/runtime.ts';
import { failDeadLetters } from './commons/workflows/sqs-worker.ts';

export const handler = lambda(async (event: SQSEvent) => {
  const failed = await failDeadLetters(
    event.Records.map((record) => ({
      messageId: record.messageId,
      body: record.body,
      receiveCount: Number(record.attributes.ApproximateReceiveCount),
    })),
    stepFunctionsCallbacks,
  );
  metrics.addMetric('CopyShardsDeadLettered', 'Count', failed);
  return { failed };
});
