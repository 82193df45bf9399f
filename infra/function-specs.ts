/**
 * Sizing and access of every regvault Lambda function: one row per function of
 * the step table, which the stack builds from `functions/<name>.ts`.
 */
import { Duration } from 'aws-cdk-lib';
// Types only: infra reaches the functions' code through their entry files alone.
import type { FunctionName } from '../functions/commons/workflows/steps.ts';

/**
 * The vault's top-level folders (`vaultKeys` in functions/commons/vault/format.ts):
 * the blob pool, the snapshots (manifests, inventories, catalogs, the
 * objects of each), the runs' working files, and the backup run leases.
 * Each function is granted only the folders its step touches, each at its
 * own level; test/infra/vault-prefixes.test.ts records which folders every
 * step reaches in a local backup, restore and prune, and checks these rows
 * cover them.
 */
export const VAULT_FOLDERS = ['blobs', 'snapshots', 'runs', 'locks'] as const;
export type VaultFolder = (typeof VAULT_FOLDERS)[number];

// Server-side copies carry the source's tags (both tagging actions), and large ones are multipart (aborts).
const COPY = [
  's3:GetObject',
  's3:PutObject',
  's3:AbortMultipartUpload',
  's3:GetObjectTagging',
  's3:PutObjectTagging',
] as const;

/**
 * Vault object actions by what a function does in a folder. A grant also
 * lists the vault prefix: without s3:ListBucket S3 answers a missing key
 * with 403 instead of 404, and the vault reads treat 404 as "absent".
 */
export const VAULT_ACTIONS = {
  read: ['s3:GetObject'],
  // A large snapshot's inventory is a multipart upload, aborted if finalize fails.
  write: ['s3:GetObject', 's3:PutObject', 's3:AbortMultipartUpload'],
  // Retention reads manifests and inventories, then deletes; it writes nothing.
  prune: ['s3:GetObject', 's3:DeleteObject'],
  // The copy worker's objects of a snapshot, read on restore and written on backup.
  copy: COPY,
  // The blob pool: also deletes a copy whose checksum disproves the blob's digest.
  pool: [...COPY, 's3:DeleteObject'],
} as const satisfies Record<string, readonly string[]>;
type VaultAccess = keyof typeof VAULT_ACTIONS;

/**
 * Object actions on the deployer's `roleBucketNames` (plain backup sources and
 * restore targets the functions reach with their own role); every level but
 * `none` also lists the buckets.
 */
export const ROLE_BUCKET_ACTIONS = {
  none: [],
  // Discovery and planning list a backup source.
  list: [],
  // The proof lists a restore target and reads back the blobs it hashes.
  read: ['s3:GetObject'],
  // Preflight writes one probe object into a restore target and deletes it.
  probe: ['s3:PutObject', 's3:DeleteObject'],
  // The copy worker reads sources and writes targets, deleting a blob whose checksum disproves its digest.
  copy: VAULT_ACTIONS.pool,
} as const satisfies Record<string, readonly string[]>;
type RoleBucketAccess = keyof typeof ROLE_BUCKET_ACTIONS;

/**
 * Object actions on the deployer's `registryBucketNames` (registry buckets on
 * AWS S3 read with the role); every level but `none` also lists the buckets.
 */
export const REGISTRY_BUCKET_ACTIONS = {
  none: [],
  // Discovery and planning list the registry's bucket.
  list: [],
  // The copy worker's CopyObject reads the source object and its tags.
  read: ['s3:GetObject', 's3:GetObjectTagging'],
} as const satisfies Record<string, readonly string[]>;
type RegistryBucketAccess = keyof typeof REGISTRY_BUCKET_ACTIONS;

/** Which of regvault's two cluster identities a function uses, if any. */
export type ClusterAccess = 'none' | 'read' | 'patch';

/** One function's row: its size, and what it may reach. */
export interface FunctionSpec {
  readonly description: string;
  readonly timeout: Duration;
  readonly memorySize: number;
  /**
   * Calls the cluster API: the registry profile, or bucket keys read from the
   * registry's storage Secret (any location with `registry-secret:` access),
   * as the read identity; `patch`: also switches the registry's storage, as
   * the patch identity (switch and rollback only). Only these get a
   * kubeconfig secret, each its identity's.
   */
  readonly cluster: ClusterAccess;
  /**
   * Runs a quiescing profile's work when the stack's profile is one (quay:
   * `quiesceWaitSeconds` in functions/commons/registry/profiles.ts): discover
   * quiesces and dumps the database, finalize and the failure paths resume,
   * switch and rollback load a database. With such a profile the row calls
   * the cluster as the patch identity and has `QUIESCE_BUDGET.seconds`
   * (`forProfile`); with any other, this flag changes nothing.
   */
  readonly quiesces?: true;
  /** Calls the registry API (verification): only these get the registry login. */
  readonly registryApi: boolean;
  /** What it does in each vault folder it touches; a folder not named is out of its reach. */
  readonly vault: Readonly<Partial<Record<VaultFolder, VaultAccess>>>;
  readonly roleBuckets: RoleBucketAccess;
  /** `registryBucketNames`: backup sources read with the role. Absent: none. */
  readonly registryBuckets?: RegistryBucketAccess;
  /**
   * Backup run leases (`locks/*`): `renew` writes one, `release` also deletes
   * one (the steps that end a run), beside what `vault.locks` allows (reading them).
   */
  readonly runLease?: 'renew' | 'release';
}

/** Vault only: the workers' records in, inventory, catalog and manifest out. */
const FINALIZE = {
  description: 'Backup: inventory, catalog, checks, and the manifest written last',
  timeout: Duration.minutes(15),
  memorySize: 3008,
  cluster: 'none',
  registryApi: false,
  vault: { snapshots: 'write', runs: 'read', locks: 'read' },
  roleBuckets: 'none',
  // Deletes the run's lease once the manifest is final.
  runLease: 'release',
  // Resumes what discover quiesced, first.
  quiesces: true,
} as const satisfies FunctionSpec;

/** Small vault writers that end what died, a minute at most. */
const RUN_FILE_WRITER = {
  timeout: Duration.minutes(1),
  memorySize: 512,
  cluster: 'none',
  registryApi: false,
  roleBuckets: 'none',
} as const;

/** The fan-out steps: the vault's run files only (the job, the results listed), no cluster. */
const FAN_OUT = {
  memorySize: 1024,
  cluster: 'none',
  registryApi: false,
  vault: { runs: 'read' },
  roleBuckets: 'none',
} as const;

/**
 * One entry per Lambda function of the step table
 * (`functions/commons/workflows/steps.ts`: its steps and its other functions),
 * each built from `functions/<name>.ts`; the typecheck fails when the table
 * gains or loses a function this table does not. Steps whose work grows with the
 * registry (listing, inventory, verification, rollout waits) get the 900 s the
 * ASL allows them; the others stay short so a hang fails fast. The access
 * columns follow what each handler's step calls in `functions/commons/workflows/`.
 */
export const FUNCTIONS = {
  // Reads the registry's storage from the cluster, lists the source, writes the cluster files and manifest.
  discover: {
    description:
      'Backup: validate the input, read the registry storage from the cluster, capture its config',
    timeout: Duration.minutes(5),
    memorySize: 1024,
    cluster: 'read',
    registryApi: false,
    // The snapshot's running manifest and cluster files; it takes the run's lease.
    vault: { snapshots: 'write', locks: 'read' },
    runLease: 'renew',
    roleBuckets: 'list',
    registryBuckets: 'list',
    // Quiesces the registry, streams its database dump, reads its live tags.
    quiesces: true,
  },
  // Lists the source (keys from the registry Secret) and writes the run's job.
  plan: {
    description: 'Backup: split the source bucket into shards and write the run job',
    timeout: Duration.minutes(15),
    memorySize: 1024,
    cluster: 'read',
    registryApi: false,
    // The run's job; the previous snapshot's manifest and its run's job (a
    // registry plans with the last backup's shards); it renews the run's lease.
    vault: { snapshots: 'read', runs: 'write', locks: 'read' },
    runLease: 'renew',
    roleBuckets: 'list',
    registryBuckets: 'list',
  },
  // Reads the run's job and lists its results (a re-run sends only what has
  // not ended), then sends one copy message per shard, ten to a request.
  'enqueue-shards': {
    ...FAN_OUT,
    description: "Backup and restore: send one copy message per shard of the run's job",
    timeout: Duration.minutes(5),
  },
  // Reads the run's job (once per container) and lists its results; the ASL gives it 120 s.
  'count-shards': {
    ...FAN_OUT,
    description: "Backup and restore: count the run's shards that have ended",
    timeout: Duration.minutes(1),
    // Each count renews a backup's run lease.
    vault: { runs: 'read', locks: 'read' },
    runLease: 'renew',
  },
  finalize: FINALIZE,
  // Finalizes with the error, so the same vault access, time and memory as
  // finalize: a Lambda timeout is no exception its fallback could catch, and a
  // snapshot whose failure path timed out would keep its running manifest.
  'mark-failed': { ...FINALIZE, description: 'Backup: mark the snapshot failed with the cause' },
  // Reads the snapshot's manifest and writes nothing: the run's job is the
  // preflight's, after every check. It only asks whether a registry URL is
  // set; it never calls the registry.
  resolve: {
    description: 'Restore: validate the input and resolve a complete snapshot',
    timeout: Duration.minutes(5),
    memorySize: 1024,
    cluster: 'none',
    registryApi: false,
    vault: { snapshots: 'read' },
    roleBuckets: 'none',
  },
  // Every check before the restore writes: the cluster (registry resource, the
  // target's Secret), the target (empty, a probe written and deleted), the
  // snapshot (fsck's plain check: the inventory, tag links and manifests read,
  // the vault listed); then the run's job. Sized like prove for the inventory.
  preflight: {
    description: 'Restore: check the cluster, the target and the snapshot, then write the run job',
    timeout: Duration.minutes(15),
    memorySize: 3008,
    cluster: 'read',
    registryApi: false,
    // fsck's plain check reads the snapshot and heads pool blobs; then the run's job.
    vault: { snapshots: 'read', blobs: 'read', runs: 'write' },
    roleBuckets: 'probe',
  },
  // Reads the snapshot inventory and the run's records, lists the target and
  // hashes the blobs the copy did not check (streamed, bounded memory).
  prove: {
    description: 'Restore: prove the target (objects, references, blob digests) before the switch',
    timeout: Duration.minutes(15),
    memorySize: 3008,
    cluster: 'read',
    registryApi: false,
    // It records its proof in the run.
    vault: { snapshots: 'read', runs: 'write' },
    roleBuckets: 'read',
  },
  // Records the registry's storage in the run before it patches (runs/<id>/registry-before.json);
  // reads the snapshot's manifest, and for a profile that restores the registry itself (quay)
  // its captured objects and database dump.
  switch: {
    description: 'Restore: point the registry storage at the restored bucket',
    timeout: Duration.minutes(2),
    memorySize: 1024,
    cluster: 'patch',
    registryApi: false,
    vault: { snapshots: 'read', runs: 'write' },
    roleBuckets: 'none',
    // Quiesces, keeps the target's database, loads the snapshot's.
    quiesces: true,
  },
  // The ASL gives CheckRollout 120 s; the function must end before that.
  'rollout-status': {
    description: 'Restore: how far the registry rollout is',
    timeout: Duration.minutes(1),
    memorySize: 1024,
    cluster: 'read',
    registryApi: false,
    vault: {},
    roleBuckets: 'none',
  },
  // Reads the snapshot catalog and pulls (or pushes) through the registry API.
  verify: {
    description: 'Restore: the registry serves what the snapshot catalog lists',
    timeout: Duration.minutes(15),
    memorySize: 1024,
    cluster: 'none',
    registryApi: true,
    vault: { snapshots: 'read' },
    roleBuckets: 'none',
  },
  // Reads what the switch recorded, for a switch that failed after its patch applied.
  rollback: {
    description: 'Restore: roll the registry back when asked, wait for it, and say what failed',
    timeout: Duration.minutes(15),
    memorySize: 1024,
    cluster: 'patch',
    registryApi: false,
    vault: { runs: 'read' },
    roleBuckets: 'none',
    // Loads back the database the switch kept, quiesced.
    quiesces: true,
  },
  // Backup: source (registry Secret keys) -> vault; restore: vault -> target (keys from the cluster).
  // Its timeout is the stack's copyWorkerTimeoutSeconds (this is the default).
  'copy-worker': {
    description: 'Copy worker: copy part of a shard, hand the rest on, write its result at the end',
    timeout: Duration.minutes(15),
    memorySize: 2048,
    cluster: 'read',
    registryApi: false,
    // Blobs into (backup) and out of (restore) the pool, the other objects
    // into and out of their snapshot, the shard's records and result into the run.
    vault: { blobs: 'pool', snapshots: 'copy', runs: 'write' },
    roleBuckets: 'copy',
    registryBuckets: 'read',
  },
  // Ends the shard a dead letter names: reads the run's job and the shard's
  // result, writes its record file and result as aborted (and a link shard's
  // listed marker, which the blob shards wait for).
  'dead-letter': {
    ...RUN_FILE_WRITER,
    description: 'End the shard of a copy message the workers gave up on, as aborted, with why',
    vault: { runs: 'write' },
  },
  // The EventBridge rule on a backup execution that was aborted, timed out or
  // failed: finds the run's lease by the execution, marks its snapshot failed
  // (the manifest rewritten) and deletes the lease.
  'end-dead-run': {
    ...RUN_FILE_WRITER,
    description: 'End the backup run of an execution that was aborted, timed out or failed',
    vault: { snapshots: 'write', locks: 'read' },
    runLease: 'release',
    // Resumes what the dead run quiesced.
    quiesces: true,
  },
  // Retention: deletes expired snapshots and the vault objects no snapshot uses any more.
  prune: {
    description: 'Retention: delete expired snapshots, then sweep vault objects no snapshot uses',
    timeout: Duration.minutes(15),
    memorySize: 3008,
    cluster: 'none',
    registryApi: false,
    // Live runs' leases are read, never deleted: a running backup's objects are kept.
    vault: { snapshots: 'prune', runs: 'prune', blobs: 'prune', locks: 'read' },
    roleBuckets: 'none',
  },
} as const satisfies Record<FunctionName, FunctionSpec>;

/**
 * The time a quiescing row gets (Lambda's most), and what of it discover keeps
 * for the database dump and the live tags after its quiesce wait: a profile
 * whose quiesce may wait longer than `seconds - dumpSeconds` is refused at
 * synth (infra/settings.ts). A failure path's resume needs no share of it:
 * a step that times out while resuming goes to mark-failed, or ends the
 * execution, whose end-dead-run resumes again (each with its own 900 s).
 */
export const QUIESCE_BUDGET = { seconds: 900, dumpSeconds: 300 } as const;

/**
 * A row as the stack builds it for its profile: a quiescing row of a
 * quiescing profile calls the cluster as the patch identity, with
 * `QUIESCE_BUDGET.seconds`; every other row is as the table says.
 */
export function forProfile(spec: FunctionSpec, quiescing: boolean): FunctionSpec {
  if (!quiescing || spec.quiesces !== true) return spec;
  return { ...spec, cluster: 'patch', timeout: Duration.seconds(QUIESCE_BUDGET.seconds) };
}

/** `rollout-status` -> `RolloutStatusFunction`, the function's construct id. */
export function functionId(name: FunctionName): string {
  const pascal = name.replace(/(^|-)([a-z])/g, (_match, _dash: string, letter: string) =>
    letter.toUpperCase(),
  );
  return `${pascal}Function`;
}

/** `rollout-status` -> `RolloutStatusFunctionArn`, the placeholder the ASL files use. */
export function functionArnPlaceholder(name: FunctionName): string {
  return `${functionId(name)}Arn`;
}
