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
import type { Found } from './detect.ts';
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
  /**
   * A profile that stops the registry for a backup (quiesce, database dump,
   * resume inside discover, finalize and the failure paths): the longest its
   * quiesce or its resume may wait, in seconds. The stack gives those steps
   * the cluster identity that may write, and the time, when it is set.
   */
  quiesceWaitSeconds?(settings: z.infer<S>): number;
  load(kc: KubeConfig, settings: z.infer<S>): Promise<RegistryProfile>;
  /** The registry resources of this kind the cluster holds (profile detection, detect.ts). */
  detect(kc: KubeConfig, settings: z.infer<S>): Promise<Found>;
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
    detect: async (kc, settings) => (await import('./detect.ts')).findDeployment(kc, settings),
  });

export const PROFILES = {
  acp: kind({
    summary: "Alauda Container Platform's registry plugin (a ModuleInfo's s3storage)",
    settingsSchema: acpSettingsSchema,
    secretNamespace: (settings) => settings.namespace,
    load: async (kc, settings) => (await import('./acp.ts')).acpProfile(kc, settings),
    detect: async (kc, settings) => (await import('./detect.ts')).findModuleInfos(kc, settings),
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
    quiesceWaitSeconds: (settings) => settings.waitSeconds,
    load: async (kc, settings) => (await import('./quay.ts')).quayProfile(kc, settings),
    detect: async (kc) => (await import('./detect.ts')).findQuayRegistries(kc),
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

/** What detection saw: the profiles whose resources were found, and the reads the cluster refused. */
export interface Detection {
  readonly found: ReadonlyArray<{
    readonly profile: ProfileName;
    readonly resources: readonly string[];
  }>;
  readonly refused: readonly string[];
}

/**
 * Looks for every profile's registry resources in the cluster, each with
 * its default settings unless `settings` (a config file's profileSettings)
 * parse as that profile's.
 */
export async function detectProfiles(
  kc: KubeConfig,
  settings: Readonly<Record<string, unknown>> = {},
): Promise<Detection> {
  const looks = await Promise.all(
    PROFILE_NAMES.map(async (profile) => {
      const kind: ProfileKind = PROFILES[profile];
      const given = kind.settingsSchema.safeParse(settings);
      const parsed = given.success ? given.data : kind.settingsSchema.parse({});
      return { profile, ...(await kind.detect(kc, parsed)) };
    }),
  );
  return {
    found: looks
      .filter((l) => l.resources.length > 0)
      .map(({ profile, resources }) => ({ profile, resources })),
    refused: looks.flatMap((l) => (l.refused === undefined ? [] : [l.refused])),
  };
}
