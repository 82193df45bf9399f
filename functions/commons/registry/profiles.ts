/**
 * The registry profiles regvault knows, by name: each one's settings schema
 * and how to make it over a kubeconfig. The workflows, the CLI (`--profile`)
 * and the Lambda environment (PROFILE) choose through this table only, so a
 * new flavour is one entry here and one module beside acp.ts.
 *
 * A profile's module is imported on first use: a backup of a bucket given by
 * name never loads the Kubernetes client.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { z } from 'zod';
import { acpSettingsSchema } from './acp-settings.ts';
import { distributionSettingsSchema, harborSettingsSchema } from './distribution-settings.ts';
import type { RegistryProfile } from './profile.ts';
import { quaySettingsSchema } from './quay-settings.ts';

export interface ProfileKind<S extends z.ZodType = z.ZodType> {
  /** What the profile is for, one line (help text, docs). */
  readonly summary: string;
  /** Strict: a misspelt setting would otherwise be dropped and its default used. */
  readonly settingsSchema: S;
  /** The namespace of the Secrets the profile reads keys from, for messages. */
  secretNamespace(settings: z.infer<S>): string;
  /** The profile's `bucketLayout` (profile.ts), known before it is loaded. */
  readonly bucketLayout?: 'quay';
  load(kc: KubeConfig, settings: z.infer<S>): Promise<RegistryProfile>;
}

/** Keeps each entry's settings type tied to its own schema. */
const kind = <S extends z.ZodType>(entry: ProfileKind<S>): ProfileKind => entry as ProfileKind;

/** A registry run as a Deployment reading a config.yml (./distribution.ts), under `name`. */
const deploymentKind = (
  name: string,
  summary: string,
  settingsSchema: typeof distributionSettingsSchema,
): ProfileKind =>
  kind({
    summary,
    settingsSchema,
    secretNamespace: (settings) => settings.namespace,
    load: async (kc, settings) =>
      (await import('./distribution.ts')).distributionProfile(kc, settings, name),
  });

export const PROFILES = {
  acp: kind({
    summary: "Alauda Container Platform's registry plugin (a ModuleInfo's s3storage)",
    settingsSchema: acpSettingsSchema,
    secretNamespace: (settings) => settings.namespace,
    load: async (kc, settings) => (await import('./acp.ts')).acpProfile(kc, settings),
  }),
  distribution: deploymentKind(
    'distribution',
    "Docker Distribution as a Deployment (the docker-registry chart): its config.yml's storage.s3",
    distributionSettingsSchema,
  ),
  harbor: deploymentKind(
    'harbor',
    "Harbor's registry component (the Harbor chart): its config.yml's storage.s3 and S3 keys Secret",
    harborSettingsSchema,
  ),
  quay: kind({
    summary:
      "Red Hat Quay run by its operator (a QuayRegistry's config bundle storage, its database dumped through the postgres pod)",
    settingsSchema: quaySettingsSchema,
    secretNamespace: (settings) => settings.namespace,
    bucketLayout: 'quay',
    load: async (kc, settings) => (await import('./quay.ts')).quayProfile(kc, settings),
  }),
} satisfies Record<string, ProfileKind>;

export type ProfileName = keyof typeof PROFILES;
export const PROFILE_NAMES = Object.keys(PROFILES) as [ProfileName, ...ProfileName[]];
export const DEFAULT_PROFILE: ProfileName = 'acp';

export function isProfileName(name: string): name is ProfileName {
  return Object.hasOwn(PROFILES, name);
}

/** A profile name as a setting takes it: an unknown one is refused naming the ones there are. */
export const profileNameSchema = z.enum(PROFILE_NAMES, {
  error: (issue) =>
    `"${String(issue.input)}" is not a profile regvault knows; give one of ${PROFILE_NAMES.map((n) => `"${n}"`).join(', ')}`,
});
