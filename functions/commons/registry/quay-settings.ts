/**
 * The `quay` profile's settings, apart from the profile so that reading them
 * does not load the Kubernetes client.
 */
import { z } from 'zod';

/** Strict: a misspelt setting would otherwise be dropped and its default used. */
export const quaySettingsSchema = z.strictObject({
  /** The namespace of the QuayRegistry (and of its config bundle, pods and Secrets). */
  namespace: z.string().min(1).default('quay-enterprise'),
  /** The QuayRegistry's name; when unset the namespace must hold exactly one. */
  name: z.string().min(1).optional(),
  /** Before Quay 3.7: where the operator's Deployment (`quay-operator…`) runs, scaled to 0 to quiesce. */
  operatorNamespace: z.string().min(1).default('openshift-operators'),
  /** How long quiescing and resuming wait for pods to go and for `Available=True`. */
  waitSeconds: z.number().int().min(5).max(3_600).default(600),
  /** Log lines of new quay-app pods that mean the storage is wrong. */
  storageErrorPatterns: z
    .array(z.string())
    .default(['NoSuchBucket', 'AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch']),
});
export type QuaySettings = z.infer<typeof quaySettingsSchema>;
