/** Restore step: the target bucket exists, is writable and empty unless allowed. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('preflight');
