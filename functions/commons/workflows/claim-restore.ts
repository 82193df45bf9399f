/**
 * A restore of a registry whose blobs are on a PersistentVolumeClaim, into a
 * new claim: regvault makes the claim (as the registry's current one is made:
 * its access modes, size and storage class) unless it exists, runs a
 * `batch/v1` Job that mounts it and writes the snapshot there with regvault
 * itself (`restore --no-switch --target-dir`, the same copy path and digest
 * checks as any restore), then points the registry at the new claim, waits
 * for the rollout, verifies every image through the registry API and rolls
 * back to the old claim when that fails. The old claim is left as it was.
 */
import type { KubeObject } from '../cluster/resources-api.ts';
import { ClusterError, InputError } from '../errors.ts';
import type { StorageRef } from '../registry/profile.ts';
import { type SwitchOutcome, switchVerifyRollback, type WaitOptions } from '../registry/rollout.ts';
import { verifyRegistry } from '../registry/verify.ts';
import { catalogSchema, SnapshotStatus, vaultKeys } from '../vault/format.ts';
import { getJson, resolveSnapshot, rootOf } from '../vault/store.ts';
import {
  type ClaimJobOptions,
  claimJob,
  mountPathOf,
  namespacedType,
  record,
  requireVaultSecret,
  runJob,
} from './claim-backup.ts';
import type { WorkflowDeps } from './deps.ts';

const CLAIMS = namespacedType('', 'persistentvolumeclaims', 'PersistentVolumeClaim');

export interface ClaimRestoreOptions extends ClaimJobOptions {
  readonly snapshotId: string;
  /** The claim to restore into, in the registry's namespace; made when it does not exist. */
  readonly targetClaim: string;
  /** The rollout's wait after the switch (and after a rollback). */
  readonly rollout?: WaitOptions;
}

export interface ClaimRestoreResult {
  readonly snapshotId: string;
  readonly claim: { readonly namespace: string; readonly claimName: string };
  /** True when regvault made the claim. */
  readonly created: boolean;
  readonly outcome: SwitchOutcome;
}

/** The new claim: the current one's access modes, size and storage class, no volume yet. */
function claimLike(current: KubeObject | undefined, namespace: string, name: string): KubeObject {
  const spec = record(current?.['spec']);
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name, namespace, labels: { 'app.kubernetes.io/managed-by': 'regvault' } },
    spec: {
      accessModes: spec['accessModes'] ?? ['ReadWriteOnce'],
      resources: spec['resources'] ?? { requests: { storage: '10Gi' } },
      ...(spec['storageClassName'] === undefined
        ? {}
        : { storageClassName: spec['storageClassName'] }),
    },
  };
}

/**
 * Restores a snapshot into claim `targetClaim` through a Job and switches
 * the registry to it. Everything that can be refused (no registry URL to
 * verify with, a registry not on a claim, a snapshot that is not complete,
 * the vault Secret) is refused before the claim or the Job is made.
 */
export async function restoreClaimThroughJob(
  deps: WorkflowDeps,
  options: ClaimRestoreOptions,
): Promise<ClaimRestoreResult> {
  const registry = deps.registry();
  if (registry === undefined)
    throw new InputError('a restore onto a claim switches the registry and must verify it', [
      '--registry-url: give where the registry answers, so every image is pulled back after the switch',
    ]);
  const { storage } = await deps.profile().discover();
  const current = storage.claim;
  if (current === undefined)
    throw new InputError('the registry keeps its blobs in a bucket, not on a claim', [
      `--target-claim: restore into a bucket with --target-bucket (the registry is on s3://${storage.bucket})`,
    ]);
  if (current.claimName === options.targetClaim)
    throw new InputError(`the registry is on claim ${options.targetClaim} already`, [
      '--target-claim: name a new claim; the one the registry is on is never written',
    ]);
  const snapshot = await resolveSnapshot(deps.vault, options.snapshotId);
  if (snapshot.status !== SnapshotStatus.Complete)
    throw new InputError(`snapshot ${snapshot.id} is ${snapshot.status}, not complete`, [
      '--snapshot: name a complete snapshot (regvault snapshots)',
    ]);
  const catalog = await getJson(
    deps.vault,
    vaultKeys.catalog(rootOf(deps.vault), snapshot.id),
    catalogSchema,
  );
  if (catalog === undefined)
    throw new InputError(`snapshot ${snapshot.id} has no catalog to verify the registry with`, [
      '--snapshot: name a snapshot of a registry (regvault snapshots)',
    ]);
  const api = await deps.resources();
  const { namespace } = current;
  await requireVaultSecret(api, namespace, options.vaultSecret, 'restore');

  const existing = await api.get(CLAIMS, namespace, options.targetClaim);
  if (existing === undefined)
    await api.apply(
      CLAIMS,
      claimLike(
        await api.get(CLAIMS, namespace, current.claimName),
        namespace,
        options.targetClaim,
      ),
      { force: true },
    );
  const target = { claimName: options.targetClaim, namespace, subPath: '' };
  const name = `regvault-restore-${deps.now().getTime().toString(36)}`;
  const job = claimJob(target, name, options, {
    args: [
      'restore',
      '--no-switch',
      '--snapshot',
      snapshot.id,
      '--target-dir',
      mountPathOf(target),
      '--json',
    ],
    readOnly: false,
  });
  const ended = await runJob(api, job, deps, options);
  if (!ended.succeeded)
    throw new ClusterError(
      `the restore Job ${namespace}/${name} into PersistentVolumeClaim ${options.targetClaim} failed (${ended.message}); the registry was not switched and still uses ${current.claimName}`,
    );
  const next: StorageRef = {
    bucket: '',
    regionEndpoint: '',
    region: '',
    secretName: '',
    rootDirectory: '',
    claim: target,
  };
  const verify = () => verifyRegistry(registry, catalog, { sample: Number.POSITIVE_INFINITY });
  const outcome = await switchVerifyRollback(deps.profile(), next, {
    rollbackOnFailure: true,
    verify,
    ...options.rollout,
  });
  return {
    snapshotId: snapshot.id,
    claim: { namespace, claimName: options.targetClaim },
    created: existing === undefined,
    outcome,
  };
}
