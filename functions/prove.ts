/** Restore step: prove the target (objects, references, blob digests) before the registry is switched. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('prove');
