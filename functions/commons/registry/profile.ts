/**
 * The registry-side interface the workflows use. One implementation per
 * registry flavour (ACP's ModuleInfo first; plain Distribution and Quay
 * later), so the workflows never change when a flavour is added.
 */
import { z } from 'zod';
import type { RequiredObject } from '../cluster/resources-select.ts';

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

/** Keys read from the Secret; kept in memory only, never serialised. */
/** True when two storage references name the same place (bucket, endpoint, region, Secret, root). */
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

export interface RegistryProfile {
  readonly name: string;
  discover(): Promise<DiscoveredRegistry>;
  readStorageKeys(secretName: string): Promise<StorageKeys>;
  captureConfig(options: { includeSecret: boolean }): Promise<CapturedFile[]>;
  /** The objects that run the registry, captured with the cluster's objects whatever the selection. */
  requiredObjects(): Promise<RequiredObject[]>;
  switchStorage(next: StorageRef): Promise<SwitchResult>;
  rolloutStatus(switched: Pick<SwitchResult, 'podsBefore'>): Promise<RolloutStatus>;
}
