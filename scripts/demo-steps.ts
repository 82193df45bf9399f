/**
 * The steps both demos share: a backup that must complete (its states said
 * as they pass), and the disaster's emptying of a bucket.
 */
import { DeleteObjectsCommand, type S3Client } from '@aws-sdk/client-s3';
import { runBackupLocally } from '../functions/commons/local/runner.ts';
import { listKeys } from '../functions/commons/vault/store.ts';
import type { BackupSummary } from '../functions/commons/workflows/backup.ts';
import type { WorkflowDeps } from '../functions/commons/workflows/deps.ts';
import type { Say } from './sandbox-bed.ts';

/** Runs the backup through the local runner; its summary, or an error when it did not complete. */
export async function demoBackup(deps: WorkflowDeps, say: Say): Promise<BackupSummary> {
  const backup = await runBackupLocally(
    {},
    { deps, onState: (state) => say('state', `  - ${state}`, { workflow: 'backup', state }) },
  );
  const summary = backup.output as BackupSummary | undefined;
  say('backup-done', `backup ${backup.status}: ${summary?.message ?? backup.cause}`, {
    status: backup.status,
  });
  if (backup.status !== 'SUCCEEDED' || summary === undefined)
    throw new Error(`backup failed: ${backup.cause}`);
  return summary;
}

/** Deletes every object of `bucket`, 1,000 to a request. */
export async function emptyBucket(admin: S3Client, region: string, bucket: string): Promise<void> {
  const location = { region, bucket, prefix: '', forcePathStyle: true, access: 'vault' };
  const keys = (await listKeys({ location, client: admin }, '')).map((object) => object.key);
  for (let i = 0; i < keys.length; i += 1000)
    await admin.send(
      new DeleteObjectsCommand({
        Bucket: bucket,
        Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) },
      }),
    );
}
