/**
 * The profile when none is given: no `--profile`, REGVAULT_PROFILE or
 * `profile` in the config file (and no `--module-info`, which is ACP's).
 * The cluster is asked which registry resources it holds
 * (registry/profiles.ts `detectProfiles`): one kind found is that profile,
 * said in the output; none keeps the default (acp) and its own errors;
 * several is bad input before anything runs, naming what was found.
 */
import { InputError } from '../functions/commons/errors.ts';
import { run } from './context.ts';
import type { KubeconfigChoice } from './deps.ts';
import type { Settings } from './settings.ts';

/** Where detection reports the profile it chose. */
export interface DetectionOutput {
  event(event: string, text: string, fields?: Record<string, unknown>): void;
}

/** `settings` with the profile the cluster shows when none was given; unchanged otherwise. */
export async function withDetectedProfile(
  settings: Settings,
  kubeconfig: KubeconfigChoice | undefined,
  out: DetectionOutput,
): Promise<Settings> {
  if (run.origins.profile !== undefined || settings.moduleInfo !== undefined) return settings;
  if (kubeconfig === undefined) return settings;
  const [{ loadKubeConfig }, { detectProfiles }] = await Promise.all([
    import('../functions/commons/cluster/kube.ts'),
    import('../functions/commons/registry/profiles.ts'),
  ]);
  // Several files in $KUBECONFIG: no path, so client-node merges that list (as depsFor does).
  const path = kubeconfig.paths.length > 1 ? undefined : kubeconfig.paths[0];
  const kc = loadKubeConfig({
    ...(path === undefined ? {} : { path }),
    ...(settings.context === undefined ? {} : { context: settings.context }),
  });
  const { found, refused } = await detectProfiles(kc, settings.profileSettings);
  if (refused.length > 0)
    out.event(
      'warning',
      `profile detection could not look everywhere (${refused.join('; ')}); give --profile to choose without it`,
      { refused },
    );
  const only = found[0];
  if (found.length === 0 || only === undefined) return settings;
  if (found.length > 1)
    throw new InputError('the cluster runs more than one kind of registry regvault knows', [
      `--profile: not given, and the cluster holds ${found.map((f) => `${f.resources.join(', ')} (profile ${f.profile})`).join('; ')}; give --profile ${found.map((f) => f.profile).join(' or --profile ')} (or REGVAULT_PROFILE, or profile in the config file) to say which registry to work on`,
    ]);
  out.event('profile', `profile ${only.profile} detected: ${only.resources.join(', ')}`, {
    profile: only.profile,
    resources: only.resources,
  });
  return { ...settings, profile: only.profile };
}
