/**
 * Builds the regvault stack the way `infra/app.ts` does (cdk.json context,
 * settings parsed from it) but without bundling the functions, which only the
 * synth test pays for.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { PROJECT_ROOT } from '../../infra/house-function.ts';
import { RegvaultStack } from '../../infra/regvault-stack.ts';
import { parseSettings } from '../../infra/settings.ts';

export const cdkJsonContext: Record<string, unknown> = (() => {
  const parsed: unknown = JSON.parse(readFileSync(join(PROJECT_ROOT, 'cdk.json'), 'utf8'));
  const context =
    typeof parsed === 'object' && parsed !== null && 'context' in parsed
      ? parsed.context
      : undefined;
  if (typeof context !== 'object' || context === null)
    throw new Error('cdk.json has no context object');
  return { ...context };
})();

export interface Built {
  readonly app: App;
  readonly stack: RegvaultStack;
  readonly template: Template;
}

/** The stack for these context values (on top of cdk.json's), functions unbundled. */
export function buildStack(context: Record<string, unknown> = {}): Built {
  const app = new App({
    context: { ...cdkJsonContext, ...context, 'aws:cdk:bundling-stacks': [] },
  });
  const stack = new RegvaultStack(app, 'Regvault', {
    settings: parseSettings(app.node.getAllContext()),
  });
  return { app, stack, template: Template.fromStack(stack) };
}

/** Settings a platform team with a cluster, a VPC and a schedule would give. */
export const FULL_CONTEXT = {
  kubeconfigSecretArn:
    'arn:aws:secretsmanager:eu-west-1:123456789012:secret:regvault/kubeconfig-AbC123',
  registryUrl: 'https://registry.example.com',
  registryCredentialsSecretArn:
    'arn:aws:secretsmanager:eu-west-1:123456789012:secret:regvault/registry-Zz9Yy8',
  profileSettings: '{"namespace":"cpaas-system"}',
  backupSchedule: 'cron(0 2 * * ? *)',
  backupScheduleTimezone: 'Europe/Paris',
  backupInput: '{"concurrency":32,"includeSecret":false}',
  objectLockMode: 'GOVERNANCE',
  objectLockRetentionDays: '35',
  vpcId: 'vpc-0a1b2c3d',
  subnetIds: 'subnet-0aa11,subnet-0bb22',
  availabilityZones: 'eu-west-1a,eu-west-1b',
  copyWorkers: '25',
  alarmTopicArn: 'arn:aws:sns:eu-west-1:123456789012:platform-alarms',
} as const;

/** The patch identity's kubeconfig, beside FULL_CONTEXT's read identity. */
export const PATCH_KUBECONFIG =
  'arn:aws:secretsmanager:eu-west-1:123456789012:secret:regvault/kubeconfig-patch-Qq1Ww2';

/** Every resource of a type in the template, by logical id. */
export function resourcesOf(
  template: Template,
  type: string,
): Record<string, { Properties: Record<string, unknown> }> {
  return template.findResources(type) as Record<string, { Properties: Record<string, unknown> }>;
}

/** One statement of an IAM policy as the template holds it. */
export type Statement = {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: unknown;
  Principal?: unknown;
};

/** Every statement of every IAM policy, with the policy's logical id. */
export function statementsOf(built: Built): Array<Statement & { policy: string }> {
  return Object.entries(resourcesOf(built.template, 'AWS::IAM::Policy')).flatMap(
    ([policy, resource]) => {
      const document = resource.Properties['PolicyDocument'] as { Statement: Statement[] };
      return document.Statement.map((statement) => ({ ...statement, policy }));
    },
  );
}

export const actionsOf = (statement: Statement): string[] =>
  Array.isArray(statement.Action) ? statement.Action : [statement.Action];
export const resourceList = (statement: Statement): unknown[] =>
  Array.isArray(statement.Resource) ? statement.Resource : [statement.Resource];

/** The logical id of a construct's CloudFormation resource. */
export function logicalIdOf(built: Built, construct: { node: { defaultChild?: unknown } }): string {
  const child = construct.node.defaultChild;
  if (child === undefined) throw new Error('construct has no CloudFormation resource');
  return built.stack.getLogicalId(child as Parameters<typeof built.stack.getLogicalId>[0]);
}

export type FunctionName = keyof Built['stack']['functions'];

/** The statements of every policy attached to one function's role. */
export function functionStatements(built: Built, name: FunctionName): Statement[] {
  const roleRef = JSON.stringify({ Ref: logicalIdOf(built, built.stack.functions[name].role) });
  const policies = resourcesOf(built.template, 'AWS::IAM::Policy');
  return statementsOf(built).filter((statement) =>
    ((policies[statement.policy]?.Properties['Roles'] ?? []) as unknown[]).some(
      (role) => JSON.stringify(role) === roleRef,
    ),
  );
}

/** The sorted actions of a function's statements whose resource text contains `resource`. */
export function actionsOn(built: Built, name: FunctionName, resource: string): string[] {
  return functionStatements(built, name)
    .filter((statement) => JSON.stringify(statement.Resource).includes(resource))
    .flatMap(actionsOf)
    .sort();
}

/** The environment variables of one function. */
export function environmentOf(built: Built, name: FunctionName): Record<string, unknown> {
  const fn = resourcesOf(built.template, 'AWS::Lambda::Function')[
    logicalIdOf(built, built.stack.functions[name].function)
  ];
  return (
    (fn?.Properties['Environment'] as { Variables: Record<string, unknown> } | undefined)
      ?.Variables ?? {}
  );
}

/** One function's Lambda properties in the template. */
export function lambdaPropsOf(built: Built, name: FunctionName): Record<string, unknown> {
  return (
    resourcesOf(built.template, 'AWS::Lambda::Function')[
      logicalIdOf(built, built.stack.functions[name].function)
    ]?.Properties ?? {}
  );
}

/** One function's role ARN as the template refers to it, as JSON text. */
export function roleArnOf(built: Built, name: FunctionName): string {
  return JSON.stringify({
    'Fn::GetAtt': [logicalIdOf(built, built.stack.functions[name].role), 'Arn'],
  });
}
