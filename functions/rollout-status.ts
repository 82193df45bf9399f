/** Restore step (polled): how far the registry rollout is. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('rollout-status');
