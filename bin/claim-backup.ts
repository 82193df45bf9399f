/**
 * `regvault backup` of a registry the cluster keeps on a PersistentVolumeClaim:
 * the backup runs in a Kubernetes Job that mounts the claim
 * (functions/commons/workflows/claim-backup.ts); this side checks the flags,
 * starts it and prints its snapshot as a backup prints one.
 */
import { ExitCode, InputError } from '../functions/commons/errors.ts';
import { backupClaimThroughJob } from '../functions/commons/workflows/claim-backup.ts';
import type { WorkflowDeps } from '../functions/commons/workflows/deps.ts';
import { type Flags, type reporter, run } from './context.ts';
import type { Settings } from './settings.ts';

/** The default image of the backup Job: regvault's own, at this version. */
export const DEFAULT_JOB_IMAGE = 'regvault:0.1.0';

/** The vault settings a Job's regvault gets as REGVAULT_* variables: names and places, no keys. */
export function jobVaultEnv(settings: Settings): Record<string, string> {
  return {
    REGVAULT_VAULT_BUCKET: settings.vaultBucket,
    REGVAULT_VAULT_REGION: settings.vaultRegion,
    ...(settings.vaultEndpoint === undefined
      ? {}
      : { REGVAULT_VAULT_ENDPOINT: settings.vaultEndpoint }),
    ...(settings.vaultPrefix === '' ? {} : { REGVAULT_VAULT_PREFIX: settings.vaultPrefix }),
  };
}

/**
 * Backs the registry up through a Job when the cluster says it is on a
 * claim, and says whether it did (false: the registry is on a bucket).
 */
export async function backupThroughJobIfOnClaim(
  flags: Flags,
  settings: Settings,
  deps: WorkflowDeps,
  out: ReturnType<typeof reporter>,
): Promise<boolean> {
  const { claim } = (await deps.profile().discover()).storage;
  if (claim === undefined) return false;
  const secret = flags['jobVaultSecret'];
  if (typeof secret !== 'string')
    throw new InputError(
      `the registry keeps its blobs on PersistentVolumeClaim ${claim.namespace}/${claim.claimName}, which a Job mounts to back it up`,
      [
        `--job-vault-secret: name the Secret in ${claim.namespace} with the vault's keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) the Job reads; or back the volume up where it is mounted with --source-dir`,
      ],
    );
  const manifest = await backupClaimThroughJob(claim, deps, {
    image: typeof flags['jobImage'] === 'string' ? flags['jobImage'] : DEFAULT_JOB_IMAGE,
    vaultSecret: secret,
    vaultEnv: jobVaultEnv(settings),
  });
  run.exitCode = ExitCode.Ok;
  const message = `snapshot ${manifest.id} of PersistentVolumeClaim ${claim.namespace}/${claim.claimName} (through a Job): ${manifest.counts.objects} objects, ${manifest.counts.repositories} repositories, ${manifest.counts.tags} tags`;
  out.result(
    {
      status: 'SUCCEEDED',
      snapshot: {
        snapshotId: manifest.id,
        status: manifest.status,
        objects: manifest.counts.objects,
        repositories: manifest.counts.repositories,
        tags: manifest.counts.tags,
        copied: manifest.totals.copied,
        skipped: manifest.totals.skipped,
        failed: manifest.totals.failed,
        claim,
        message,
      },
    },
    message,
  );
  return true;
}
