/** Backup failure path: mark the snapshot failed with the cause. */
import { lambda, metrics } from './commons/aws/runtime.ts';
import {
  type BackupPlanOutput,
  type BackupState,
  markBackupFailed,
} from './commons/workflows/backup.ts';
import { causeText } from './commons/workflows/restore.ts';

interface Event {
  readonly state: BackupState | null;
  readonly plan: BackupPlanOutput | null;
  readonly error?: { Error?: string; Cause?: string };
}

export const handler = lambda(async (event: Event, deps) => {
  metrics.addMetric('SnapshotsFailed', 'Count', 1);
  const cause = causeText(event.error).replace(/^[^:]+: /, '');
  return markBackupFailed(
    event.state ?? undefined,
    event.plan ?? undefined,
    { error: event.error?.Error ?? 'Error', cause },
    deps,
  );
});
