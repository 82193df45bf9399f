/**
 * The state machines: one per `state-machines/<name>.asl.json`, its
 * placeholders filled by `definitionSubstitutions` with the functions it
 * names and the copy's settings, and its role allowed exactly those functions.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Stack, Validations } from 'aws-cdk-lib';
import { PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { ITopic } from 'aws-cdk-lib/aws-sns';
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
import { APPROVAL_TOPIC_PLACEHOLDER, withRestoreApproval } from './restore-approval.ts';
import type { RegvaultSettings } from './settings.ts';

/** What the definitions' placeholders are filled from. */
export interface WorkflowsProps {
  readonly settings: RegvaultSettings;
  readonly functions: Readonly<Record<FunctionName, HouseFunction>>;
  /** Where a restore's approval notice goes (`restoreApproval`): the alarm topic, and the stack's key of it. */
  readonly approvalTopic: { readonly topic: ITopic; readonly key: IKey | undefined };
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
  { settings, functions, approvalTopic }: WorkflowsProps,
): StateMachine {
  const file = join(PROJECT_ROOT, 'state-machines', `${name}.asl.json`);
  const approval = name === 'restore' && settings.restoreApproval;
  const text = approval
    ? withRestoreApproval(readFileSync(file, 'utf8'), settings.restoreApprovalHours * 3_600)
    : readFileSync(file, 'utf8');
  // The functions a definition invokes are the ones its placeholders name.
  const wanted = placeholdersIn(text);
  const values: Record<string, string> = {
    CopyPollSeconds: String(settings.copyPollSeconds),
    CopyTimeoutSeconds: String(settings.copyTimeoutHours * 3_600),
    ...(approval ? { [APPROVAL_TOPIC_PLACEHOLDER]: approvalTopic.topic.topicArn } : {}),
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
    // The file as it is, deployed as an asset; with the approval, the definition made from it.
    definitionBody: approval ? DefinitionBody.fromString(text) : DefinitionBody.fromFile(file),
    definitionSubstitutions: substitutionsFor(file, values, text),
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
  if (approval) grantApprovalNotice(machine, approvalTopic);
  Validations.of(machine.role).acknowledge({
    id: 'AwsSolutions-IAM5[Resource::*]',
    reason:
      'Step Functions log delivery (logs:*LogDelivery, logs:*ResourcePolicy, logs:DescribeLogGroups) and X-Ray tracing ' +
      'actions support no resource-level scope; the tasks the role may run are named one by one.',
  });
  return machine;
}

/**
 * Lets the restore state machine publish its approval notice to the topic,
 * and nothing else there; a topic under the stack's own key also needs the
 * key's data-key use, granted in its policy (the account may not use it).
 * The answer (SendTaskSuccess or SendTaskFailure) is the approver's: no role
 * of the stack may give it.
 */
function grantApprovalNotice(
  machine: StateMachine,
  { topic, key }: WorkflowsProps['approvalTopic'],
): void {
  machine.addToRolePolicy(
    new PolicyStatement({ actions: ['sns:Publish'], resources: [topic.topicArn] }),
  );
  if (key === undefined) return;
  const uses = ['kms:Decrypt', 'kms:GenerateDataKey'];
  machine.addToRolePolicy(new PolicyStatement({ actions: uses, resources: [key.keyArn] }));
  key.addToResourcePolicy(
    new PolicyStatement({
      sid: 'RestoreApprovalNotice',
      principals: [machine.role],
      actions: uses,
      resources: ['*'],
      conditions: {
        StringEquals: { 'kms:ViaService': `sns.${Stack.of(machine).region}.amazonaws.com` },
      },
    }),
  );
}
