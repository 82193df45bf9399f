/** Backup and restore step: send one copy message per shard of the run's job. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('enqueue-shards');
