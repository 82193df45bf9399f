/**
 * The restore's preflight step: before anything is written, the cluster
 * answers (the registry resource, or none for a snapshot that brings its
 * own), the target bucket is empty or holds only what the snapshot would
 * write there, and it can be written; then the parts the copy workers restore.
 */
import {
  DeleteObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { InputError, messageOf } from '../errors.ts';
import { saveJob } from '../vault/runs.ts';
import { resolveSnapshot } from '../vault/store.ts';
import { Access, registrySecretOf, type WorkflowDeps } from './deps.ts';
import { proveSnapshotHeld } from './prove.ts';
import { discoverUnlessRestored, type RestoreState, restorePartsOf } from './restore.ts';

export interface PreflightOutput {
  readonly ok: true;
  /** What was checked, in order, each in a few words. */
  readonly checked: readonly string[];
}

/**
 * Step 2: every check a restore makes before it writes anything, cheapest
 * first, then the run's job (the restore's first write, the copy workers'
 * orders). The cluster answers, the registry's resource and the target's
 * Secret are found; the target bucket exists and is empty (unless allowed);
 * the snapshot is complete and passes fsck's plain check (every object held
 * at its size in the vault, every reference resolving); the target can be
 * written (one empty probe object, deleted at once). A wrong kube context, a
 * missing Secret, a non-empty target or a damaged snapshot therefore leaves
 * the target bucket and the vault's runs/ as they were.
 */
export async function preflightRestore(
  state: RestoreState,
  deps: WorkflowDeps,
): Promise<PreflightOutput> {
  const checked = [...(await checkCluster(state, deps))];
  const client = await deps.s3(state.target);
  checked.push(...(await checkTargetEmpty(state, client)));
  const manifest = await resolveSnapshot(deps.vault, state.snapshotId);
  checked.push(await proveSnapshotHeld(deps.vault, manifest));
  checked.push(await checkTargetWritable(state, client));
  await saveJob(deps.vault, {
    purpose: 'restore',
    runId: state.runId,
    snapshotId: manifest.id,
    source: { ...deps.vault.location, access: Access.Vault },
    target: state.target,
    sourcePrefix: manifest.source.prefix,
    targetMayHoldObjects: state.allowNonEmptyTarget,
    concurrency: state.concurrency,
    parts: restorePartsOf(manifest),
  });
  return { ok: true, checked };
}

/**
 * The cluster, when the restore needs it: the registry's resource (to switch
 * it) and the Secret the target's keys come from. The Secret is read through
 * `deps.s3`, so its keys are cached for the steps after.
 */
async function checkCluster(state: RestoreState, deps: WorkflowDeps): Promise<string[]> {
  const checked: string[] = [];
  if (state.switchRegistry) {
    const manifest = await resolveSnapshot(deps.vault, state.snapshotId);
    const found = await discoverUnlessRestored(manifest, deps);
    checked.push(
      found === undefined
        ? `no registry resource yet: the restore applies the snapshot's (${manifest.source.profile})`
        : `registry resource ${found.resourceName} (on ${
            found.storage.claim === undefined
              ? `s3://${found.storage.bucket}`
              : `PersistentVolumeClaim ${found.storage.claim.namespace}/${found.storage.claim.claimName}`
          })`,
    );
  }
  if (state.secretName !== undefined) {
    // The registry will read the target with the Secret's keys after a switch,
    // also when regvault itself reaches it with the vault's identity.
    if (registrySecretOf(state.target.access) === undefined)
      await deps.profile().readStorageKeys(state.secretName);
    else await deps.s3(state.target);
    checked.push(`Secret ${state.secretName}`);
  }
  return checked;
}

/** The target bucket exists and, unless allowed, holds nothing under the target prefix. */
async function checkTargetEmpty(state: RestoreState, client: S3Client): Promise<string[]> {
  const where = `s3://${state.target.bucket}/${state.target.prefix}`;
  try {
    await client.send(new HeadBucketCommand({ Bucket: state.target.bucket }));
  } catch (err) {
    // The S3 client already explained it (which bucket, whose keys, the fix): say it once.
    if (err instanceof InputError) throw err;
    throw new InputError(`the restore target ${where} cannot be used`, [
      `target.bucket: ${messageOf(err)}; create the bucket first (the restore never creates buckets) or fix target.endpoint/region/secretName`,
    ]);
  }
  if (state.allowNonEmptyTarget) return ['target exists', 'target may hold objects'];
  const listed = await client.send(
    new ListObjectsV2Command({
      Bucket: state.target.bucket,
      Prefix: state.target.prefix,
      MaxKeys: 1,
    }),
  );
  const found = listed.Contents?.[0]?.Key;
  if (found !== undefined) {
    throw new InputError(`the restore target ${where} is not empty`, [
      `target.bucket: it holds objects (e.g. ${found}); restore into an empty bucket, or set allowNonEmptyTarget to true to overwrite`,
    ]);
  }
  return ['target exists', 'target empty'];
}

/** The keys can write the target: one empty probe object, deleted at once. */
async function checkTargetWritable(state: RestoreState, client: S3Client): Promise<string> {
  const probe = `${state.target.prefix}.regvault-preflight-${state.runId}`;
  try {
    await client.send(
      new PutObjectCommand({ Bucket: state.target.bucket, Key: probe, Body: '', ContentLength: 0 }),
    );
    await client.send(new DeleteObjectCommand({ Bucket: state.target.bucket, Key: probe }));
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw new InputError(
      `the restore target s3://${state.target.bucket}/${state.target.prefix} cannot be written`,
      [`target.secretName: the keys cannot write the bucket (${messageOf(err)})`],
    );
  }
  return 'target writable';
}
