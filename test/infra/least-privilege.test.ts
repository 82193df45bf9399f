/**
 * Least privilege beyond each function's own row (stack.test.ts): the vault
 * key's policy, the two cluster identities, and EKS access by role.
 */
import { describe, expect, it } from '@jest/globals';
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { FUNCTIONS } from '../../infra/function-specs.ts';
import { KEY_ADMIN_ACTIONS } from '../../infra/keys.ts';
import {
  actionsOf,
  actionsOn,
  type Built,
  buildStack,
  environmentOf,
  FULL_CONTEXT,
  type FunctionName,
  logicalIdOf,
  PATCH_KUBECONFIG,
  resourcesOf,
  statementsOf,
} from './support.ts';

const OPERATOR = 'arn:aws:iam::123456789012:role/registry-operators';

const twoIdentities = buildStack({
  ...FULL_CONTEXT,
  patchKubeconfigSecretArn: PATCH_KUBECONFIG,
  vaultKeyUserArns: OPERATOR,
});
const eks = buildStack({ ...FULL_CONTEXT, eksClusterName: 'registry-prod' });

type KeyStatement = {
  Sid?: string;
  Principal: unknown;
  Action: string | string[];
  Condition?: unknown;
};

function vaultKeyPolicy(built: Built): KeyStatement[] {
  const key = built.stack.vaultKey as unknown as { node: { defaultChild?: unknown } };
  const props = resourcesOf(built.template, 'AWS::KMS::Key')[logicalIdOf(built, key)]?.Properties;
  return (props?.['KeyPolicy'] as { Statement: KeyStatement[] } | undefined)?.Statement ?? [];
}

const listOf = (value: string | string[]) => (Array.isArray(value) ? value : [value]);
const ROWS = Object.entries(FUNCTIONS) as Array<[FunctionName, (typeof FUNCTIONS)[FunctionName]]>;

describe('the vault key policy', () => {
  it('lets the account administer the key and use it not at all', () => {
    // Act
    const root = vaultKeyPolicy(twoIdentities).filter((statement) =>
      JSON.stringify(statement.Principal).includes(':root'),
    );

    // Assess
    expect(root).toHaveLength(1);
    expect(listOf(root[0]?.Action ?? []).sort()).toEqual([...KEY_ADMIN_ACTIONS].sort());
  });

  it.each(ROWS)(
    'lets %s use the key, through S3 only, exactly as its identity policy says',
    (name, spec) => {
      // Prepare
      const roleArn = JSON.stringify({
        'Fn::GetAtt': [logicalIdOf(twoIdentities, twoIdentities.stack.functions[name].role), 'Arn'],
      });
      const keyArn = JSON.stringify({
        'Fn::GetAtt': [
          logicalIdOf(
            twoIdentities,
            twoIdentities.stack.vaultKey as unknown as { node: { defaultChild?: unknown } },
          ),
          'Arn',
        ],
      });

      // Act
      const inKeyPolicy = vaultKeyPolicy(twoIdentities)
        .filter((statement) =>
          listOf((statement.Principal as { AWS: string | string[] }).AWS).some(
            (principal) => JSON.stringify(principal) === roleArn,
          ),
        )
        .flatMap((statement) => {
          expect(JSON.stringify(statement.Condition)).toContain('kms:ViaService');
          return listOf(statement.Action);
        })
        .sort();
      const inIdentityPolicy = actionsOn(twoIdentities, name, keyArn);

      // Assess
      expect(inKeyPolicy).toEqual(inIdentityPolicy);
      expect(inKeyPolicy.length > 0).toBe(Object.keys(spec.vault).length > 0 || 'runLease' in spec);
    },
  );

  it('lets the named operators read and write the vault through S3', () => {
    // Act
    const users = vaultKeyPolicy(twoIdentities).find(
      (statement) => statement.Sid === 'VaultKeyUsers',
    );

    // Assess
    expect(users).toMatchObject({
      Principal: { AWS: OPERATOR },
      Action: ['kms:Decrypt', 'kms:GenerateDataKey'],
      Condition: {
        StringEquals: {
          'kms:ViaService': { 'Fn::Join': ['', ['s3.', { Ref: 'AWS::Region' }, '.amazonaws.com']] },
        },
      },
    });
  });
});

describe('the cluster identities', () => {
  it.each(ROWS)(
    'give %s the kubeconfig of its identity only (the patch one for switch and rollback)',
    (name, spec) => {
      // Act
      const variables = environmentOf(twoIdentities, name);
      const readGrant = actionsOn(twoIdentities, name, FULL_CONTEXT.kubeconfigSecretArn);
      const patchGrant = actionsOn(twoIdentities, name, PATCH_KUBECONFIG);

      // Assess
      expect(variables['KUBECONFIG_SECRET_ARN']).toBe(
        { none: undefined, read: FULL_CONTEXT.kubeconfigSecretArn, patch: PATCH_KUBECONFIG }[
          spec.cluster
        ],
      );
      expect(readGrant).toEqual(spec.cluster === 'read' ? ['secretsmanager:GetSecretValue'] : []);
      expect(patchGrant).toEqual(spec.cluster === 'patch' ? ['secretsmanager:GetSecretValue'] : []);
    },
  );

  it('reaches the patch identity from switch and rollback alone', () => {
    // Act
    const patchers = ROWS.filter(([, spec]) => spec.cluster === 'patch').map(([name]) => name);

    // Assess
    expect(patchers.sort()).toEqual(['rollback', 'switch']);
  });

  it('warns at synth when one kubeconfig serves both identities, and only then', () => {
    // Prepare
    const one = buildStack(FULL_CONTEXT);

    // Act / Assess
    Annotations.fromStack(one.stack).hasWarning(
      '*',
      Match.stringLikeRegexp('One cluster identity'),
    );
    for (const built of [twoIdentities, eks])
      Annotations.fromStack(built.stack).hasNoWarning(
        '*',
        Match.stringLikeRegexp('One cluster identity'),
      );
  });
});

describe('EKS tokens', () => {
  it.each(ROWS)(
    'map the role of %s to its identity group on the cluster, if it calls the cluster',
    (name, spec) => {
      // Prepare
      const { template, stack } = eks;
      const roleArn = {
        'Fn::GetAtt': [logicalIdOf(eks, stack.functions[name].role), 'Arn'],
      };

      // Act
      const entries = Object.values(resourcesOf(template, 'AWS::EKS::AccessEntry'))
        .map((entry) => entry.Properties)
        .filter((props) => JSON.stringify(props['PrincipalArn']) === JSON.stringify(roleArn));
      const variables = environmentOf(eks, name);

      // Assess
      expect(entries).toEqual(
        spec.cluster === 'none'
          ? []
          : [
              {
                ClusterName: 'registry-prod',
                PrincipalArn: roleArn,
                Type: 'STANDARD',
                KubernetesGroups: [`regvault-${spec.cluster}`],
              },
            ],
      );
      expect(variables['EKS_CLUSTER_NAME']).toBe(
        spec.cluster === 'none' ? undefined : 'registry-prod',
      );
    },
  );
});

describe('registry buckets read with the role', () => {
  const built = buildStack({ ...FULL_CONTEXT, registryBucketNames: 'acme-registry' });
  const readers = { discover: 'list', plan: 'list', 'copy-worker': 'read' } as const;

  it.each(ROWS)('let %s list and read the registry bucket only as its step does', (name) => {
    // Act
    const objects = actionsOn(built, name, 'acme-registry/*');
    const listing = actionsOn(built, name, ':s3:::acme-registry"').filter(
      (action) => action === 's3:ListBucket',
    );
    const level = name in readers ? readers[name as keyof typeof readers] : 'none';

    // Assess
    expect(objects).toEqual(level === 'read' ? ['s3:GetObject', 's3:GetObjectTagging'] : []);
    expect(listing).toEqual(level === 'none' ? [] : ['s3:ListBucket']);
    expect(environmentOf(built, name)['REGISTRY_BUCKETS']).toBe('acme-registry');
  });

  it('outputs the bucket policy a registry bucket in another account needs, naming the reading roles', () => {
    // Prepare
    const roleArns = Object.keys(readers).map((name) =>
      JSON.stringify({
        'Fn::GetAtt': [logicalIdOf(built, built.stack.functions[name as FunctionName].role), 'Arn'],
      }),
    );

    // Act
    const output = JSON.stringify(built.template.findOutputs('RegistryBucketPolicy'));

    // Assess
    expect(output).toContain('s3:ListBucket');
    expect(output).toContain('arn:aws:s3:::acme-registry/*');
    // The ARNs are tokens in the output's Fn::Join, as the template holds them.
    for (const arn of roleArns) expect(output).toContain(arn);
  });
});

describe('an Object Lock vault', () => {
  it('lets no role change or bypass a retention, or delete a version', () => {
    // Prepare
    const built = buildStack({ ...FULL_CONTEXT, pruneSchedule: 'rate(1 day)' });

    // Act
    const actions = statementsOf(built).flatMap(actionsOf);

    // Assess
    expect(
      actions.filter((action) =>
        /^s3:(BypassGovernanceRetention|PutObjectRetention|PutObjectLegalHold|PutBucketObjectLockConfiguration|DeleteObjectVersion)$/.test(
          action,
        ),
      ),
    ).toEqual([]);
  });

  it('lets prune alone read the lock it reports', () => {
    // Act
    const readers = ROWS.filter(([name]) =>
      actionsOn(twoIdentities, name, '').includes('s3:GetBucketObjectLockConfiguration'),
    ).map(([name]) => name);

    // Assess
    expect(readers).toEqual(['prune']);
  });
});

describe('cdk-nag AwsSolutions', () => {
  it.each([
    ['two identities and key users', twoIdentities],
    ['EKS', eks],
    ['registry buckets', buildStack({ ...FULL_CONTEXT, registryBucketNames: 'acme-registry' })],
  ])('finds nothing unacknowledged (%s)', (_name, built) => {
    // Act
    const report = new AwsSolutionsChecks(undefined, {}).validateScope(built.stack);

    // Assess
    expect(report.violations.map((violation) => violation.ruleName)).toEqual([]);
  });
});
