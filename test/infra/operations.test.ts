/**
 * Alarms that reach someone: the topic, what each alarm watches, and the
 * dashboard (docs/operations.md is the runbook of every alarm named here).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { Match } from 'aws-cdk-lib/assertions';
import { PROJECT_ROOT } from '../../infra/house-function.ts';
import { type Built, buildStack, FULL_CONTEXT, logicalIdOf, resourcesOf } from './support.ts';

const ALARM_EMAILS = 'oncall@example.com,backup-owner@example.com';
const { alarmTopicArn: _topic, ...withoutTopic } = FULL_CONTEXT;
// The cluster and a schedule, alarms to the stack's own topic.
const owned = buildStack({ ...withoutTopic, alarmEmails: ALARM_EMAILS });
// The deployer's topic instead.
const given = buildStack(FULL_CONTEXT);

/** The alarm whose logical id starts with `id`. */
function alarm(built: Built, id: string): Record<string, unknown> {
  const found = Object.entries(resourcesOf(built.template, 'AWS::CloudWatch::Alarm')).find(
    ([logicalId]) => logicalId.startsWith(id),
  );
  if (found === undefined) throw new Error(`no alarm ${id}`);
  return found[1].Properties;
}

describe('the alarm topic', () => {
  it('is the stack own, encrypted with a key CloudWatch may use, TLS-only, with the emails subscribed', () => {
    // Prepare
    const { template, stack } = owned;
    const topicRef = { Ref: logicalIdOf(owned, stack.alarmTopic as never) };

    // Act
    const subscriptions = Object.values(resourcesOf(template, 'AWS::SNS::Subscription')).map(
      (subscription) => subscription.Properties,
    );
    const [keyPolicy] = Object.entries(resourcesOf(template, 'AWS::KMS::Key'))
      .filter(([id]) => id.startsWith('AlarmTopicKey'))
      .map(
        ([, key]) => key.Properties['KeyPolicy'] as { Statement: Array<Record<string, unknown>> },
      );

    // Assess
    template.hasResourceProperties('AWS::SNS::Topic', {
      KmsMasterKeyId: Match.anyValue(),
    });
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
    expect(subscriptions).toEqual(
      ['oncall@example.com', 'backup-owner@example.com'].map((email) =>
        expect.objectContaining({ Protocol: 'email', Endpoint: email, TopicArn: topicRef }),
      ),
    );
    expect(keyPolicy?.Statement).toContainEqual(
      expect.objectContaining({
        Principal: { Service: 'cloudwatch.amazonaws.com' },
        Action: ['kms:Decrypt', 'kms:GenerateDataKey*'],
      }),
    );
    // The account administers the key; it cannot encrypt or decrypt with it.
    const rootActions = (keyPolicy?.Statement ?? [])
      .filter((statement) => JSON.stringify(statement['Principal']).includes(':root'))
      .flatMap((statement) => statement['Action'] as string[]);
    expect(rootActions).not.toContain('kms:*');
    expect(rootActions.filter((action) => /Decrypt|Encrypt|GenerateDataKey/.test(action))).toEqual(
      [],
    );
  });

  it('is the deployer topic when alarmTopicArn is given, and the stack makes none', () => {
    // Prepare / Act
    const { template } = given;

    // Assess
    template.resourceCountIs('AWS::SNS::Topic', 0);
    template.hasOutput('AlarmTopicArn', { Value: FULL_CONTEXT.alarmTopicArn });
  });

  it.each([
    ['its own topic', owned],
    ['the deployer topic', given],
  ])('is notified by every alarm (%s)', (_name, built) => {
    // Prepare
    const topic = JSON.stringify(
      built === given
        ? FULL_CONTEXT.alarmTopicArn
        : { Ref: logicalIdOf(built, built.stack.alarmTopic as never) },
    );

    // Act
    const alarms = Object.entries(resourcesOf(built.template, 'AWS::CloudWatch::Alarm'));
    const silent = alarms
      .filter(([, props]) => JSON.stringify(props.Properties['AlarmActions']) !== `[${topic}]`)
      .map(([id]) => id);

    // Assess
    expect(alarms.length).toBeGreaterThan(25);
    expect(silent).toEqual([]);
  });
});

describe('the alarms', () => {
  it('fire when no snapshot completed in backupAlarmHours, no data counting as none', () => {
    // Prepare
    const built = buildStack({ ...FULL_CONTEXT, backupAlarmHours: '30' });

    // Act
    const props = alarm(built, 'NoRecentBackupAlarm');

    // Assess
    expect(props).toMatchObject({
      Namespace: 'Regvault',
      MetricName: 'SnapshotsComplete',
      Dimensions: [{ Name: 'service', Value: 'regvault' }],
      Statistic: 'Sum',
      Period: 30 * 3_600,
      EvaluationPeriods: 1,
      ComparisonOperator: 'LessThanThreshold',
      Threshold: 1,
      TreatMissingData: 'breaching',
    });
  });

  it('watch for recent backups only when backups are scheduled', () => {
    // Prepare
    const unscheduled = buildStack({ ...FULL_CONTEXT, backupSchedule: 'off', backupInput: '{}' });

    // Act
    const ids = Object.keys(resourcesOf(unscheduled.template, 'AWS::CloudWatch::Alarm'));

    // Assess
    expect(ids.filter((id) => id.startsWith('NoRecentBackupAlarm'))).toEqual([]);
    expect(ids.filter((id) => id.startsWith('ScheduleDeadLetterAlarm'))).toEqual([]);
  });

  it('fire when a copy message waited half the copy deadline', () => {
    // Prepare
    const { stack } = given;

    // Act
    const props = alarm(given, 'CopyQueueAgeAlarm');

    // Assess
    expect(props).toMatchObject({
      Namespace: 'AWS/SQS',
      MetricName: 'ApproximateAgeOfOldestMessage',
      Statistic: 'Maximum',
      Threshold: (5 * 3_600) / 2,
      Dimensions: [
        {
          Name: 'QueueName',
          Value: { 'Fn::GetAtt': [logicalIdOf(given, stack.copyQueue), 'QueueName'] },
        },
      ],
    });
  });

  it('fire when dead letters wait 15 minutes undrained', () => {
    // Prepare
    const { stack } = given;

    // Act
    const props = alarm(given, 'DeadLettersWaitingAlarm');

    // Assess
    expect(props).toMatchObject({
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Period: 300,
      EvaluationPeriods: 3,
      Threshold: 1,
      Dimensions: [
        {
          Name: 'QueueName',
          Value: { 'Fn::GetAtt': [logicalIdOf(given, stack.deadLetterQueue), 'QueueName'] },
        },
      ],
    });
  });

  it('fire when Scheduler could not start a scheduled run', () => {
    // Prepare
    const queues = Object.keys(resourcesOf(given.template, 'AWS::SQS::Queue'));
    const scheduleQueue = queues.find((id) => id.startsWith('ScheduleDeadLetterQueue'));

    // Act
    const props = alarm(given, 'ScheduleDeadLetterAlarm');

    // Assess
    expect(scheduleQueue).toBeDefined();
    expect(props).toMatchObject({
      MetricName: 'ApproximateNumberOfMessagesVisible',
      Threshold: 1,
      Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [scheduleQueue, 'QueueName'] } }],
    });
  });

  it('each have a runbook entry in docs/operations.md', () => {
    // Prepare
    const runbook = readFileSync(join(PROJECT_ROOT, 'docs', 'operations.md'), 'utf8');
    const headings = runbook.split('\n').filter((line) => line.startsWith('### '));
    const named = new Set(
      headings.flatMap((line) => Array.from(line.matchAll(/`([A-Za-z]+)`/g), (m) => m[1] ?? '')),
    );

    // Act
    const ids = Object.keys(resourcesOf(given.template, 'AWS::CloudWatch::Alarm')).map((id) =>
      // Function error alarms are one kind, `<Function>ErrorsAlarm`; the others by their id.
      /Function.*ErrorsAlarm/.test(id) ? 'FunctionErrorsAlarm' : id.replace(/[0-9A-F]{8}$/, ''),
    );

    // Assess
    expect([...new Set(ids)].filter((id) => !named.has(id))).toEqual([]);
  });
});

describe('the dashboard', () => {
  /** The dashboard's body as text, tokens (queue names, ARNs) replaced by "<ref>". */
  function dashboardText(built: Built): string {
    const [dashboard] = Object.values(resourcesOf(built.template, 'AWS::CloudWatch::Dashboard'));
    const body = dashboard?.Properties['DashboardBody'] as { 'Fn::Join': [string, unknown[]] };
    return body['Fn::Join'][1].map((part) => (typeof part === 'string' ? part : '<ref>')).join('');
  }

  it('graphs objects per second, failures, execution duration, and every alarm', () => {
    // Prepare
    const text = dashboardText(given);

    // Act
    const widgets = (
      JSON.parse(text) as { widgets: Array<{ properties: Record<string, unknown> }> }
    ).widgets;
    const titles = widgets.map((widget) => widget.properties['title']);
    const alarmPanel = widgets.find((widget) => widget.properties['title'] === 'Alarms');

    // Assess
    expect(titles).toEqual(
      expect.arrayContaining([
        'Objects per second',
        'Bytes copied per minute',
        'Snapshots and failures per hour',
        'Execution duration (max)',
      ]),
    );
    expect(text).toContain('(copied + skipped) / PERIOD(copied)');
    expect(text).toContain('"AWS/States","ExecutionTime"');
    expect(text).toContain('"Regvault","SnapshotsFailed"');
    expect((alarmPanel?.properties['alarms'] as unknown[] | undefined)?.length).toBe(
      Object.keys(resourcesOf(given.template, 'AWS::CloudWatch::Alarm')).length,
    );
  });
});
