/** Restore failure path: roll the registry back when asked, and say what failed. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('rollback');
