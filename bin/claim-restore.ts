/**
 * `regvault restore --target-claim`: a registry kept on a
 * PersistentVolumeClaim restored into a new claim by a Kubernetes Job, then
 * switched, verified and rolled back on failure
 * (functions/commons/workflows/claim-restore.ts); this side reads the flags
 * and prints the outcome as a restore prints one.
 */
import { ExitCode, InputError } from '../functions/commons/errors.ts';
import { restoreClaimThroughJob } from '../functions/commons/workflows/claim-restore.ts';
import { DEFAULT_JOB_IMAGE, jobVaultEnv } from './claim-backup.ts';
import { type Flags, reporter, run } from './context.ts';
import { depsFor, findKubeconfig, registryAnswers, requireCluster } from './deps.ts';
import { withDetectedProfile } from './detect-profile.ts';
import { snapshotNamed } from './flags.ts';
import { numbersOf, type Settings } from './settings.ts';

/** Restores into the claim `--target-claim` names, through a Job. */
export async function restoreClaimNow(flags: Flags, given: Settings): Promise<void> {
  const targetClaim = flags['targetClaim'];
  const secret = flags['jobVaultSecret'];
  if (typeof targetClaim !== 'string' || typeof secret !== 'string')
    throw new InputError('the flags are not valid', [
      "--job-vault-secret: a restore into a claim runs a Job; name the Secret (in the registry's namespace) with the vault's keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) it reads",
    ]);
  const bucketFlags = ['targetBucket', 'targetDir', 'targetSecret'].filter(
    (name) => flags[name] !== undefined,
  );
  if (bucketFlags.length > 0 || flags['switch'] === false)
    throw new InputError('the flags are not valid', [
      `--target-claim: restores into a claim and switches the registry to it; leave out ${[...bucketFlags.map((n) => `--${n.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`), ...(flags['switch'] === false ? ['--no-switch'] : [])].join(', ')}`,
    ]);
  const numbers = numbersOf(flags, ['rolloutTimeout']);
  const kubeconfig = findKubeconfig(given);
  requireCluster(kubeconfig, 'restore (into a claim, through a Job)');
  const settings = await withDetectedProfile(given, kubeconfig, reporter(given));
  const out = reporter(settings);
  const deps = depsFor(settings, kubeconfig);
  try {
    const snapshot = await snapshotNamed(
      deps.vault,
      typeof flags['snapshot'] === 'string' ? flags['snapshot'] : 'latest',
      '--snapshot',
    );
    await registryAnswers(deps);
    const result = await restoreClaimThroughJob(deps, {
      snapshotId: snapshot.id,
      targetClaim,
      image: typeof flags['jobImage'] === 'string' ? flags['jobImage'] : DEFAULT_JOB_IMAGE,
      vaultSecret: secret,
      vaultEnv: jobVaultEnv(settings),
      rollout: { timeoutMs: (numbers.rolloutTimeout ?? 600) * 1_000 },
    });
    const { outcome, claim } = result;
    const where = `PersistentVolumeClaim ${claim.namespace}/${claim.claimName}`;
    run.exitCode = outcome.ok
      ? ExitCode.Ok
      : outcome.rollback?.ok === true
        ? ExitCode.RolledBack
        : ExitCode.Failed;
    const message = outcome.ok
      ? `snapshot ${result.snapshotId} restored into ${where}${result.created ? ' (made for it)' : ''} through a Job; the registry serves it (${outcome.verify?.pulls.length ?? 0} images pulled, digests checked)`
      : `snapshot ${result.snapshotId} restored into ${where}, but the registry did not serve it: ${outcome.error ?? 'unknown'}; ${outcome.rollback?.ok === true ? `rolled back to ${outcome.rollback.restored.claim?.claimName ?? 'the previous storage'}` : 'not rolled back'}`;
    out.result(
      {
        status: outcome.ok ? 'SUCCEEDED' : 'FAILED',
        snapshotId: result.snapshotId,
        claim,
        created: result.created,
        verified: outcome.verify?.ok ?? false,
        ...(outcome.error === undefined ? {} : { error: outcome.error }),
        ...(outcome.rollback === undefined ? {} : { rolledBack: outcome.rollback.ok }),
        message,
      },
      message,
    );
  } finally {
    deps.close();
  }
}
