/** Messages the copy workers gave up on: each one's shard ends as aborted in the vault, with why. */
import { lambda, metrics, sqsEventSchema } from './commons/aws/runtime.ts';
import { failDeadLetters } from './commons/workflows/sqs-worker.ts';

export const handler = lambda(sqsEventSchema, async (records, deps) => {
  const failed = await failDeadLetters(records, deps);
  metrics.addMetric('CopyShardsDeadLettered', 'Count', failed);
  return { failed };
});
