/**
 * A backup of a registry whose blobs are on a PersistentVolumeClaim: a
 * `batch/v1` Job in the registry's namespace mounts the claim read-only and
 * runs regvault itself (`backup --source-dir`), so the volume is read where
 * it can be mounted and the snapshot is a normal one (the same copy path, in
 * the Job). The vault's keys reach the Job only through a Secret its env
 * references, which the operator creates; regvault never reads it, and no
 * key is in the Job spec, its output or the result. regvault creates the
 * Job, waits for it to end, reads the snapshot it made from the vault, and
 * deletes the Job.
 */
import type { ApiType, KubeObject, ResourceApi } from '../cluster/resources-api.ts';
import { ClusterError, InputError } from '../errors.ts';
import type { ClaimRef } from '../registry/profile.ts';
import { directoryEndpoint } from '../s3/directory.ts';
import { type SnapshotManifest, SnapshotStatus } from '../vault/format.ts';
import { listSnapshots } from '../vault/store.ts';
import type { WorkflowDeps } from './deps.ts';

/** A namespaced type regvault's Jobs use, by group, plural and kind (all at v1). */
export const namespacedType = (group: string, resource: string, kind: string): ApiType => ({
  group,
  version: 'v1',
  resource,
  kind,
  namespaced: true,
  verbs: [],
  shortNames: [],
});
const JOBS = namespacedType('batch', 'jobs', 'Job');
const SECRETS = namespacedType('', 'secrets', 'Secret');

/** The Secret keys the Job reads the vault's keys from. */
export const VAULT_SECRET_KEYS = {
  accessKeyId: 'AWS_ACCESS_KEY_ID',
  secretAccessKey: 'AWS_SECRET_ACCESS_KEY',
} as const;

export interface ClaimJobOptions {
  /** The image that runs regvault (its entry point or PATH has `regvault`). */
  readonly image: string;
  /** The Secret, in the claim's namespace, with the vault's keys (VAULT_SECRET_KEYS). */
  readonly vaultSecret: string;
  /** The vault settings the Job's regvault gets as REGVAULT_* variables (names and places, no keys). */
  readonly vaultEnv: Readonly<Record<string, string>>;
  readonly timeoutMs?: number;
  readonly intervalMs?: number;
}

/** Where the Job mounts a claim: one path per claim, so each claim is its own source in the vault. */
export const mountPathOf = (claim: ClaimRef) => `/data/${claim.namespace}/${claim.claimName}`;

export const record = (value: unknown): Record<string, unknown> =>
  typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {};

/** The Job that backs `claim` up: the volume read-only, the vault keys from the Secret. */
export function claimBackupJob(
  claim: ClaimRef,
  name: string,
  options: ClaimJobOptions,
): KubeObject {
  const mount = mountPathOf(claim);
  const directory = claim.subPath === '' ? mount : `${mount}/${claim.subPath}`;
  return claimJob(claim, name, options, {
    args: ['backup', '--source-dir', directory, '--json'],
    readOnly: true,
  });
}

/**
 * A Job that runs regvault with `run.args` on `claim` mounted at its mount
 * path (read-only when `run.readOnly`), the vault keys from the Secret.
 */
export function claimJob(
  claim: ClaimRef,
  name: string,
  options: ClaimJobOptions,
  run: { readonly args: readonly string[]; readonly readOnly: boolean },
): KubeObject {
  const mount = mountPathOf(claim);
  const fromSecret = (variable: string) => ({
    name: variable,
    valueFrom: { secretKeyRef: { name: options.vaultSecret, key: variable } },
  });
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name,
      namespace: claim.namespace,
      labels: { 'app.kubernetes.io/managed-by': 'regvault' },
    },
    spec: {
      backoffLimit: 0,
      template: {
        spec: {
          restartPolicy: 'Never',
          containers: [
            {
              name: 'regvault',
              image: options.image,
              command: ['regvault'],
              args: [...run.args],
              env: [
                ...Object.entries(options.vaultEnv).map(([n, value]) => ({ name: n, value })),
                fromSecret(VAULT_SECRET_KEYS.accessKeyId),
                fromSecret(VAULT_SECRET_KEYS.secretAccessKey),
              ],
              volumeMounts: [
                {
                  name: 'registry-data',
                  mountPath: mount,
                  ...(run.readOnly ? { readOnly: true } : {}),
                },
              ],
            },
          ],
          volumes: [
            {
              name: 'registry-data',
              persistentVolumeClaim: {
                claimName: claim.claimName,
                ...(run.readOnly ? { readOnly: true } : {}),
              },
            },
          ],
        },
      },
    },
  };
}

/** Creates the Job, waits until it succeeded or failed, deletes it; says how it ended. */
export async function runJob(
  api: ResourceApi,
  job: KubeObject,
  deps: Pick<WorkflowDeps, 'now'>,
  options: Pick<ClaimJobOptions, 'timeoutMs' | 'intervalMs'>,
): Promise<{ succeeded: boolean; message: string }> {
  const { namespace, name } = job.metadata;
  await api.apply(JOBS, job, { force: true });
  const deadline = deps.now().getTime() + (options.timeoutMs ?? 6 * 3_600_000);
  try {
    for (;;) {
      const status = record((await api.get(JOBS, namespace, name))?.['status']);
      const condition = (Array.isArray(status['conditions']) ? status['conditions'] : [])
        .map(record)
        .find(
          (c) => (c['type'] === 'Complete' || c['type'] === 'Failed') && c['status'] === 'True',
        );
      if (condition !== undefined)
        return {
          succeeded: condition['type'] === 'Complete',
          message: `${String(condition['reason'] ?? '')}: ${String(condition['message'] ?? '')}`,
        };
      if (deps.now().getTime() > deadline)
        return { succeeded: false, message: `the Job did not end within its time` };
      await new Promise((resolve) => setTimeout(resolve, options.intervalMs ?? 2_000));
    }
  } finally {
    await api.delete(JOBS, namespace, name);
  }
}

/**
 * Refuses, before any Job exists, a vault Secret the Job could not read the
 * vault's keys from (missing, or without both keys); never reads the values.
 */
export async function requireVaultSecret(
  api: ResourceApi,
  namespace: string,
  secretName: string,
  what: 'backup' | 'restore',
): Promise<void> {
  const secret = await api.get(SECRETS, namespace, secretName);
  const data = record(secret?.['data']);
  const missing = Object.values(VAULT_SECRET_KEYS).filter((key) => data[key] === undefined);
  if (secret === undefined || missing.length > 0)
    throw new InputError(`the ${what} Job cannot reach the vault`, [
      `--job-vault-secret: Secret ${namespace}/${secretName} ${secret === undefined ? 'does not exist' : `lacks ${missing.join(', ')}`}; create it with the vault's keys (kubectl -n ${namespace} create secret generic ${secretName} --from-literal=${VAULT_SECRET_KEYS.accessKeyId}=... --from-literal=${VAULT_SECRET_KEYS.secretAccessKey}=...)`,
    ]);
}

/**
 * Backs `claim` up through a Job and returns the snapshot it made. A missing
 * vault Secret is bad input, found before the Job is created.
 */
export async function backupClaimThroughJob(
  claim: ClaimRef,
  deps: WorkflowDeps,
  options: ClaimJobOptions,
): Promise<SnapshotManifest> {
  const api = await deps.resources();
  await requireVaultSecret(api, claim.namespace, options.vaultSecret, 'backup');
  const started = deps.now();
  const name = `regvault-backup-${started.getTime().toString(36)}`;
  const ended = await runJob(api, claimBackupJob(claim, name, options), deps, options);
  // The snapshot of this claim the Job made: its source is the mount (a sandbox maps it to a
  // directory of its own, which ends the same way), started after the Job was created.
  const suffix = directoryEndpoint(
    claim.subPath === '' ? mountPathOf(claim) : `${mountPathOf(claim)}/${claim.subPath}`,
  ).slice('file:///data'.length);
  const made = (await listSnapshots(deps.vault))
    .filter(
      (m) =>
        m.source.profile === 'directory' &&
        m.source.endpoint?.endsWith(suffix) === true &&
        Date.parse(m.startedAt) >= started.getTime() - 1_000,
    )
    .at(-1);
  if (!ended.succeeded || made === undefined || made.status !== SnapshotStatus.Complete)
    throw new ClusterError(
      `the backup Job ${claim.namespace}/${name} of PersistentVolumeClaim ${claim.claimName} ${ended.succeeded ? 'ended' : 'failed'} (${ended.message})${made === undefined ? ' and made no snapshot' : `; snapshot ${made.id} is ${made.status}`}`,
    );
  return made;
}
