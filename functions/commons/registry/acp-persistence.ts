/**
 * The ACP ModuleInfo's `spec.config.persistence` block: a registry whose
 * blobs are on a PersistentVolumeClaim (the filesystem driver) instead of a
 * bucket. The ACP guide (seed 000) names the block and no field; regvault
 * reads it as the Docker Distribution chart spells its own `persistence`:
 *
 * - `spec.config.storageType`, when the ModuleInfo has it, decides: `s3` is
 *   the bucket, anything else the claim (a switch writes `persistence` or
 *   `s3`); without it, `persistence.enabled: true` means the registry is on
 *   the claim (a ModuleInfo that also carries `s3storage` is then on the
 *   claim, not the bucket);
 * - the claim's name is `existingClaim` (the chart's), or `claimName` or
 *   `pvcName`; a switch writes back the field it found (`existingClaim` when
 *   there was none);
 * - `subPath`, when set, is the directory inside the volume the registry
 *   keeps `docker/registry/v2/` under;
 * - the claim is in the profile's namespace (the registry's).
 *
 * Anything else in the block (size, storageClass, accessMode) is left as it is.
 */
import { ClusterError } from '../errors.ts';
import type { ClaimRef } from './profile.ts';

/** Field names accepted for the claim's name, in order of preference. */
export const CLAIM_NAME_FIELDS = ['existingClaim', 'claimName', 'pvcName'] as const;

const textOf = (block: Record<string, unknown>, key: string): string | undefined =>
  typeof block[key] === 'string' && block[key] !== '' ? block[key] : undefined;

/**
 * The claim a ModuleInfo's persistence block puts the registry on, or
 * undefined when it is not enabled (the registry is on its bucket).
 */
export function claimOfPersistence(
  resourceName: string,
  config: { readonly persistence?: unknown; readonly storageType?: unknown } | undefined,
  namespace: string,
): ClaimRef | undefined {
  const block = config?.persistence;
  const fields =
    typeof block === 'object' && block !== null ? (block as Record<string, unknown>) : {};
  const storageType = typeof config?.storageType === 'string' ? config.storageType : undefined;
  if (storageType === undefined ? fields['enabled'] !== true : storageType === 's3')
    return undefined;
  const claimName = CLAIM_NAME_FIELDS.map((k) => textOf(fields, k)).find((v) => v !== undefined);
  if (claimName === undefined)
    throw new ClusterError(
      `ModuleInfo ${resourceName} keeps the registry on a volume (${storageType === undefined ? 'spec.config.persistence.enabled' : `spec.config.storageType ${storageType}`}) and names no claim; set spec.config.persistence.existingClaim to the registry's PersistentVolumeClaim (kubectl edit moduleinfo ${resourceName})`,
    );
  return { claimName, namespace, subPath: textOf(fields, 'subPath') ?? '' };
}

/**
 * What the merge patch of `spec.config` sets besides `s3storage` to put the
 * registry on `next` (a claim), or on its bucket (`next` undefined: the same
 * patch writes `s3storage`).
 */
export function persistencePatch(
  config: { readonly persistence?: unknown; readonly storageType?: unknown } | undefined,
  next: ClaimRef | undefined,
): Record<string, unknown> {
  const current = config?.persistence;
  const fields =
    typeof current === 'object' && current !== null ? (current as Record<string, unknown>) : {};
  const typed = typeof config?.storageType === 'string';
  if (next === undefined)
    return {
      ...(fields['enabled'] === true ? { persistence: { enabled: false } } : {}),
      ...(typed ? { storageType: 's3' } : {}),
    };
  const claimField =
    CLAIM_NAME_FIELDS.find((k) => textOf(fields, k) !== undefined) ?? 'existingClaim';
  return {
    persistence: {
      enabled: true,
      [claimField]: next.claimName,
      ...(next.subPath !== '' || textOf(fields, 'subPath') !== undefined
        ? { subPath: next.subPath }
        : {}),
    },
    ...(typed ? { storageType: 'persistence' } : {}),
  };
}
