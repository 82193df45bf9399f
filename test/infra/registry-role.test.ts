/**
 * A registry bucket in another account read through a role to assume
 * (`registryReadRoleArn`): only the steps that read the registry (discover,
 * plan, the copy worker) may assume it and are told its ARN; none of them
 * keeps an S3 grant on the registry bucket; the stack outputs the role's
 * permissions and trust policy for the registry account's owner instead of a
 * bucket policy.
 */
import { describe, expect, it } from '@jest/globals';
import { AwsSolutionsChecks } from 'cdk-nag';
import { FUNCTIONS } from '../../infra/function-specs.ts';
import {
  actionsOn,
  buildStack,
  FULL_CONTEXT,
  type FunctionName,
  functionStatements,
  logicalIdOf,
  resourcesOf,
} from './support.ts';

const ROLE = 'arn:aws:iam::111122223333:role/regvault-registry-read';
const built = buildStack({
  ...FULL_CONTEXT,
  registryBucketNames: 'acme-registry',
  registryReadRoleArn: ROLE,
  registryReadExternalId: 'regvault-ext-1',
});
const NAMES = Object.keys(FUNCTIONS) as FunctionName[];
const READERS: FunctionName[] = ['copy-worker', 'discover', 'plan'];

/** The environment of one function in the template. */
function environmentOf(name: FunctionName): Record<string, unknown> {
  const id = logicalIdOf(built, built.stack.functions[name].function);
  const props = resourcesOf(built.template, 'AWS::Lambda::Function')[id]?.Properties;
  const environment = props?.['Environment'] as { Variables?: Record<string, unknown> } | undefined;
  return environment?.Variables ?? {};
}

/** An output's JSON value, as the template holds it (Fn::Join of text and role ARNs). */
function outputJson(name: string): unknown {
  const outputs = built.template.toJSON()['Outputs'] as Record<string, { Value: unknown }>;
  return outputs[name]?.Value;
}

describe('a registry read role', () => {
  it('lets only discover, plan and the copy worker assume it, and tells only them its ARN and external id', () => {
    // Act
    const assumers = NAMES.filter((name) => actionsOn(built, name, ROLE).length > 0).sort();
    const told = NAMES.filter(
      (name) => environmentOf(name)['REGISTRY_READ_ROLE_ARN'] === ROLE,
    ).sort();

    // Assess
    expect(assumers).toEqual(READERS);
    expect(told).toEqual(READERS);
    for (const name of READERS) {
      expect(actionsOn(built, name, ROLE)).toEqual(['sts:AssumeRole']);
      expect(environmentOf(name)['REGISTRY_READ_EXTERNAL_ID']).toBe('regvault-ext-1');
    }
  });

  it('leaves no function an S3 grant on the registry bucket: the role reads it in its own account', () => {
    // Act
    const onRegistry = NAMES.flatMap((name) =>
      functionStatements(built, name).filter((statement) =>
        JSON.stringify(statement.Resource).includes('acme-registry'),
      ),
    );

    // Assess
    expect(onRegistry).toEqual([]);
  });

  it('outputs the role permissions and its trust policy (the readers, the external id), and no bucket policy', () => {
    // Act
    const trust = JSON.stringify(outputJson('RegistryReadRoleTrustPolicy'));
    const permissions = JSON.stringify(outputJson('RegistryReadRolePolicy'));
    const readerRoles = READERS.map((name) =>
      JSON.stringify({
        'Fn::GetAtt': [logicalIdOf(built, built.stack.functions[name].role), 'Arn'],
      }),
    );
    const otherRoles = NAMES.filter((name) => !READERS.includes(name)).map((name) =>
      JSON.stringify({
        'Fn::GetAtt': [logicalIdOf(built, built.stack.functions[name].role), 'Arn'],
      }),
    );

    // Assess
    expect(outputJson('RegistryBucketPolicy')).toBeUndefined();
    for (const role of readerRoles) expect(trust).toContain(role);
    for (const role of otherRoles) expect(trust).not.toContain(role);
    expect(trust).toContain('sts:AssumeRole');
    expect(trust).toContain('sts:ExternalId');
    expect(trust).toContain('regvault-ext-1');
    expect(permissions).toContain('arn:aws:s3:::acme-registry/*');
    expect(permissions).toContain('s3:ListBucket');
    expect(permissions).not.toMatch(/PutObject|DeleteObject/);
  });

  it('keeps the bucket-policy route without the role', () => {
    // Act
    const plain = buildStack({ ...FULL_CONTEXT, registryBucketNames: 'acme-registry' });
    const outputs = plain.template.toJSON()['Outputs'] as Record<string, unknown>;

    // Assess
    expect(Object.keys(outputs)).toContain('RegistryBucketPolicy');
    expect(Object.keys(outputs)).not.toContain('RegistryReadRoleTrustPolicy');
    expect(actionsOn(plain, 'copy-worker', 'acme-registry/*')).toEqual([
      's3:GetObject',
      's3:GetObjectTagging',
    ]);
  });

  it('leaves cdk-nag with nothing unacknowledged', () => {
    // Act
    const report = new AwsSolutionsChecks(undefined, {}).validateScope(built.stack);

    // Assess
    expect(report.violations.map((violation) => violation.ruleName)).toEqual([]);
  });
});
