/** Backup step: inventory, catalog, checks, and the manifest written last. */
import { lambda, metrics } from './commons/aws/runtime.ts';
import {
  type BackupPlanOutput,
  type BackupState,
  finalizeBackup,
} from './commons/workflows/backup.ts';

export const handler = lambda(
  async (event: { state: BackupState; plan: BackupPlanOutput }, deps) => {
    const summary = await finalizeBackup(event.state, event.plan, deps);
    metrics.addMetric(
      summary.status === 'complete' ? 'SnapshotsComplete' : 'SnapshotsFailed',
      'Count',
      1,
    );
    return summary;
  },
);
