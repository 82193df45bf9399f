/**
 * A profile that stops the registry for a backup (quay): the steps that
 * quiesce, dump, load or resume get the cluster identity that may write and
 * Lambda's 900 s; with any other profile they stay as their rows say.
 */
import { describe, expect, it } from '@jest/globals';
import { AwsSolutionsChecks } from 'cdk-nag';
import { FUNCTIONS } from '../../infra/function-specs.ts';
import { parseSettings, SettingsError } from '../../infra/settings.ts';
import {
  actionsOn,
  buildStack,
  environmentOf,
  FULL_CONTEXT,
  type FunctionName,
  lambdaPropsOf,
  PATCH_KUBECONFIG,
  resourcesOf,
  roleArnOf,
} from './support.ts';

const QUAY = { profile: 'quay', profileSettings: '{"namespace":"quay-enterprise"}' } as const;
const quay = buildStack({ ...FULL_CONTEXT, ...QUAY, patchKubeconfigSecretArn: PATCH_KUBECONFIG });
const acp = buildStack({ ...FULL_CONTEXT, patchKubeconfigSecretArn: PATCH_KUBECONFIG });
const quayEks = buildStack({ ...FULL_CONTEXT, ...QUAY, eksClusterName: 'registry-prod' });

/** The steps whose code calls quiesceAndDump, resumeRegistry or the profile's database load. */
const QUIESCING = [
  'discover',
  'finalize',
  'mark-failed',
  'end-dead-run',
  'switch',
  'rollback',
] as const satisfies readonly FunctionName[];
/** The other steps that call the cluster: reads only, whatever the profile. */
const READERS = [
  'plan',
  'preflight',
  'prove',
  'rollout-status',
  'copy-worker',
] as const satisfies readonly FunctionName[];

describe('the quay profile on AWS', () => {
  it('marks exactly the steps that quiesce, dump, load or resume', () => {
    // Act
    const marked = Object.entries(FUNCTIONS)
      .filter(([, spec]) => 'quiesces' in spec && spec.quiesces)
      .map(([name]) => name);

    // Assess
    expect(marked.sort()).toEqual([...QUIESCING].sort());
  });

  it.each(QUIESCING)(
    'gives %s the patch identity kubeconfig, its grant alone, and 900 s',
    (name) => {
      // Act
      const variables = environmentOf(quay, name);

      // Assess
      expect(variables['KUBECONFIG_SECRET_ARN']).toBe(PATCH_KUBECONFIG);
      expect(actionsOn(quay, name, PATCH_KUBECONFIG)).toEqual(['secretsmanager:GetSecretValue']);
      expect(actionsOn(quay, name, FULL_CONTEXT.kubeconfigSecretArn)).toEqual([]);
      expect(lambdaPropsOf(quay, name)['Timeout']).toBe(900);
    },
  );

  it.each(READERS)('leaves %s on the read identity', (name) => {
    // Act
    const variables = environmentOf(quay, name);

    // Assess
    expect(variables['KUBECONFIG_SECRET_ARN']).toBe(FULL_CONTEXT.kubeconfigSecretArn);
    expect(actionsOn(quay, name, PATCH_KUBECONFIG)).toEqual([]);
  });

  it('falls back to the one kubeconfig when no patch identity is given, as switch does', () => {
    // Prepare
    const one = buildStack({ ...FULL_CONTEXT, ...QUAY });

    // Act
    const kubeconfigs = QUIESCING.map((name) => environmentOf(one, name)['KUBECONFIG_SECRET_ARN']);

    // Assess
    expect(new Set(kubeconfigs)).toEqual(new Set([FULL_CONTEXT.kubeconfigSecretArn]));
  });

  it.each(QUIESCING)(
    'maps the role of %s to the regvault-patch group on EKS, in the VPC',
    (name) => {
      // Prepare
      const roleArn = roleArnOf(quayEks, name);

      // Act
      const groups = Object.values(resourcesOf(quayEks.template, 'AWS::EKS::AccessEntry'))
        .map((entry) => entry.Properties)
        .filter((props) => JSON.stringify(props['PrincipalArn']) === roleArn)
        .map((props) => props['KubernetesGroups']);
      const vpc = lambdaPropsOf(quayEks, name)['VpcConfig'];

      // Assess
      expect(groups).toEqual([['regvault-patch']]);
      expect(environmentOf(quayEks, name)['EKS_CLUSTER_NAME']).toBe('registry-prod');
      expect(vpc).toBeDefined();
    },
  );

  it('is cdk-nag clean, with kubeconfigs and with EKS', () => {
    // Act
    const found = [quay, quayEks].flatMap((built) =>
      new AwsSolutionsChecks(undefined, {})
        .validateScope(built.stack)
        .violations.map((violation) => violation.ruleName),
    );

    // Assess
    expect(found).toEqual([]);
  });
});

describe('the acp profile on AWS', () => {
  it.each([
    ['discover', FULL_CONTEXT.kubeconfigSecretArn, 300],
    ['finalize', undefined, 900],
    ['mark-failed', undefined, 900],
    ['end-dead-run', undefined, 60],
    ['switch', PATCH_KUBECONFIG, 120],
    ['rollback', PATCH_KUBECONFIG, 900],
  ] as const)('keeps %s as its row says: kubeconfig %s, %i s', (name, kubeconfig, timeout) => {
    // Act
    const variables = environmentOf(acp, name);

    // Assess
    expect(variables['KUBECONFIG_SECRET_ARN']).toBe(kubeconfig);
    expect(lambdaPropsOf(acp, name)['Timeout']).toBe(timeout);
  });

  it('makes no EKS access entry for finalize, mark-failed or end-dead-run', () => {
    // Prepare
    const eks = buildStack({ ...FULL_CONTEXT, eksClusterName: 'registry-prod' });
    const roles = (['finalize', 'mark-failed', 'end-dead-run'] as const).map((name) =>
      roleArnOf(eks, name),
    );

    // Act
    const entries = Object.values(resourcesOf(eks.template, 'AWS::EKS::AccessEntry')).filter(
      (entry) => roles.includes(JSON.stringify(entry.Properties['PrincipalArn'])),
    );

    // Assess
    expect(entries).toEqual([]);
  });
});

describe("the quay profile's wait at synth", () => {
  const problemsOf = (profileSettings: string): readonly string[] => {
    try {
      parseSettings({ profile: 'quay', profileSettings });
      return [];
    } catch (err) {
      if (err instanceof SettingsError) return err.problems;
      throw err;
    }
  };

  it('refuses a waitSeconds that leaves discover less than 300 s for the dump, naming the fix', () => {
    // Act
    const problems = problemsOf('{"waitSeconds":601}');

    // Assess
    expect(problems).toEqual([
      expect.stringMatching(
        /^profileSettings\.waitSeconds: at most 600 with profile quay \(601 given\): .*900 s.*lower waitSeconds, or back up with the CLI's local runner/,
      ),
    ]);
  });

  it('refuses it in a stack too, before any resource is made', () => {
    // Act / Assess
    expect(() =>
      buildStack({ ...FULL_CONTEXT, profile: 'quay', profileSettings: '{"waitSeconds":900}' }),
    ).toThrow(/profileSettings\.waitSeconds: at most 600/);
  });

  it.each(['{}', '{"waitSeconds":600}', '{"waitSeconds":120}'])(
    'accepts %s (the default wait is 600 s)',
    (profileSettings) => {
      // Act / Assess
      expect(problemsOf(profileSettings)).toEqual([]);
    },
  );

  it('refuses a misspelt quay setting at synth, named', () => {
    // Act
    const problems = problemsOf('{"waitSecond":60}');

    // Assess
    expect(problems).toEqual([expect.stringMatching(/^profileSettings: .*waitSecond.*quay/)]);
  });

  it('leaves the acp profile settings to the functions, as before', () => {
    // Act / Assess
    expect(() => parseSettings({ profileSettings: '{"waitSeconds":900}' })).not.toThrow();
  });
});
