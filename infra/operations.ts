/**
 * Running regvault: the backup and retention schedules and their dead-letter
 * queue, the alarms (failed runs, no recent snapshot, stuck copies, dead
 * letters), the topic they notify, and the dashboard. docs/operations.md says
 * what each alarm means and what to do.
 */
import { Annotations, Duration, type Stack, Validations } from 'aws-cdk-lib';
import {
  Alarm,
  AlarmStatusWidget,
  ComparisonOperator,
  Dashboard,
  GraphWidget,
  type IAlarmAction,
  MathExpression,
  Metric,
  TextWidget,
  TreatMissingData,
} from 'aws-cdk-lib/aws-cloudwatch';
import { SnsAction } from 'aws-cdk-lib/aws-cloudwatch-actions';
import { Rule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import { PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import type { Key } from 'aws-cdk-lib/aws-kms';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { CfnSchedule } from 'aws-cdk-lib/aws-scheduler';
import { type ITopic, Topic } from 'aws-cdk-lib/aws-sns';
import { EmailSubscription } from 'aws-cdk-lib/aws-sns-subscriptions';
import { type IQueue, Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import type { StateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import type { WorkflowName } from '../functions/commons/workflows/steps.ts';
import type { HouseFunction } from './house-function.ts';
import { houseKey } from './keys.ts';
import type { RegvaultSettings } from './settings.ts';

/** Backups run daily at 02:00 (`backupScheduleTimezone`) unless `backupSchedule` says otherwise. */
export const DEFAULT_BACKUP_SCHEDULE = 'cron(0 2 * * ? *)';

/** The namespace and dimension of the functions' Powertools metrics (EMF). */
const REGVAULT_METRICS = { namespace: 'Regvault', dimensionsMap: { service: 'regvault' } };

/**
 * The alarm topic: the deployer's `alarmTopicArn`, else one the stack makes,
 * encrypted with a key of its own that CloudWatch may use (an alarm cannot
 * publish to a topic under the AWS-managed SNS key), with `alarmEmails`
 * subscribed.
 */
export function alarmTopic(
  stack: Stack,
  settings: RegvaultSettings,
): { readonly topic: ITopic; readonly key: Key | undefined } {
  if (settings.alarmTopicArn !== undefined)
    return {
      topic: Topic.fromTopicArn(stack, 'AlarmTopic', settings.alarmTopicArn),
      key: undefined,
    };
  const key = houseKey(stack, 'AlarmTopicKey', 'regvault alarm topic encryption');
  key.addToResourcePolicy(
    new PolicyStatement({
      sid: 'CloudWatchAlarmsPublish',
      principals: [new ServicePrincipal('cloudwatch.amazonaws.com')],
      actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
      resources: ['*'],
      conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
    }),
  );
  const topic = new Topic(stack, 'AlarmTopic', {
    displayName: 'regvault alarms',
    masterKey: key,
    enforceSSL: true,
  });
  for (const email of settings.alarmEmails) topic.addSubscription(new EmailSubscription(email));
  return { topic, key };
}

/** What the alarms notify. */
export function alarmTopicAction(topic: ITopic): IAlarmAction {
  return new SnsAction(topic);
}

/**
 * The backup schedule's expression, or undefined for none: `off`, or no
 * setting and nothing a scheduled backup could back up. A scheduled backup
 * starts with `backupInput`, and with the default input (`{}`) it reads the
 * registry's bucket from the cluster, so it needs `kubeconfigSecretArn`; an
 * input naming a `source` needs none. A schedule that would fail every night
 * is worse than none: the stack says so at synth instead.
 */
export function backupScheduleOf(stack: Stack, settings: RegvaultSettings): string | undefined {
  if (settings.backupSchedule === 'off') return undefined;
  if (settings.backupSchedule !== undefined) return settings.backupSchedule;
  if (settings.kubeconfigSecretArn !== undefined || 'source' in settings.backupInput)
    return DEFAULT_BACKUP_SCHEDULE;
  Annotations.of(stack).addWarningV2(
    'regvault:noBackupSchedule',
    'No backup schedule: a scheduled backup reads the registry from the cluster and no kubeconfigSecretArn is set. ' +
      'Set kubeconfigSecretArn, or a backupInput with a source, or backupSchedule=off to silence this.',
  );
  return undefined;
}

/** What the schedules start. */
export interface SchedulesProps {
  readonly settings: RegvaultSettings;
  readonly backup: StateMachine;
  readonly prune: HouseFunction;
}

/** The schedules made, and the queue their undeliverable starts go to (undefined: no schedule). */
export interface Schedules {
  readonly backup: boolean;
  readonly deadLetterQueue: Queue | undefined;
}

/**
 * The backup and retention schedules the settings ask for, each with a role
 * that may start only its target, and one dead-letter queue for the starts
 * Scheduler could not make (a role or target gone, throttling past its
 * retries): without it a schedule that stopped working says nothing.
 */
export function makeSchedules(
  stack: Stack,
  { settings, backup, prune }: SchedulesProps,
): Schedules {
  const backupExpression = backupScheduleOf(stack, settings);
  if (backupExpression === undefined && settings.pruneSchedule === undefined)
    return { backup: false, deadLetterQueue: undefined };
  const deadLetterQueue = new Queue(stack, 'ScheduleDeadLetterQueue', {
    encryption: QueueEncryption.SQS_MANAGED,
    enforceSSL: true,
    retentionPeriod: Duration.days(14),
  });
  Validations.of(deadLetterQueue).acknowledge({
    id: 'AwsSolutions-SQS3',
    reason:
      "This is EventBridge Scheduler's dead-letter queue for the schedules' failed starts; nothing consumes it, an alarm watches it.",
  });
  if (backupExpression !== undefined) {
    schedule(stack, settings, deadLetterQueue, {
      id: 'Backup',
      roleDescription:
        'EventBridge Scheduler: start the regvault backup state machine, nothing else',
      description: 'regvault: scheduled backup of the registry bucket into the vault',
      expression: backupExpression,
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
    schedule(stack, settings, deadLetterQueue, {
      id: 'Prune',
      roleDescription: 'EventBridge Scheduler: invoke the regvault prune function, nothing else',
      description: 'regvault: scheduled retention of vault snapshots',
      expression: settings.pruneSchedule,
      arn: prune.function.functionArn,
      // The function itself, not grantInvoke's `<arn>:*` too: the schedule invokes no version or alias.
      grant: (role) =>
        role.addToPrincipalPolicy(
          new PolicyStatement({
            actions: ['lambda:InvokeFunction'],
            resources: [prune.function.functionArn],
          }),
        ),
      input: { dryRun: false },
      maximumRetryAttempts: 2,
    });
  }
  return { backup: backupExpression !== undefined, deadLetterQueue };
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

function schedule(
  stack: Stack,
  settings: RegvaultSettings,
  deadLetterQueue: Queue,
  props: ScheduleProps,
): void {
  const role = new Role(stack, `${props.id}ScheduleRole`, {
    description: props.roleDescription,
    assumedBy: new ServicePrincipal('scheduler.amazonaws.com', {
      conditions: { StringEquals: { 'aws:SourceAccount': stack.account } },
    }),
  });
  props.grant(role);
  // Scheduler sends what it could not deliver with the schedule's role (SendMessage alone, by ARN).
  role.addToPrincipalPolicy(
    new PolicyStatement({ actions: ['sqs:SendMessage'], resources: [deadLetterQueue.queueArn] }),
  );
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
      deadLetterConfig: { arn: deadLetterQueue.queueArn },
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
  readonly settings: RegvaultSettings;
  readonly copyQueue: IQueue;
  readonly deadLetterQueue: IQueue;
  readonly stateMachines: Readonly<Record<WorkflowName, StateMachine>>;
  readonly worker: IFunction;
  readonly schedules: Schedules;
  /** Every function's error alarm, for the dashboard's alarm panel. */
  readonly functionAlarms: readonly Alarm[];
  readonly alarmAction: IAlarmAction;
}

/** A metric of the functions' own (Powertools, namespace `Regvault`). */
function regvaultMetric(metricName: string, period: Duration, label?: string): Metric {
  return new Metric({
    ...REGVAULT_METRICS,
    metricName,
    statistic: 'Sum',
    period,
    ...(label === undefined ? {} : { label }),
  });
}

/**
 * The alarms, each notifying the alarm topic (docs/operations.md is their
 * runbook), and the dashboard.
 */
export function makeMonitoring(stack: Stack, props: MonitoringProps): void {
  const { settings, copyQueue, deadLetterQueue, stateMachines, schedules } = props;
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
    new Alarm(stack, 'DeadLettersWaitingAlarm', {
      alarmDescription:
        "Dead letters have waited 15 minutes: the dead-letter function is not ending their shards, so a workflow waits for them until its copy deadline; read that function's logs",
      metric: deadLetterQueue.metricApproximateNumberOfMessagesVisible({
        period: Duration.minutes(5),
        statistic: 'Maximum',
      }),
      threshold: 1,
      evaluationPeriods: 3,
      comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: TreatMissingData.NOT_BREACHING,
    }),
    new Alarm(stack, 'CopyQueueAgeAlarm', {
      alarmDescription: `A copy message has waited half the copy deadline (${settings.copyTimeoutHours / 2} h) without a worker taking it: the workers are not draining the queue (throttled, failing, or too few for the backlog)`,
      // Half the deadline: time left to act before the workflow fails the copy.
      metric: copyQueue.metricApproximateAgeOfOldestMessage({
        period: Duration.minutes(5),
        statistic: 'Maximum',
      }),
      threshold: (settings.copyTimeoutHours * 3_600) / 2,
      evaluationPeriods: 1,
      comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: TreatMissingData.NOT_BREACHING,
    }),
  ];
  if (schedules.deadLetterQueue !== undefined) {
    alarms.push(
      new Alarm(stack, 'ScheduleDeadLetterAlarm', {
        alarmDescription:
          'EventBridge Scheduler could not start a scheduled backup or retention run (its message in the schedule dead-letter queue says why): that run did not happen',
        metric: schedules.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
          period: Duration.minutes(5),
          statistic: 'Maximum',
        }),
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: TreatMissingData.NOT_BREACHING,
      }),
    );
  }
  if (schedules.backup) {
    alarms.push(
      new Alarm(stack, 'NoRecentBackupAlarm', {
        alarmDescription: `No backup completed a snapshot in ${settings.backupAlarmHours} hours although backups are scheduled: check the schedule, the last backup executions and the schedule dead-letter queue`,
        // finalize counts each complete snapshot; no count at all is the alarm too.
        metric: regvaultMetric('SnapshotsComplete', Duration.hours(settings.backupAlarmHours)),
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: ComparisonOperator.LESS_THAN_THRESHOLD,
        treatMissingData: TreatMissingData.BREACHING,
      }),
    );
  }
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
  for (const alarm of alarms) alarm.addAlarmAction(props.alarmAction);
  makeDashboard(stack, props, [...alarms, ...props.functionAlarms]);
}

function makeDashboard(stack: Stack, props: MonitoringProps, alarms: readonly Alarm[]): void {
  const { copyQueue, deadLetterQueue, stateMachines, worker } = props;
  const minute = Duration.minutes(1);
  const copied = regvaultMetric('ObjectsCopied', minute, 'copied');
  const skipped = regvaultMetric('ObjectsSkipped', minute, 'skipped (unchanged)');
  const dashboard = new Dashboard(stack, 'Dashboard', { defaultInterval: Duration.hours(6) });
  dashboard.addWidgets(
    new TextWidget({
      markdown:
        '# regvault\nCopy progress from the copy workers, backups and their duration, queues, and every alarm (docs/operations.md says what to do about each).',
      width: 24,
      height: 2,
    }),
  );
  dashboard.addWidgets(
    new AlarmStatusWidget({ title: 'Alarms', alarms: [...alarms], width: 24, height: 4 }),
  );
  dashboard.addWidgets(
    new GraphWidget({
      title: 'Objects per second',
      left: [
        new MathExpression({
          expression: '(copied + skipped) / PERIOD(copied)',
          usingMetrics: { copied, skipped },
          label: 'copied or skipped per second',
          period: minute,
        }),
        new MathExpression({
          expression: 'copied / PERIOD(copied)',
          usingMetrics: { copied },
          label: 'copied per second',
          period: minute,
        }),
      ],
      width: 8,
    }),
    new GraphWidget({
      title: 'Objects per minute',
      left: [copied, skipped, regvaultMetric('ObjectsFailed', minute, 'failed')],
      width: 8,
    }),
    new GraphWidget({
      title: 'Bytes copied per minute',
      left: [regvaultMetric('BytesCopied', minute, 'bytes')],
      width: 8,
    }),
  );
  const hour = Duration.hours(1);
  dashboard.addWidgets(
    new GraphWidget({
      title: 'Snapshots and failures per hour',
      left: [
        regvaultMetric('SnapshotsComplete', hour, 'snapshots complete'),
        regvaultMetric('SnapshotsFailed', hour, 'snapshots failed'),
        regvaultMetric('BackupRunsEndedDead', hour, 'backup runs ended dead'),
        regvaultMetric('CopyShardsDeadLettered', hour, 'shards dead-lettered'),
        regvaultMetric('VerificationsFailed', hour, 'restore verifications failed'),
      ],
      width: 12,
    }),
    new GraphWidget({
      title: 'Execution duration (max)',
      left: Object.entries(stateMachines).map(([name, machine]) =>
        machine.metricTime({ statistic: 'Maximum', period: hour, label: `${name} duration` }),
      ),
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
      right: [copyQueue.metricApproximateAgeOfOldestMessage({ label: 'oldest message (s)' })],
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
