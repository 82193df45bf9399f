/** Restore step: merge-patch the registry's storage block to the restored bucket. */
import { lambda } from './commons/aws/runtime.ts';
import { type RestoreState, switchRegistry } from './commons/workflows/restore.ts';

export const handler = lambda(async (event: { state: RestoreState }, deps) =>
  switchRegistry(event.state, deps),
);
