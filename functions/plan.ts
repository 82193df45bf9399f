/** Backup step: plan the source into shards and write the run's job. */
import { lambda } from './commons/aws/runtime.ts';
import { type BackupState, planBackup } from './commons/workflows/backup.ts';

export const handler = lambda(async (event: { state: BackupState }, deps) =>
  planBackup(event.state, deps),
);
