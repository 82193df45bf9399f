/** Backup step: validate the input, find the registry's bucket, capture its config. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('discover');
