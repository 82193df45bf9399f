/** A snapshot for tests that restore: a backup of the registry a fake cluster names. */
import { expect } from '@jest/globals';
import { runBackupLocally } from '../../functions/commons/local/runner.ts';
import type { WorkflowDeps } from '../../functions/commons/workflows/deps.ts';
import { type S3Endpointish, vaultDeps } from './s3.ts';

/**
 * Backs up, through the local runner, the registry the fake cluster at
 * `kubeconfigPath` names into `vault` on `server`; the snapshot's id.
 */
export async function backupThroughCluster(
  server: S3Endpointish,
  vault: string,
  kubeconfigPath: string,
): Promise<string> {
  return snapshotWith(vaultDeps(server, vault, '', { kube: { path: kubeconfigPath } }));
}

/** Backs up with `deps` (closed afterwards) through the local runner; the snapshot's id. */
export async function snapshotWith(deps: WorkflowDeps & { close(): void }): Promise<string> {
  try {
    const backup = await runBackupLocally({}, { deps });
    expect(backup.cause).toBeUndefined();
    return (backup.output as { snapshotId: string }).snapshotId;
  } finally {
    deps.close();
  }
}
