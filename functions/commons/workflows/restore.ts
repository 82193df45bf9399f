/**
 * The restore workflow's steps (state-machines/restore.asl.json): validate and
 * resolve the snapshot, check everything before writing anything (cluster,
 * target, snapshot: restore-preflight.ts) and write the run's job, (copy inventory parts: the
 * workers, blobs before links), (prove the target: prove.ts), switch the
 * registry, poll the rollout and verify; the failure path is in rollback.ts.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Location } from '../copy/model.ts';
import { InputError, VaultError } from '../errors.ts';
import type { SourceLayout } from '../registry/blob-layout.ts';
import {
  claimRefSchema,
  NO_STORAGE,
  RegistryMissingError,
  type RolloutStatus,
  type StorageRef,
  type SwitchResult,
  sameStorage,
} from '../registry/profile.ts';
import { describeRolloutFailure, judgeRollout } from '../registry/rollout.ts';
import { verifyRegistry } from '../registry/verify.ts';
import { isDirectoryEndpoint } from '../s3/directory.ts';
import {
  catalogSchema,
  SNAPSHOT_ID,
  SNAPSHOT_ID_EXAMPLE,
  type SnapshotManifest,
  vaultKeys,
} from '../vault/format.ts';
import { type RestorePart, registryBeforeKey } from '../vault/runs.ts';
import { getJson, putJson, resolveSnapshot, rootOf } from '../vault/store.ts';
import { parseInput } from './backup.ts';
import { Access, type WorkflowDeps } from './deps.ts';
import {
  loadDatabaseBefore,
  openDump,
  saveDatabaseBefore,
  snapshotFiles,
} from './registry-state.ts';

export const restoreInputSchema = z
  .object({
    snapshot: z
      .string()
      .refine(
        (value) => value === 'latest' || SNAPSHOT_ID.test(value),
        `a snapshot id such as ${SNAPSHOT_ID_EXAMPLE}, or "latest"`,
      )
      .default('latest'),
    target: z
      .object({
        bucket: z
          .string()
          .regex(
            /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
            'a bucket name: 3-63 lowercase letters, digits, dots and hyphens',
          ),
        /** An S3 endpoint, or a `file://` URL: a local directory (restore --target-dir). */
        endpoint: z.url({ protocol: /^(https?|file)$/ }).optional(),
        region: z.string().min(1),
        /** The Secret (in the registry's namespace) holding keys for the target bucket. */
        secretName: z.string().min(1).optional(),
        prefix: z.string().default(''),
      })
      .strict(),
    switchRegistry: z.boolean().default(true),
    rollbackOnFailure: z.boolean().default(true),
    allowNonEmptyTarget: z.boolean().default(false),
    /** Images pulled in full after the switch, every blob's sha256 checked: a count or every tag. */
    pullSample: z.union([z.number().int().min(0).max(1_000_000), z.literal('all')]).default(3),
    pushTest: z.boolean().default(false),
    /**
     * Opt-in and named for what it skips: before the switch, blobs the copy did
     * not already check against their digest are not re-read and hashed. The
     * references (tags, manifests, blobs present) are still proven, and the run
     * record says the content was not.
     */
    skipBlobHashing: z.boolean().default(false),
    rolloutTimeoutSeconds: z.number().int().min(10).max(3_600).default(600),
    concurrency: z.number().int().min(1).max(512).default(64),
  })
  .strict()
  .superRefine((input, ctx) => {
    if (input.switchRegistry && input.target.secretName === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['target', 'secretName'],
        message:
          'required when switchRegistry is true: the Secret the registry will read the target bucket keys from',
      });
    }
  });
export type RestoreInput = z.infer<typeof restoreInputSchema>;

export interface RestoreState {
  readonly runId: string;
  readonly snapshotId: string;
  readonly target: Location;
  readonly secretName?: string;
  readonly rootDirectory: string;
  readonly layout: SourceLayout;
  readonly switchRegistry: boolean;
  readonly rollbackOnFailure: boolean;
  readonly allowNonEmptyTarget: boolean;
  readonly pullSample: number | 'all';
  readonly pushTest: boolean;
  readonly skipBlobHashing: boolean;
  readonly rolloutTimeoutSeconds: number;
  readonly concurrency: number;
  readonly objects: number;
  readonly bytes: number;
}

/**
 * Step 1: validate the input and resolve the snapshot (complete only). It
 * writes nothing: the run's job is written by the preflight, once every check
 * has passed.
 */
export async function resolveRestore(raw: unknown, deps: WorkflowDeps): Promise<RestoreState> {
  const input = parseInput(restoreInputSchema, raw, 'restore input');
  if (input.switchRegistry && deps.registry() === undefined) {
    throw new InputError('the restore cannot prove the registry serves the snapshot', [
      'registryUrl: switching the registry needs its URL to verify it afterwards; configure it (CLI: --registry-url; AWS: the registryUrl stack setting) or set switchRegistry to false',
    ]);
  }
  const manifest = await resolveSnapshot(deps.vault, input.snapshot);
  if (input.switchRegistry && manifest.layout === 'generic') {
    throw new InputError('the restore input is not valid', [
      `switchRegistry: snapshot ${manifest.id} is a plain bucket, not a registry; set switchRegistry to false`,
    ]);
  }
  const target: Location = {
    ...(input.target.secretName === undefined
      ? {
          ...(input.target.endpoint === undefined ? {} : { endpoint: input.target.endpoint }),
          forcePathStyle: isDirectoryEndpoint(input.target.endpoint)
            ? true
            : deps.pathStyle(input.target.endpoint),
          access: isDirectoryEndpoint(input.target.endpoint) ? Access.Directory : Access.Vault,
        }
      : deps.storageAccess(
          {
            bucket: input.target.bucket,
            endpoint: input.target.endpoint,
            secretName: input.target.secretName,
          },
          'write',
        )),
    region: input.target.region,
    bucket: input.target.bucket,
    prefix: input.target.prefix,
  };
  return {
    runId: `restore-${manifest.id}-${randomBytes(3).toString('hex')}`,
    snapshotId: manifest.id,
    target,
    ...(input.target.secretName === undefined ? {} : { secretName: input.target.secretName }),
    rootDirectory: manifest.source.rootDirectory,
    layout: manifest.layout,
    switchRegistry: input.switchRegistry,
    rollbackOnFailure: input.rollbackOnFailure,
    allowNonEmptyTarget: input.allowNonEmptyTarget,
    pullSample: input.pullSample,
    pushTest: input.pushTest,
    skipBlobHashing: input.skipBlobHashing,
    rolloutTimeoutSeconds: input.rolloutTimeoutSeconds,
    concurrency: input.concurrency,
    objects: manifest.counts.objects,
    bytes: manifest.bytes,
  };
}

/** The copy job's parts: one per inventory part of the snapshot, named by its index. */
export function restorePartsOf(manifest: SnapshotManifest): RestorePart[] {
  return manifest.inventory.parts.map((part, partIndex) => ({
    id: `p${String(partIndex).padStart(5, '0')}`,
    partIndex,
    kind: part.kind,
  }));
}

/**
 * The registry's resource; undefined when it is missing and the snapshot
 * holds what a profile restores the registry itself from (its database).
 */
export async function discoverUnlessRestored(manifest: SnapshotManifest, deps: WorkflowDeps) {
  try {
    return await deps.profile().discover();
  } catch (err) {
    if (err instanceof RegistryMissingError && manifest.database !== undefined) return undefined;
    throw err;
  }
}

export interface SwitchOutput {
  readonly changed: boolean;
  readonly previous: StorageRef;
  readonly current: StorageRef;
  readonly podsBefore: readonly string[];
  readonly switchedAt: string;
  readonly deadline: string;
}

/** What the switch step records before it patches (`runs/<id>/registry-before.json`). */
export const registryBeforeSchema = z.object({
  storage: z.object({
    bucket: z.string(),
    regionEndpoint: z.string(),
    region: z.string(),
    secretName: z.string(),
    rootDirectory: z.string(),
    claim: claimRefSchema.exactOptional(),
  }),
  /** The registry pods before the patch: the rollback waits for the ones created since. */
  pods: z.array(z.string()),
});

function targetStorage(state: RestoreState): StorageRef {
  return {
    bucket: state.target.bucket,
    regionEndpoint: state.target.endpoint ?? '',
    region: state.target.region,
    secretName: state.secretName ?? '',
    rootDirectory: state.rootDirectory,
  };
}

/** Step 5: point the registry at the restored bucket (merge-patch of the storage block only). */
export async function switchRegistry(
  state: RestoreState,
  deps: WorkflowDeps,
): Promise<SwitchOutput> {
  // Recorded before the patch: when the patch applies but its answer is lost,
  // the step fails with nothing in `switched`, and the failure path still has
  // to know what to switch back to. A retried step keeps the first record,
  // which predates any patch of this run.
  const key = registryBeforeKey(deps.vault, state.runId);
  let recorded = await getJson(deps.vault, key, registryBeforeSchema);
  const manifest = await resolveSnapshot(deps.vault, state.snapshotId);
  const profile = deps.profile();
  if (recorded === undefined) {
    const found = await discoverUnlessRestored(manifest, deps);
    const status =
      found === undefined ? undefined : await profile.rolloutStatus({ podsBefore: [] });
    recorded = {
      storage: found?.storage ?? NO_STORAGE,
      pods: status?.newPods.map((pod) => pod.name) ?? [],
    };
    await putJson(deps.vault, key, recorded);
  }
  const before = recorded.storage;
  const target = targetStorage(state);
  // A snapshot with a database (quay) restores the registry itself: its
  // resources, its database, then its storage; others switch the storage.
  const { database } = manifest;
  const result: SwitchResult =
    database === undefined || profile.restoreRegistry === undefined
      ? await profile.switchStorage(target)
      : await profile.restoreRegistry({
          files: await snapshotFiles(manifest, deps),
          openDump: openDump(manifest, deps, database),
          storage: target,
          saveDatabase: (name, dump) => saveDatabaseBefore(state.runId, name, dump, deps),
          ...(state.rollbackOnFailure
            ? { putBackDatabase: (load) => loadDatabaseBefore(state.runId, deps, load) }
            : {}),
        });
  deps.log.info('registry storage switched', {
    runId: state.runId,
    changed: result.changed,
    bucket: state.target.bucket,
  });
  // Judged against the recorded storage, not the patch call's own read: a
  // patch retried after a lost answer reads the new storage as "previous".
  return {
    changed: !sameStorage(before, target),
    previous: before,
    current: result.current,
    podsBefore: [...recorded.pods],
    switchedAt: result.switchedAt,
    deadline: new Date(deps.now().getTime() + state.rolloutTimeoutSeconds * 1000).toISOString(),
  };
}

export interface RolloutCheck {
  readonly verdict: 'done' | 'failed' | 'waiting';
  readonly ready: number;
  readonly desired: number;
  readonly message: string;
}

/** Step 6 (polled): how far the rollout is; past the deadline a waiting rollout counts as failed. */
export async function checkRollout(
  switched: SwitchOutput,
  deps: WorkflowDeps,
): Promise<RolloutCheck> {
  const status: RolloutStatus = await deps
    .profile()
    .rolloutStatus({ podsBefore: switched.changed ? switched.podsBefore : [] });
  let verdict = judgeRollout(status);
  let message = verdict === 'failed' ? describeRolloutFailure(status) : status.message;
  if (verdict === 'waiting' && deps.now().getTime() > Date.parse(switched.deadline)) {
    verdict = 'failed';
    message = `the registry rollout did not finish by ${switched.deadline}; last seen: ${status.message}`;
  }
  return { verdict, ready: status.ready, desired: status.desired, message };
}

export interface VerifyOutput {
  readonly ok: boolean;
  readonly repositories: number;
  readonly tags: number;
  /** Blobs the snapshot's manifests name, each HEADed through its repository. */
  readonly blobsServed: number;
  readonly blobsChecked: number;
  readonly pulled: number;
  /** The test push, when one was asked for: the repository and the digest the registry accepted. */
  readonly push?: { readonly ok: boolean; readonly repository: string; readonly digest?: string };
  readonly problems: readonly string[];
}

/** Step 7: the registry serves what the snapshot's catalog lists. */
export async function verifyRestore(
  state: Pick<RestoreState, 'snapshotId' | 'pullSample' | 'pushTest'>,
  deps: WorkflowDeps,
): Promise<VerifyOutput> {
  const registry = deps.registry();
  if (registry === undefined) {
    return {
      ok: false,
      repositories: 0,
      tags: 0,
      blobsServed: 0,
      blobsChecked: 0,
      pulled: 0,
      problems: [
        'no registry URL is configured, so the restored registry cannot be checked; set registryUrl',
      ],
    };
  }
  const catalog = await getJson(
    deps.vault,
    vaultKeys.catalog(rootOf(deps.vault), state.snapshotId),
    catalogSchema,
  );
  if (catalog === undefined)
    throw new VaultError(`snapshot ${state.snapshotId} has no catalog.json; it cannot be verified`);
  const report = await verifyRegistry(registry, catalog, {
    sample: state.pullSample === 'all' ? Number.POSITIVE_INFINITY : state.pullSample,
    ...(state.pushTest ? { pushTestRepository: 'regvault-verify/push-test' } : {}),
    onProgress: (_done, _total, progress) =>
      deps.progress?.({
        step: 'verify',
        repositories: progress.repositories,
        tags: progress.tags,
        blobs: { done: progress.blobs.checked, total: progress.blobs.total },
      }),
  });
  return {
    ok: report.ok,
    repositories: report.catalog.expected,
    tags: report.tags.checked,
    ...(report.push === undefined
      ? {}
      : {
          push: {
            ok: report.push.ok,
            repository: report.push.repository,
            ...(report.push.digest === undefined ? {} : { digest: report.push.digest }),
          },
        }),
    blobsServed: report.blobs.served,
    blobsChecked: report.blobs.checked,
    pulled: report.pulls.filter((p) => p.ok).length,
    problems: report.problems.slice(0, 20),
  };
}
