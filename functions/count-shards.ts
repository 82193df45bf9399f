/** Backup and restore step: how many of the run's shards have ended (counts only). */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('count-shards');
