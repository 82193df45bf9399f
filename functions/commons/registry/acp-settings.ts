/**
 * The `acp` profile's settings (resource names, selectors, log patterns),
 * apart from the profile so that reading them does not load the Kubernetes
 * client: a backup of a bucket given by name never needs the cluster.
 */
import { z } from 'zod';
import { secretKeyNamesSchema } from './storage-keys.ts';
import { storageErrorPatternsSchema } from './workload-settings.ts';

/** Strict: a misspelt setting (`namespce`) would otherwise be dropped and its default used. */
export const acpSettingsSchema = z.strictObject({
  /**
   * The ModuleInfo's API group and version: found through the cluster's API
   * discovery when unset (ACP's `cluster.alauda.io` tried first); set them
   * to use only that group (and version).
   */
  group: z.string().min(1).optional(),
  version: z.string().min(1).optional(),
  plural: z.string().default('moduleinfos'),
  /** A ModuleInfo name; when unset the label selector must match exactly one. */
  moduleInfoName: z.string().optional(),
  labelSelector: z.string().default('cpaas.io/module-name=image-registry'),
  namespace: z.string().default('cpaas-system'),
  podSelector: z.string().default('app=image-registry'),
  container: z.string().default('registry'),
  deployment: z.string().default('image-registry'),
  service: z.string().default('image-registry'),
  /** The Secret's data keys holding the S3 keys (storage-keys.ts). */
  secretKeyNames: secretKeyNamesSchema,
  /** Log lines of new registry pods that mean the storage is wrong. */
  storageErrorPatterns: storageErrorPatternsSchema,
});
/** The group ACP serves ModuleInfo in; discovery looks there first. */
export const ACP_GROUP = 'cluster.alauda.io';

export type AcpSettings = z.infer<typeof acpSettingsSchema>;
