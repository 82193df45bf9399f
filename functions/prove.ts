/** Restore step: prove the target (objects, references, blob digests) before the registry is switched. */
import { lambda } from './commons/aws/runtime.ts';
import { proveRestore } from './commons/workflows/prove.ts';
import type { RestoreState } from './commons/workflows/restore.ts';

export const handler = lambda(async (event: { state: RestoreState }, deps) =>
  proveRestore(event.state, deps),
);
