/** Restore step: the registry serves what the snapshot's catalog lists. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('verify');
