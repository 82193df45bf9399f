/**
 * The optional restore approval (`restoreApproval`, infra/restore-approval.ts):
 * off, the restore definition is the file as written; on, a task-token wait on
 * the alarm topic sits before the switch, only the state machine may publish
 * the notice, only the approver's policy may answer it, and a restore nobody
 * approved ends without switching. The wiring runs in aws-local-stepfunctions,
 * its Lambda tasks stood in for by recorders: what is tested is where each
 * transition goes, not the steps.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import aslValidator from 'asl-validator';
import { StateMachine } from 'aws-local-stepfunctions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { PROJECT_ROOT } from '../../infra/house-function.ts';
import {
  APPROVAL_STATE,
  APPROVAL_TOPIC_PLACEHOLDER,
  SWITCH_STATE,
  withRestoreApproval,
} from '../../infra/restore-approval.ts';
import {
  actionsOf,
  type Built,
  buildStack,
  FULL_CONTEXT,
  logicalIdOf,
  resourceList,
  resourcesOf,
  statementsOf,
} from './support.ts';

const FILE = join(PROJECT_ROOT, 'state-machines', 'restore.asl.json');
const fileText = readFileSync(FILE, 'utf8');

type AslState = Record<string, unknown> & { Type: string };
interface Definition {
  States: Record<string, AslState>;
}

const off = buildStack();
const on = buildStack({ restoreApproval: 'true', restoreApprovalHours: '6' });
// The deployer's alarm topic (alarmTopicArn), a cluster and a VPC.
const onDeployerTopic = buildStack({ ...FULL_CONTEXT, restoreApproval: true });

/** The restore state machine's resource in a template. */
function restoreMachine(built: Built): Record<string, unknown> {
  const id = logicalIdOf(built, built.stack.stateMachines.restore);
  const machine = resourcesOf(built.template, 'AWS::StepFunctions::StateMachine')[id];
  if (machine === undefined) throw new Error('no restore state machine');
  return machine.Properties;
}

/** The definition the stack deploys for the restore, from its string or its file. */
function deployedRestore(built: Built): Definition {
  const props = restoreMachine(built);
  const text = props['DefinitionString'];
  return JSON.parse(typeof text === 'string' ? text : fileText) as Definition;
}

/** Every state a transition (Next, Default, a choice, a catcher) leads to from `state`. */
function successors(state: AslState): string[] {
  const list = (field: string) =>
    Array.isArray(state[field]) ? (state[field] as Array<{ Next?: string }>) : [];
  return [
    state['Next'],
    state['Default'],
    ...[...list('Choices'), ...list('Catch')].map((c) => c.Next),
  ].filter((next): next is string => typeof next === 'string');
}

/** The states reachable from `start`. */
function reachable(definition: Definition, start: string): Set<string> {
  const seen = new Set<string>();
  const queue = [start];
  for (let name = queue.shift(); name !== undefined; name = queue.shift()) {
    if (seen.has(name)) continue;
    seen.add(name);
    queue.push(...successors(definition.States[name] ?? { Type: 'Succeed' }));
  }
  return seen;
}

/** The role policy statements of the restore state machine. */
function machineStatements(built: Built) {
  const roleRef = JSON.stringify({
    Ref: logicalIdOf(built, built.stack.stateMachines.restore.role as never),
  });
  const policies = resourcesOf(built.template, 'AWS::IAM::Policy');
  return statementsOf(built).filter((statement) =>
    ((policies[statement.policy]?.Properties['Roles'] ?? []) as unknown[]).some(
      (role) => JSON.stringify(role) === roleRef,
    ),
  );
}

describe('restore approval off (the default)', () => {
  it('deploys the restore file as written: no approval state, no publish right, no approver policy', () => {
    // Act
    const props = restoreMachine(off);
    const publishes = machineStatements(off).filter((s) => actionsOf(s).includes('sns:Publish'));

    // Assess
    expect(props['DefinitionS3Location']).toBeDefined();
    expect(props['DefinitionString']).toBeUndefined();
    expect(Object.keys(deployedRestore(off).States)).not.toContain(APPROVAL_STATE);
    expect(publishes).toEqual([]);
    off.template.resourceCountIs('AWS::IAM::ManagedPolicy', 0);
  });
});

describe('restore approval on', () => {
  it('puts the task-token wait between the decision to switch and the switch, with the hours set', () => {
    // Act
    const definition = deployedRestore(on);
    const approval = definition.States[APPROVAL_STATE];
    const into = Object.entries(definition.States)
      .filter(([, state]) => successors(state).includes(SWITCH_STATE))
      .map(([name]) => name);

    // Assess
    expect(approval?.['Resource']).toBe('arn:aws:states:::sns:publish.waitForTaskToken');
    expect(approval?.['TimeoutSeconds']).toBe(6 * 3_600);
    expect(approval?.['Next']).toBe(SWITCH_STATE);
    expect(into).toEqual([APPROVAL_STATE]);
    expect(successors(definition.States['ShouldSwitchRegistry'] ?? { Type: 'Choice' })).toEqual([
      'SummariseRestore',
      APPROVAL_STATE,
    ]);
  });

  it('ends a rejected or unanswered approval on the failure path, from which no switch is reachable', () => {
    // Act
    const definition = deployedRestore(on);
    const catchers = (definition.States[APPROVAL_STATE]?.['Catch'] ?? []) as Array<{
      ErrorEquals: string[];
      Next: string;
    }>;
    const fromRefusals = catchers.map((catcher) => reachable(definition, catcher.Next));

    // Assess
    expect(catchers.map((catcher) => catcher.ErrorEquals)).toEqual([
      ['States.Timeout'],
      ['States.ALL'],
    ]);
    for (const states of fromRefusals) {
      expect(states.has(SWITCH_STATE)).toBe(false);
      expect(states).toContain('DescribeRestoreFailure');
      expect(states).toContain('RestoreFailed');
    }
  });

  it('publishes the notice to the alarm topic named by a substitution, and asl-validator accepts the definition', () => {
    // Prepare
    const props = restoreMachine(on);
    const substitutions = props['DefinitionSubstitutions'] as Record<string, unknown>;
    const text = JSON.stringify(deployedRestore(on));
    const filled = text.replace(/\$\{(\w+)\}/g, (_m, name: string) =>
      name === 'CopyPollSeconds'
        ? '10'
        : name === 'CopyTimeoutSeconds'
          ? '3600'
          : name === APPROVAL_TOPIC_PLACEHOLDER
            ? 'arn:aws:sns:eu-west-1:123456789012:regvault-alarms'
            : `arn:aws:lambda:eu-west-1:123456789012:function:${name}`,
    );

    // Act
    const result = aslValidator(JSON.parse(filled), { checkPaths: true, checkArn: true });

    // Assess
    expect(result.errorsText()).toBe('');
    expect(substitutions[APPROVAL_TOPIC_PLACEHOLDER]).toEqual({
      Ref: logicalIdOf(on, on.stack.alarmTopic as never),
    });
    expect(text).not.toMatch(/secret-access-key|accessKeyId|kubeconfig/i);
  });

  it.each([
    ['the deployer topic', onDeployerTopic, FULL_CONTEXT.alarmTopicArn],
    ['the stack topic', on, undefined],
  ])('lets the restore state machine publish to %s alone', (_name, built, topicArn) => {
    // Act
    const publishes = machineStatements(built).filter((s) => actionsOf(s).includes('sns:Publish'));
    const publishers = statementsOf(built)
      .filter((s) => actionsOf(s).includes('sns:Publish'))
      .map((s) => s.policy);

    // Assess
    expect(publishes).toHaveLength(1);
    expect(actionsOf(publishes[0] as never)).toEqual(['sns:Publish']);
    expect(resourceList(publishes[0] as never)).toEqual([
      topicArn ?? { Ref: logicalIdOf(built, built.stack.alarmTopic as never) },
    ]);
    expect(publishers).toEqual([publishes[0]?.policy]);
  });

  it("grants the stack topic's key to the restore state machine in the key policy, through SNS only", () => {
    // Prepare
    const built = on;
    const roleArn = {
      'Fn::GetAtt': [logicalIdOf(built, built.stack.stateMachines.restore.role as never), 'Arn'],
    };

    // Act
    const keys = Object.values(resourcesOf(built.template, 'AWS::KMS::Key'));
    const grants = keys
      .flatMap(
        (key) =>
          (key.Properties['KeyPolicy'] as { Statement: Array<Record<string, unknown>> }).Statement,
      )
      .filter((statement) => statement['Sid'] === 'RestoreApprovalNotice');

    // Assess
    expect(grants).toEqual([
      expect.objectContaining({
        Principal: { AWS: roleArn },
        Action: ['kms:Decrypt', 'kms:GenerateDataKey'],
        Condition: {
          StringEquals: {
            'kms:ViaService': {
              'Fn::Join': ['', ['sns.', { Ref: 'AWS::Region' }, '.amazonaws.com']],
            },
          },
        },
      }),
    ]);
  });

  it('lets only the approver policy answer a task token, on the restore state machine', () => {
    // Prepare
    const machineArn = {
      Ref: logicalIdOf(onDeployerTopic, onDeployerTopic.stack.stateMachines.restore),
    };

    // Act
    const roleGrants = statementsOf(onDeployerTopic).filter((s) =>
      actionsOf(s).some((action) => action.startsWith('states:SendTask')),
    );
    const policies = Object.values(
      resourcesOf(onDeployerTopic.template, 'AWS::IAM::ManagedPolicy'),
    );

    // Assess
    expect(roleGrants).toEqual([]);
    expect(policies).toHaveLength(1);
    expect(policies[0]?.Properties['PolicyDocument']).toEqual({
      Version: '2012-10-17',
      Statement: [
        {
          Effect: 'Allow',
          Action: ['states:SendTaskFailure', 'states:SendTaskSuccess'],
          Resource: machineArn,
        },
      ],
    });
    onDeployerTopic.template.hasOutput('RestoreApproverPolicyArn', {});
  });

  it.each([
    ['the stack topic', on],
    ['the deployer topic, cluster and VPC', onDeployerTopic],
  ])('leaves cdk-nag with nothing unacknowledged (%s)', (_name, built) => {
    // Act
    const report = new AwsSolutionsChecks(undefined, {}).validateScope(built.stack);

    // Assess
    expect(report.violations.map((violation) => violation.ruleName)).toEqual([]);
  });
});

/** What the stood-in Lambda tasks answer: a restore that copies, proves and verifies. */
const ANSWERS: Record<string, (input: Record<string, unknown>) => unknown> = {
  ResolveSnapshot: () => ({
    runId: 'run-1',
    snapshotId: 'snap-1',
    target: { bucket: 'registry-restored', region: 'eu-west-1', access: 'vault' },
    switchRegistry: true,
    rollbackOnFailure: true,
    objects: 3,
    bytes: 30,
  }),
  CheckClusterTargetAndSnapshot: () => ({}),
  EnqueueBlobParts: () => ({ deadline: '2030-01-01T00:00:00Z' }),
  EnqueueLinkParts: () => ({ deadline: '2030-01-01T00:00:00Z' }),
  CountFinishedBlobParts: () => ({ aborted: 0, finished: 1, total: 1, overdue: false }),
  CountFinishedLinkParts: () => ({ aborted: 0, finished: 1, total: 1, overdue: false }),
  ProveRestoredContent: () => ({ ok: true, message: '3 objects present' }),
  SwitchRegistryStorage: () => ({ changed: true }),
  CheckRollout: () => ({ verdict: 'done' }),
  VerifyRegistry: () => ({ ok: true }),
  // The failure path's function names the failure after the error it is given.
  DescribeRestoreFailure: (input) => {
    const error = input['error'] as { Error: string; Cause: string };
    return { rolledBack: false, error: error.Error, message: error.Cause };
  },
};

/** Runs the approval definition with `approval` answering its wait; the states entered and the end. */
async function runApproval(
  approval: (input: Record<string, unknown>) => Promise<unknown>,
  timeoutSeconds = 60,
): Promise<{ entered: string[]; error?: string; cause?: string; notice?: unknown }> {
  const text = withRestoreApproval(fileText, timeoutSeconds).replace(
    /\$\{(\w+)\}/g,
    (_m, name: string) =>
      name === 'CopyPollSeconds'
        ? '1'
        : name === 'CopyTimeoutSeconds'
          ? '60'
          : `arn:aws:lambda:us-east-1:000000000000:function:${name}`,
  );
  const definition = JSON.parse(text) as Definition;
  const entered: string[] = [];
  let notice: unknown;
  const handlers: Record<string, (input: Record<string, unknown>) => Promise<unknown>> = {};
  for (const [name, state] of Object.entries(definition.States)) {
    if (state.Type !== 'Task') continue;
    handlers[name] = async (input) => {
      entered.push(name);
      if (name === APPROVAL_STATE) {
        notice = input['Message'];
        return approval(input);
      }
      const answer = ANSWERS[name];
      if (answer === undefined) throw new Error(`no stand-in for ${name}`);
      return answer(input);
    };
  }
  const machine = new StateMachine(definition as never, {
    validationOptions: { noValidate: true },
  });
  const execution = machine.run({ target: { bucket: 'registry-restored' } } as never, {
    context: {
      Execution: { Id: 'arn:aws:states:local:execution:restore:1' },
      Task: { Token: 'token-1' },
    } as never,
    overrides: {
      taskResourceLocalHandlers: handlers as never,
      waitTimeOverrides: Object.fromEntries(
        Object.entries(definition.States)
          .filter(([, state]) => state.Type === 'Wait')
          .map(([name]) => [name, 0]),
      ),
    },
  });
  try {
    await execution.result;
    return { entered, notice };
  } catch (err) {
    const failure = err as {
      name?: string;
      message?: string;
      cause?: { name?: string; message?: string };
    };
    return {
      entered,
      notice,
      ...(failure.cause?.name === undefined ? {} : { error: failure.cause.name }),
      ...(failure.cause?.message === undefined ? {} : { cause: failure.cause.message }),
    };
  }
}

describe('a restore waiting for approval, run in aws-local-stepfunctions', () => {
  it('switches once approved, after a notice naming the snapshot, the target and the task token', async () => {
    // Act
    const run = await runApproval(async () => ({ approved: true }));

    // Assess
    expect(run.error).toBeUndefined();
    expect(run.entered.slice(-4)).toEqual([
      APPROVAL_STATE,
      SWITCH_STATE,
      'CheckRollout',
      'VerifyRegistry',
    ]);
    expect(run.notice).toEqual(
      expect.objectContaining({
        execution: 'arn:aws:states:local:execution:restore:1',
        snapshotId: 'snap-1',
        target: { bucket: 'registry-restored', region: 'eu-west-1', access: 'vault' },
        taskToken: 'token-1',
        approve: 'regvault approve --task-token token-1',
      }),
    );
  });

  it('ends as RestoreNotApproved without switching when the approver rejects it', async () => {
    // Act
    const run = await runApproval(async () => {
      throw Object.assign(new Error('the snapshot is too old'), { name: 'RestoreRejected' });
    });

    // Assess
    expect(run.entered).not.toContain(SWITCH_STATE);
    expect(run.entered.slice(-2)).toEqual([APPROVAL_STATE, 'DescribeRestoreFailure']);
    expect(run.error).toBe('RestoreNotApproved');
    expect(run.cause).toMatch(
      /the switch to s3:\/\/registry-restored was not approved: .*RestoreRejected.*the snapshot is too old/,
    );
  });

  it('ends as RestoreNotApproved without switching when nobody answers in time', async () => {
    // Act: a wait that never ends, a one-second approval timeout
    const run = await runApproval(() => new Promise(() => {}), 1);

    // Assess
    expect(run.entered).not.toContain(SWITCH_STATE);
    expect(run.error).toBe('RestoreNotApproved');
    expect(run.cause).toMatch(
      /nobody approved the switch to s3:\/\/registry-restored within 0 h; the target holds snapshot snap-1/,
    );
  }, 20_000);
});
