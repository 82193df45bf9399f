/** Restore step: validate the input and resolve a complete snapshot. */
import { lambda } from './commons/aws/runtime.ts';
import { resolveRestore } from './commons/workflows/restore.ts';

export const handler = lambda(async (event: { input: unknown }, deps) =>
  resolveRestore(event.input, deps),
);
