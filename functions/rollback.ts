/** Restore failure path: roll the registry back when asked, and say what failed. */
import { lambda } from './commons/aws/runtime.ts';
import { type FailedRestoreEvent, rollBackOrReport } from './commons/workflows/restore.ts';

export const handler = lambda(async (event: FailedRestoreEvent, deps) =>
  rollBackOrReport(event, deps),
);
