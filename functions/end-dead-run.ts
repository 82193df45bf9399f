/** A backup execution aborted, timed out or failed (EventBridge): end its run, marking the snapshot failed. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('end-dead-run');
