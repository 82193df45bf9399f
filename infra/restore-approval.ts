/**
 * The optional restore approval (`restoreApproval`): on AWS the restore state
 * machine stops before it switches the registry, publishes a notice with a
 * task token to the alarm topic and waits for a person to answer it
 * (`regvault approve|reject --task-token`, the console, or
 * `aws stepfunctions send-task-success|send-task-failure`). A rejection or no
 * answer in time ends the restore as `RestoreNotApproved`, the cluster
 * untouched.
 *
 * The states are added here, not written in `state-machines/restore.asl.json`:
 * the local runner runs that file and cannot make task tokens, and locally
 * the person who starts the restore is the one who would approve it.
 */
import type { Stack } from 'aws-cdk-lib';
import { ManagedPolicy, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { StateMachine } from 'aws-cdk-lib/aws-stepfunctions';

/** The state that waits for the approval. */
export const APPROVAL_STATE = 'AwaitRestoreApproval';
/** The state the approval guards: nothing before it changes the cluster. */
export const SWITCH_STATE = 'SwitchRegistryStorage';
/** The workflow's end when nobody approved; `functions/commons/errors.ts` names it too. */
export const NOT_APPROVED = 'RestoreNotApproved';
/** The placeholder of the topic the notice goes to (a substitution, as every ARN of the definitions). */
export const APPROVAL_TOPIC_PLACEHOLDER = 'RestoreApprovalTopicArn';

type State = Record<string, unknown>;
interface Definition {
  readonly States: Record<string, State>;
  readonly [key: string]: unknown;
}

/** The states that lead into `target`, through `Next`, a Choice's choices or its `Default`. */
function leadsInto(state: State, target: string): boolean {
  const choices = Array.isArray(state['Choices']) ? (state['Choices'] as State[]) : [];
  return (
    state['Next'] === target ||
    state['Default'] === target ||
    choices.some((choice) => choice['Next'] === target)
  );
}

/** `state` with every transition to `from` sent to `to` instead. */
function redirect(state: State, from: string, to: string): State {
  const choices = Array.isArray(state['Choices'])
    ? (state['Choices'] as State[]).map((choice) =>
        choice['Next'] === from ? { ...choice, Next: to } : choice,
      )
    : undefined;
  return {
    ...state,
    ...(state['Next'] === from ? { Next: to } : {}),
    ...(state['Default'] === from ? { Default: to } : {}),
    ...(choices === undefined ? {} : { Choices: choices }),
  };
}

/** Why a restore was not approved, as the failure path's error: the Fail state's Error and Cause. */
function notApproved(comment: string, cause: string): State {
  return {
    Type: 'Pass',
    Comment: comment,
    Parameters: { Error: NOT_APPROVED, 'Cause.$': cause },
    ResultPath: '$.error',
    // The failure path says the cluster is unchanged and ends in the error's name.
    Next: 'DescribeRestoreFailure',
  };
}

/**
 * The restore definition with the approval before the switch: every
 * transition into `SwitchRegistryStorage` goes to `AwaitRestoreApproval`
 * instead, which goes on to the switch only when approved within
 * `timeoutSeconds`. Restores that do not switch never reach it.
 */
export function withRestoreApproval(definitionText: string, timeoutSeconds: number): string {
  const definition = JSON.parse(definitionText) as Definition;
  const failurePath = definition.States['DescribeRestoreFailure'];
  if (definition.States[SWITCH_STATE] === undefined || failurePath === undefined)
    throw new Error(
      `the restore definition has no ${SWITCH_STATE} or DescribeRestoreFailure state: the restore approval goes before the first and ends in the second; update infra/restore-approval.ts with the definition`,
    );
  const states = Object.fromEntries(
    Object.entries(definition.States).map(([name, state]) => [
      name,
      redirect(state, SWITCH_STATE, APPROVAL_STATE),
    ]),
  );
  const hours = Math.round(timeoutSeconds / 360) / 10;
  const approval: Record<string, State> = {
    [APPROVAL_STATE]: {
      Type: 'Task',
      Comment: `Sends the approval notice (what will be switched, no secrets) with a task token to the topic and waits up to ${hours} h for send-task-success; a failure sent back or no answer ends the restore unswitched.`,
      Resource: 'arn:aws:states:::sns:publish.waitForTaskToken',
      Parameters: {
        TopicArn: `\${${APPROVAL_TOPIC_PLACEHOLDER}}`,
        Subject: 'regvault: a restore waits for approval to switch the registry',
        Message: {
          what: 'A regvault restore has copied and proven a snapshot and waits for approval before it points the registry at the restored bucket.',
          'execution.$': '$$.Execution.Id',
          'snapshotId.$': '$.state.snapshotId',
          'objects.$': '$.state.objects',
          'bytes.$': '$.state.bytes',
          'target.$': '$.state.target',
          'proof.$': '$.proof.message',
          'rollbackOnFailure.$': '$.state.rollbackOnFailure',
          'approve.$': "States.Format('regvault approve --task-token {}', $$.Task.Token)",
          'reject.$': "States.Format('regvault reject --task-token {}', $$.Task.Token)",
          'taskToken.$': '$$.Task.Token',
          timeoutHours: hours,
        },
      },
      TimeoutSeconds: timeoutSeconds,
      ResultPath: '$.approval',
      Catch: [
        { ErrorEquals: ['States.Timeout'], ResultPath: '$.error', Next: 'ApprovalTimedOut' },
        { ErrorEquals: ['States.ALL'], ResultPath: '$.error', Next: 'ApprovalRefused' },
      ],
      Next: SWITCH_STATE,
    },
    ApprovalTimedOut: notApproved(
      'No answer to the approval notice in time: the restore ends unswitched.',
      `States.Format('nobody approved the switch to s3://{} within ${hours} h; the target holds snapshot {}, proven', $.state.target.bucket, $.state.snapshotId)`,
    ),
    ApprovalRefused: notApproved(
      'The approver sent a failure (or the notice could not be published): the restore ends unswitched.',
      "States.Format('the switch to s3://{} was not approved: {}', $.state.target.bucket, States.JsonToString($.error))",
    ),
  };
  for (const name of Object.keys(approval))
    if (definition.States[name] !== undefined)
      throw new Error(`the restore definition already has a state named ${name}`);
  if (!Object.values(states).some((state) => leadsInto(state, APPROVAL_STATE)))
    throw new Error(`nothing in the restore definition leads to ${SWITCH_STATE}`);
  return JSON.stringify({ ...definition, States: { ...states, ...approval } }, null, 2);
}

/**
 * The approver's policy, for the deployer to attach to the people or roles
 * who approve restores: the answer to a restore's task token and nothing
 * else. No role of the stack has it, so no step can approve its own switch.
 */
export function restoreApproverPolicy(stack: Stack, restore: StateMachine): ManagedPolicy {
  return new ManagedPolicy(stack, 'RestoreApproverPolicy', {
    description:
      'regvault: approve or reject a restore waiting before its switch (states:SendTaskSuccess, SendTaskFailure)',
    statements: [
      new PolicyStatement({
        actions: ['states:SendTaskSuccess', 'states:SendTaskFailure'],
        resources: [restore.stateMachineArn],
      }),
    ],
  });
}
