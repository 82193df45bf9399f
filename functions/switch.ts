/** Restore step: merge-patch the registry's storage block to the restored bucket. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('switch');
