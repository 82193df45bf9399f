/**
 * Running regvault: the backup and retention schedules, the alarms on dead
 * letters and on executions that did not succeed, the topic they notify, and
 * the dashboard.
 */
import { Duration, type Stack } from 'aws-cdk-lib';
import {
  Alarm,
  ComparisonOperator,
  Dashboard,
  GraphWidget,
  type IAlarmAction,
  Metric,
  TextWidget,
  TreatMissingData,
} from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import { Rule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import { Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { CfnSchedule } from 'aws-cdk-lib/aws-scheduler';
import { Topic } from 'aws-cdk-lib/aws-sns';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import type { StateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import type { WorkflowName } from '../functions/commons/workflows/steps.ts';
import type { HouseFunction } from './house-function.ts';
import type { RegvaultSettings } from './settings.ts';

/** Notifies the deployer's `alarmTopicArn`, if one is set. */
export function alarmTopicAction(
  stack: Stack,
  settings: RegvaultSettings,
): IAlarmAction | undefined {
  return settings.alarmTopicArn === undefined
    ? undefined
    : new SnsAction(Topic.fromTopicArn(stack, 'AlarmTopic', settings.alarmTopicArn));
}

/** What the schedules start. */
export interface SchedulesProps {
  readonly settings: RegvaultSettings;
  readonly backup: StateMachine;
  readonly prune: HouseFunction;
}

/** The backup and retention schedules the settings ask for, each with a role that may start only its target. */
export function makeSchedules(stack: Stack, { settings, backup, prune }: SchedulesProps): void {
  if (settings.backupSchedule !== undefined) {
    schedule(stack, settings, {
      id: 'Backup',
      roleDescription:
        'EventBridge Scheduler: start the regvault backup state machine, nothing else',
      description: 'regvault: scheduled backup of the registry bucket into the vault',
      expression: settings.backupSchedule,
      arn: backup.stateMachineArn,
      grant: (role) => backup.grantStartExecution(role),
      input: settings.backupInput,
      maximumRetryAttempts: 3,
    });
  }
  if (settings.pruneSchedule !== undefined) {
    prune.function.addEnvironment('RETENTION_POLICY', JSON.stringify(settings.retentionPolicy));
    prune.function.addEnvironment(
      'RETENTION_GRACE_MINUTES',
      String(settings.retentionGraceMinutes),
    );
    schedule(stack, settings, {
      id: 'Prune',
      roleDescription: 'EventBridge Scheduler: invoke the regvault prune function, nothing else',
      description: 'regvault: scheduled retention of vault snapshots',
      expression: settings.pruneSchedule,
      arn: prune.function.functionArn,
      grant: (role) => prune.function.grantInvoke(role),
      input: { dryRun: false },
      maximumRetryAttempts: 2,
    });
  }
}

interface ScheduleProps {
  /** `Backup` makes `BackupScheduleRole` and `BackupSchedule`. */
  readonly id: string;
  readonly roleDescription: string;
  readonly description: string;
  readonly expression: string;
  readonly arn: string;
  /** Lets the schedule's role start the target, and nothing else. */
  readonly grant: (role: Role) => void;
  readonly input: unknown;
  readonly maximumRetryAttempts: number;
}

function schedule(stack: Stack, settings: RegvaultSettings, props: ScheduleProps): void {
  const role = new Role(stack, `${props.id}ScheduleRole`, {
    description: props.roleDescription,
    assumedBy: new ServicePrincipal('scheduler.amazonaws.com', {
      conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
    }),
  });
  props.grant(role);
  new CfnSchedule(stack, `${props.id}Schedule`, {
    description: props.description,
    scheduleExpression: props.expression,
    scheduleExpressionTimezone: settings.backupScheduleTimezone,
    flexibleTimeWindow: { mode: 'OFF' },
    state: 'ENABLED',
    target: {
      arn: props.arn,
      roleArn: role.roleArn,
      input: JSON.stringify(props.input),
      retryPolicy: {
        maximumRetryAttempts: props.maximumRetryAttempts,
        maximumEventAgeInSeconds: 3600,
      },
    },
  });
}

/**
 * The rule that ends the run of a backup execution that died: aborted, timed
 * out, or failed (a failure path that itself died, such as a Lambda timeout
 * in MarkSnapshotFailed, leaves its run behind). The end-dead-run function
 * marks the snapshot failed with the execution's status and deletes its run
 * lease, so the next backup is let in at once. Retried by EventBridge (its
 * default: 24 hours, 185 attempts); a run it never ends is ended by the next
 * backup once its lease expires.
 */
export function endDeadRuns(stack: Stack, backup: StateMachine, endDeadRun: HouseFunction): Rule {
  return new Rule(stack, 'BackupExecutionEndedRule', {
    description:
      'regvault: a backup execution was aborted, timed out or failed; end its run (snapshot failed, lease released)',
    eventPattern: {
      source: ['aws.states'],
      detailType: ['Step Functions Execution Status Change'],
      detail: {
        stateMachineArn: [backup.stateMachineArn],
        status: ['ABORTED', 'TIMED_OUT', 'FAILED'],
      },
    },
    targets: [new LambdaFunction(endDeadRun.function, { retryAttempts: 185 })],
  });
}

/** What the alarms and the dashboard watch. */
export interface MonitoringProps {
  readonly copyQueue: IQueue;
  readonly deadLetterQueue: IQueue;
  readonly stateMachines: Readonly<Record<WorkflowName, StateMachine>>;
  readonly worker: IFunction;
  readonly alarmAction: IAlarmAction | undefined;
}

/** Alarms on dead letters and on executions that failed, timed out or were aborted; the dashboard. */
export function makeMonitoring(stack: Stack, props: MonitoringProps): void {
  const { copyQueue, deadLetterQueue, stateMachines, worker, alarmAction } = props;
  const alarms: Alarm[] = [
    new Alarm(stack, 'DeadLetterAlarm', {
      alarmDescription:
        'A copy message failed five deliveries and went to the dead-letter queue: its shard failed; read the copy worker logs',
      // Not the visible count: the dead-letter function drains the queue within
      // seconds, so a visible message rarely lasts until a sample. Every dead
      // letter is received by that function at least once.
      metric: deadLetterQueue.metricNumberOfMessagesReceived({
        period: Duration.minutes(1),
        statistic: 'Sum',
      }),
      threshold: 0,
      evaluationPeriods: 1,
      comparisonOperator: ComparisonOperator.GREATER_THAN_THRESHOLD,
      treatMissingData: TreatMissingData.NOT_BREACHING,
    }),
  ];
  for (const [name, machine] of Object.entries(stateMachines)) {
    const outcomes = {
      Failed: machine.metricFailed({ period: Duration.minutes(5), statistic: 'Sum' }),
      TimedOut: machine.metricTimedOut({ period: Duration.minutes(5), statistic: 'Sum' }),
      Aborted: machine.metricAborted({ period: Duration.minutes(5), statistic: 'Sum' }),
    };
    for (const [outcome, metric] of Object.entries(outcomes)) {
      alarms.push(
        new Alarm(stack, `${name}Executions${outcome}Alarm`, {
          alarmDescription: `A regvault ${name} execution ended ${outcome.toLowerCase()}: open it in the Step Functions console`,
          metric,
          threshold: 1,
          evaluationPeriods: 1,
          comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: TreatMissingData.NOT_BREACHING,
        }),
      );
    }
  }
  if (alarmAction !== undefined) for (const alarm of alarms) alarm.addAlarmAction(alarmAction);

  // The copy workers' Powertools metrics (EMF, dimension `service`).
  const copy = (metricName: string, label: string) =>
    new Metric({
      namespace: 'Regvault',
      metricName,
      dimensionsMap: { service: 'regvault' },
      statistic: 'Sum',
      period: Duration.minutes(1),
      label,
    });
  const dashboard = new Dashboard(stack, 'Dashboard', { defaultInterval: Duration.hours(6) });
  dashboard.addWidgets(
    new TextWidget({
      markdown:
        '# regvault\nCopy progress per minute from the copy workers, queue depth, executions and worker health.',
      width: 24,
      height: 2,
    }),
  );
  dashboard.addWidgets(
    new GraphWidget({
      title: 'Objects per minute',
      left: [
        copy('ObjectsCopied', 'copied'),
        copy('ObjectsSkipped', 'skipped (unchanged)'),
        copy('ObjectsFailed', 'failed'),
      ],
      width: 12,
    }),
    new GraphWidget({
      title: 'Bytes copied per minute',
      left: [copy('BytesCopied', 'bytes')],
      width: 12,
    }),
  );
  dashboard.addWidgets(
    new GraphWidget({
      title: 'Copy queue',
      left: [
        copyQueue.metricApproximateNumberOfMessagesVisible({ label: 'waiting' }),
        copyQueue.metricApproximateNumberOfMessagesNotVisible({ label: 'in flight' }),
        deadLetterQueue.metricNumberOfMessagesReceived({
          statistic: 'Sum',
          label: 'dead letters handled',
        }),
      ],
      width: 8,
    }),
    new GraphWidget({
      title: 'Executions',
      left: Object.entries(stateMachines).flatMap(([name, machine]) => [
        machine.metricStarted({ label: `${name} started` }),
        machine.metricSucceeded({ label: `${name} succeeded` }),
        machine.metricFailed({ label: `${name} failed` }),
      ]),
      width: 8,
    }),
    new GraphWidget({
      title: 'Copy workers',
      left: [
        worker.metricInvocations({ label: 'invocations' }),
        worker.metricErrors({ label: 'errors' }),
        worker.metricThrottles({ label: 'throttles' }),
      ],
      right: [worker.metricDuration({ statistic: 'Maximum', label: 'max duration' })],
      width: 8,
    }),
  );
}
