/** Restore step: validate the input and resolve a complete snapshot. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('resolve');
