/**
 * The regvault stack: the vault bucket and its key, the copy queue and its
 * dead-letter queue, the seventeen functions (one per file in `functions/`),
 * the backup and restore state machines from `state-machines/`, the rule that
 * ends the run of a backup execution that died, the backup and retention
 * schedules and their dead-letter queue, alarms, the topic they notify and
 * a dashboard.
 * Everything is secure by default and every grant names its resource.
 *
 * Each part has a module of its own but is made in this stack's scope, not in
 * a construct: a construct's id would enter the logical id of every resource
 * under it, and CloudFormation would replace the deployed vault bucket,
 * queues, functions and roles.
 */
import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { Bucket, IBucket } from 'aws-cdk-lib/aws-s3';
import type { ITopic } from 'aws-cdk-lib/aws-sns';
import type { Queue } from 'aws-cdk-lib/aws-sqs';
import type { StateMachine } from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
// Types only: the stack reaches the functions' code through their entry files alone.
import type { FunctionName, WorkflowName } from '../functions/commons/workflows/steps.ts';
import { CopyWorkers } from './copy-workers.ts';
import { makeFunctions, registryBucketPolicy, registryReadRolePolicies } from './functions.ts';
import type { HouseFunction } from './house-function.ts';
import {
  alarmTopic,
  alarmTopicAction,
  endDeadRuns,
  makeMonitoring,
  makeSchedules,
} from './operations.ts';
import { restoreApproverPolicy } from './restore-approval.ts';
import type { RegvaultSettings } from './settings.ts';
import { VaultBucket } from './vault-bucket.ts';
import { makeWorkflows } from './workflows.ts';

export { functionArnPlaceholder } from './function-specs.ts';
export type { FunctionName, WorkflowName };

export interface RegvaultStackProps extends StackProps {
  readonly settings: RegvaultSettings;
}

/** The whole of regvault on AWS, configured by its settings. */
export class RegvaultStack extends Stack {
  readonly vaultBucket: Bucket | IBucket;
  readonly vaultKey: IKey | undefined;
  readonly copyQueue: Queue;
  readonly deadLetterQueue: Queue;
  readonly functions: Readonly<Record<FunctionName, HouseFunction>>;
  readonly stateMachines: Readonly<Record<WorkflowName, StateMachine>>;
  /** The topic every alarm notifies: the stack's own, or the deployer's `alarmTopicArn`. */
  readonly alarmTopic: ITopic;

  constructor(scope: Construct, id: string, props: RegvaultStackProps) {
    super(scope, id, props);
    const { settings } = props;
    const alarms = alarmTopic(this, settings);
    const topic = alarms.topic;
    const alarmAction = alarmTopicAction(topic);
    const vault = new VaultBucket(this, settings);
    const copy = new CopyWorkers(this, settings.copyWorkerTimeoutSeconds);
    const functions = makeFunctions(this, {
      settings,
      vault,
      copyQueue: copy.queue,
      alarmAction,
    });
    const stateMachines = makeWorkflows(this, { settings, functions, approvalTopic: alarms });
    copy.connect({
      enqueue: functions['enqueue-shards'],
      worker: functions['copy-worker'],
      deadLetter: functions['dead-letter'],
      maxWorkers: settings.copyWorkers,
    });
    endDeadRuns(this, stateMachines.backup, functions['end-dead-run']);
    const schedules = makeSchedules(this, {
      settings,
      backup: stateMachines.backup,
      prune: functions.prune,
    });
    makeMonitoring(this, {
      settings,
      schedules,
      functionAlarms: Object.values(functions).map((fn) => fn.errorsAlarm),
      copyQueue: copy.queue,
      deadLetterQueue: copy.deadLetterQueue,
      stateMachines,
      worker: functions['copy-worker'].function,
      alarmAction,
    });

    this.vaultBucket = vault.bucket;
    this.vaultKey = vault.key;
    this.copyQueue = copy.queue;
    this.deadLetterQueue = copy.deadLetterQueue;
    this.functions = functions;
    this.stateMachines = stateMachines;
    this.alarmTopic = topic;

    new CfnOutput(this, 'VaultBucketName', { value: vault.bucket.bucketName });
    new CfnOutput(this, 'BackupStateMachineArn', { value: stateMachines.backup.stateMachineArn });
    new CfnOutput(this, 'RestoreStateMachineArn', {
      value: stateMachines.restore.stateMachineArn,
    });
    new CfnOutput(this, 'CopyQueueUrl', { value: copy.queue.queueUrl });
    new CfnOutput(this, 'AlarmTopicArn', { value: topic.topicArn });
    if (settings.restoreApproval)
      new CfnOutput(this, 'RestoreApproverPolicyArn', {
        description:
          'Attach to whoever approves restores: the answer to a waiting restore, nothing else',
        value: restoreApproverPolicy(this, stateMachines.restore).managedPolicyArn,
      });
    const policy = registryBucketPolicy(this, settings, functions);
    if (policy !== undefined)
      new CfnOutput(this, 'RegistryBucketPolicy', {
        description:
          'The bucket policy a registry bucket in another account needs so the regvault roles may read it',
        value: policy,
      });
    const readRole = registryReadRolePolicies(this, settings, functions);
    if (readRole !== undefined) {
      new CfnOutput(this, 'RegistryReadRolePolicy', {
        description:
          'The permissions registryReadRoleArn needs in the registry account: list and read the registry buckets',
        value: readRole.permissions,
      });
      new CfnOutput(this, 'RegistryReadRoleTrustPolicy', {
        description:
          'The trust policy of registryReadRoleArn: the regvault roles that read the registry may assume it',
        value: readRole.trust,
      });
    }
  }
}
