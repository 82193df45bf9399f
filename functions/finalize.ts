/** Backup step: inventory, catalog, checks, and the manifest written last. */
import { stepHandler } from './commons/aws/step-handler.ts';

export const handler = stepHandler('finalize');
