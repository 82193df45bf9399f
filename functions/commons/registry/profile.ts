/**
 * The registry-side interface the workflows use. One implementation per
 * registry flavour (ACP's ModuleInfo first; plain Distribution and Quay
 * later), so the workflows never change when a flavour is added.
 */
import { z } from 'zod';
import type { RequiredObject } from '../cluster/resources-select.ts';
import { InputError } from '../errors.ts';

export const claimRefSchema = z.strictObject({
  claimName: z.string().min(1),
  namespace: z.string().min(1),
  /** The directory inside the volume the registry's rootdirectory is ('' for the volume's root). */
  subPath: z.string(),
});
/** A PersistentVolumeClaim that holds a registry's filesystem storage (`docker/registry/v2/` under it). */
export type ClaimRef = z.infer<typeof claimRefSchema>;

/**
 * Where a registry keeps its data and which Secret holds the keys. A
 * registry on a PVC (the filesystem driver) has `claim`, and its S3 fields
 * are '': the S3 shape stays the default, so code that knows only buckets
 * reads it as before and code that must tell them apart asks `claim`.
 */
export interface StorageRef {
  readonly bucket: string;
  /** Empty for AWS S3. */
  readonly regionEndpoint: string;
  readonly region: string;
  readonly secretName: string;
  /** The driver's root directory in the bucket ('' when unset). */
  readonly rootDirectory: string;
  /** Set when the blobs are on a PVC instead of a bucket. */
  readonly claim?: ClaimRef;
}

/** True when two storage references name the same place (bucket, endpoint, region, Secret, root). */
/** No storage: what a restore into a namespace without the registry had before. */
export const NO_STORAGE: StorageRef = Object.freeze({
  bucket: '',
  regionEndpoint: '',
  region: '',
  secretName: '',
  rootDirectory: '',
});

export function sameStorage(a: StorageRef, b: StorageRef): boolean {
  return (
    a.bucket === b.bucket &&
    a.regionEndpoint === b.regionEndpoint &&
    a.region === b.region &&
    a.secretName === b.secretName &&
    a.rootDirectory === b.rootDirectory &&
    a.claim?.claimName === b.claim?.claimName &&
    a.claim?.namespace === b.claim?.namespace &&
    a.claim?.subPath === b.claim?.subPath
  );
}

/** Keys read from the Secret; kept in memory only, never serialised. */
export interface StorageKeys {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

export interface DiscoveredRegistry {
  /** The custom resource's name (e.g. the ModuleInfo). */
  readonly resourceName: string;
  readonly resourceVersion: string;
  readonly storage: StorageRef;
}

export interface CapturedFile {
  /** File name under the snapshot's `cluster/` folder. */
  readonly name: string;
  readonly yaml: string;
}

/** The result of switching storage: what was there before, for rollback and rollout tracking. */
export interface SwitchResult {
  readonly changed: boolean;
  readonly resourceName: string;
  readonly previous: StorageRef;
  readonly current: StorageRef;
  /** Registry pods that existed before the switch (the rollout must replace them). */
  readonly podsBefore: readonly string[];
  readonly switchedAt: string;
}

export interface PodState {
  readonly name: string;
  readonly ready: boolean;
  readonly phase: string;
  readonly reason?: string;
  readonly createdAt?: string;
}

export interface RolloutStatus {
  readonly done: boolean;
  readonly ready: number;
  readonly desired: number;
  readonly newPods: readonly PodState[];
  readonly oldPods: readonly string[];
  /** Log lines of new pods that match a storage error pattern: the rollout has failed. */
  readonly storageErrors: ReadonlyArray<{ pod: string; line: string }>;
  readonly message: string;
}

/**
 * What quiescing a registry changed, as the profile will need it to undo
 * exactly that (JSON: it is kept in the run's files in the vault, so any
 * later step, also the failure path, can resume the registry).
 */
export interface QuiesceRecord {
  /** One line for logs and results: what was stopped. */
  readonly summary: string;
  /** The profile's own record of the values it changed (no secrets). */
  readonly undo: unknown;
}

/** A database dump being read from the registry's database. */
export interface DatabaseDump {
  /** The database's name. */
  readonly database: string;
  readonly stream: AsyncIterable<Buffer>;
  /** Resolves when the dump command ended well; rejects, naming why, when it failed. */
  readonly finished: Promise<void>;
}

/**
 * A live tag as the registry's database records it (Quay keeps its
 * manifests and tags there, not in the bucket): the manifest it points at
 * and every blob that manifest needs (its config and layers, and those of
 * the manifests an index lists).
 */
export interface DatabaseTag {
  /** `namespace/name`. */
  readonly repository: string;
  readonly tag: string;
  readonly manifest: string;
  readonly blobs: readonly string[];
}

/** What a restore applies from the snapshot before the registry serves the target (Quay). */
export interface RegistryRestore {
  /** The snapshot's captured files (cluster/), by name. */
  readonly files: readonly CapturedFile[];
  /** The snapshot's database dump, opened when the profile is ready to load it. */
  openDump(): Promise<AsyncIterable<Buffer>>;
  readonly storage: StorageRef;
  /**
   * Keeps the target's database as it is before the snapshot's replaces it,
   * for a rollback: `dump` is started only when nothing is kept yet for this
   * run (a retried step keeps the first). Resolves once it is stored.
   */
  saveDatabase?(database: string, dump: () => DatabaseDump): Promise<void>;
  /**
   * When the restore fails after `saveDatabase` kept a database: loads it
   * back with `load` while the registry is still quiesced, so that it never
   * resumes on a database the failed load dropped. Absent when rollback was
   * not asked for. Says what it did; undefined when nothing was kept.
   */
  putBackDatabase?(load: DatabaseLoad): Promise<{ ok: boolean; detail: string } | undefined>;
}

/** Replaces a database with a dump's text (`open` streams it). */
export type DatabaseLoad = (
  database: string,
  open: () => Promise<AsyncIterable<Buffer>>,
) => Promise<void>;

export interface RegistryProfile {
  readonly name: string;
  discover(): Promise<DiscoveredRegistry>;
  readStorageKeys(secretName: string): Promise<StorageKeys>;
  captureConfig(options: { includeSecret: boolean }): Promise<CapturedFile[]>;
  /** The objects that run the registry, captured with the cluster's objects whatever the selection. */
  requiredObjects(): Promise<RequiredObject[]>;
  switchStorage(next: StorageRef): Promise<SwitchResult>;
  rolloutStatus(switched: Pick<SwitchResult, 'podsBefore'>): Promise<RolloutStatus>;
  /**
   * Optional, for registries that keep state beside the bucket (Quay's
   * database): what quiescing would change, read before anything changes;
   * undefined when there is nothing to stop.
   */
  planQuiesce?(): Promise<QuiesceRecord | undefined>;
  /** Stops the registry's writers as `plan` says and waits until they are gone. */
  quiesce?(plan: QuiesceRecord): Promise<void>;
  /** Undoes exactly what `plan` recorded and waits until the registry serves again. */
  unquiesce?(plan: QuiesceRecord): Promise<string>;
  /** Starts a dump of the registry's database; undefined when it has none. */
  dumpDatabase?(): Promise<DatabaseDump | undefined>;
  /**
   * The layout of the registry's bucket when it is not Docker
   * Distribution's: `quay` (blobs by digest under the storage path, the
   * references in the database). The backup plans and copies by it
   * (registry/quay-copy-policy.ts) and takes its catalog from `databaseTags`.
   */
  readonly bucketLayout?: 'quay';
  /**
   * The live tags from the registry's database, read while it is quiesced
   * (after the dump, so both say the same): the snapshot's catalog, and the
   * blobs the backup must hold.
   */
  databaseTags?(): Promise<DatabaseTag[]>;
  /**
   * Restores the registry itself from a snapshot (its resources, quiesced;
   * its database; its storage pointed at `storage`; then resumed), where
   * other profiles only switch storage.
   */
  restoreRegistry?(restore: RegistryRestore): Promise<SwitchResult>;
  /**
   * Puts a database back from a dump (a rollback of a restore that replaced
   * it): the registry quiesced, the database replaced, the registry resumed.
   */
  loadDatabase?: DatabaseLoad;
}

/**
 * The registry's own resource is not in the cluster (a restore into a new
 * namespace or cluster, before it applies the snapshot's): bad input for a
 * backup, the expected start for a profile that restores the registry itself.
 */
export class RegistryMissingError extends InputError {}
