/**
 * The `distribution` and `harbor` profiles' settings: where the registry's
 * Deployment and its `config.yml` are. Apart from the profile so that
 * reading them loads no Kubernetes client.
 */
import { z } from 'zod';
import { secretKeyNamesSchema } from './storage-keys.ts';
import { storageErrorPatternsSchema } from './workload-settings.ts';

const settingsFor = (defaults: {
  namespace: string;
  deployment: string;
  checksumAnnotation: string;
  container?: string;
  configMap?: string;
}) =>
  z.strictObject({
    namespace: z.string().min(1).default(defaults.namespace),
    /** The registry's Deployment. */
    deployment: z.string().min(1).default(defaults.deployment),
    /** The registry container; the template's first container when unset. */
    container: z
      .string()
      .min(1)
      .optional()
      .transform((v) => v ?? defaults.container),
    /**
     * The ConfigMap (or Secret, `configSecret`) holding config.yml; when both
     * are unset, the one the container mounts at /etc/docker/registry.
     */
    configMap: z
      .string()
      .min(1)
      .optional()
      .transform((v) => v ?? defaults.configMap),
    configSecret: z.string().min(1).optional(),
    configKey: z.string().min(1).default('config.yml'),
    /** The pod template annotation a switch sets to the new config's sha256, which rolls the pods. */
    checksumAnnotation: z.string().min(1).default(defaults.checksumAnnotation),
    /** The registry's Service, captured with it; the Deployment's name when unset. */
    service: z.string().min(1).optional(),
    secretKeyNames: secretKeyNamesSchema,
    storageErrorPatterns: storageErrorPatternsSchema,
  });

/** The docker-registry chart (twuni/helm) and plain Deployments: release `docker-registry` in `registry`. */
export const distributionSettingsSchema = settingsFor({
  namespace: 'registry',
  deployment: 'docker-registry',
  checksumAnnotation: 'checksum/config',
});

/** The Harbor chart's registry component: release `harbor` in `harbor`. */
export const harborSettingsSchema = settingsFor({
  namespace: 'harbor',
  deployment: 'harbor-registry',
  checksumAnnotation: 'checksum/configmap',
  // The chart mounts it at /etc/registry/config.yml, beside the registryctl container.
  container: 'registry',
  configMap: 'harbor-registry',
});

export type DistributionSettings = z.infer<typeof distributionSettingsSchema>;
