/** Restore step: every snapshot object is in the target with its size. */
import { lambda } from './commons/aws/runtime.ts';
import { compareRestore, type RestoreState } from './commons/workflows/restore.ts';

export const handler = lambda(async (event: { state: RestoreState }, deps) =>
  compareRestore(event.state, deps),
);
