/** Backup step: plan the source into shards and write the run's job. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('plan');
