/** Restore step: the target bucket exists, is writable and empty unless allowed. */
import { lambda } from './commons/aws/runtime.ts';
import { preflightRestore, type RestoreState } from './commons/workflows/restore.ts';

export const handler = lambda(async (event: { state: RestoreState }, deps) =>
  preflightRestore(event.state, deps),
);
