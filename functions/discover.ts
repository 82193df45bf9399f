/** Backup step: validate the input, find the registry's bucket, capture its config. */
import { lambda } from './commons/aws/runtime.ts';
import { discoverBackup } from './commons/workflows/backup.ts';

export const handler = lambda(async (event: { input: unknown }, deps) =>
  discoverBackup(event.input, deps),
);
