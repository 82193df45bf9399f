/** Messages the copy workers gave up on: fail the waiting task with the reason. */
import { lambda, metrics, sqsEventSchema, stepFunctionsCallbacks } from './commons/aws/runtime.ts';
import { failDeadLetters } from './commons/workflows/sqs-worker.ts';

export const handler = lambda(sqsEventSchema, async (records) => {
  const failed = await failDeadLetters(records, stepFunctionsCallbacks);
  metrics.addMetric('CopyShardsDeadLettered', 'Count', failed);
  return { failed };
});
