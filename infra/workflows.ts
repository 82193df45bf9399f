/**
 * The state machines: one per `state-machines/<name>.asl.json`, its
 * placeholders filled by `definitionSubstitutions` with the functions it
 * names and the copy's settings, and its role allowed exactly those functions.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Stack, Validations } from 'aws-cdk-lib';
import { PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import {
  DefinitionBody,
  LogLevel,
  StateMachine,
  StateMachineType,
} from 'aws-cdk-lib/aws-stepfunctions';
import type { FunctionName, WorkflowName } from '../functions/commons/workflows/steps.ts';
import { placeholdersIn, substitutionsFor } from './asl.ts';
import { functionArnPlaceholder } from './function-specs.ts';
import { type HouseFunction, PROJECT_ROOT } from './house-function.ts';
import type { RegvaultSettings } from './settings.ts';

/** What the definitions' placeholders are filled from. */
export interface WorkflowsProps {
  readonly settings: RegvaultSettings;
  readonly functions: Readonly<Record<FunctionName, HouseFunction>>;
}

/** The backup and restore state machines, made in the stack's own scope (`BackupStateMachine`, ...). */
export function makeWorkflows(
  stack: Stack,
  props: WorkflowsProps,
): Record<WorkflowName, StateMachine> {
  return {
    backup: workflow(stack, 'backup', props),
    restore: workflow(stack, 'restore', props),
  };
}

function workflow(
  stack: Stack,
  name: WorkflowName,
  { settings, functions }: WorkflowsProps,
): StateMachine {
  const file = join(PROJECT_ROOT, 'state-machines', `${name}.asl.json`);
  // The functions a definition invokes are the ones its placeholders name.
  const wanted = placeholdersIn(readFileSync(file, 'utf8'));
  const values: Record<string, string> = {
    CopyPollSeconds: String(settings.copyPollSeconds),
    CopyTimeoutSeconds: String(settings.copyTimeoutHours * 3_600),
  };
  const invoked = [];
  for (const fnName of Object.keys(functions) as FunctionName[]) {
    const placeholder = functionArnPlaceholder(fnName);
    if (!wanted.has(placeholder)) continue;
    const fn = functions[fnName].function;
    values[placeholder] = fn.functionArn;
    invoked.push(fn);
  }
  const title = `${name[0]?.toUpperCase()}${name.slice(1)}`;
  const machine = new StateMachine(stack, `${title}StateMachine`, {
    stateMachineType: StateMachineType.STANDARD,
    definitionBody: DefinitionBody.fromFile(file),
    definitionSubstitutions: substitutionsFor(file, values),
    tracingEnabled: true,
    logs: {
      destination: new LogGroup(stack, `${title}ExecutionLogs`, {
        retention: settings.logRetentionDays as RetentionDays,
      }),
      level: LogLevel.ALL,
      // Execution data holds bucket names and endpoints, never keys, but it stays out of logs all the same.
      includeExecutionData: false,
    },
  });
  // The definition is a file, so CDK cannot see what its tasks call: grant exactly that.
  machine.addToRolePolicy(
    new PolicyStatement({
      actions: ['lambda:InvokeFunction'],
      resources: invoked.map((fn) => fn.functionArn),
    }),
  );
  Validations.of(machine.role).acknowledge({
    id: 'AwsSolutions-IAM5[Resource::*]',
    reason:
      'Step Functions log delivery (logs:*LogDelivery, logs:*ResourcePolicy, logs:DescribeLogGroups) and X-Ray tracing ' +
      'actions support no resource-level scope; the tasks the role may run are named one by one.',
  });
  return machine;
}
