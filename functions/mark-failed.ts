/** Backup failure path: mark the snapshot failed with the cause. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('mark-failed');
