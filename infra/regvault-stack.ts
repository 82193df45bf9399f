/**
 * The regvault stack: the vault bucket and its key, the copy queue and its
 * dead-letter queue, the fourteen functions (one per file in `functions/`),
 * the backup and restore state machines from `state-machines/`, the backup and
 * retention schedules, alarms and a dashboard.
 * Everything is secure by default and every grant names its resource.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CfnOutput, Duration, Stack, type StackProps, Validations } from 'aws-cdk-lib';
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
import { SecurityGroup, Subnet, Vpc } from 'aws-cdk-lib/aws-ec2';
import { type IRole, Policy, PolicyStatement, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { type IKey, Key } from 'aws-cdk-lib/aws-kms';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import {
  BlockPublicAccess,
  Bucket,
  BucketEncryption,
  type CfnBucket,
  type IBucket,
  ObjectLockRetention,
} from 'aws-cdk-lib/aws-s3';
import { CfnSchedule } from 'aws-cdk-lib/aws-scheduler';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { Queue, QueueEncryption } from 'aws-cdk-lib/aws-sqs';
import {
  DefinitionBody,
  LogLevel,
  StateMachine,
  StateMachineType,
} from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';
// Types only: the stack reaches the functions' code through their entry files alone.
import type { FunctionName, WorkflowName } from '../functions/commons/workflows/steps.ts';
import { placeholdersIn, substitutionsFor } from './asl.ts';
import { type FunctionNetwork, HouseFunction, PROJECT_ROOT } from './house-function.ts';
import type { RegvaultSettings } from './settings.ts';

/**
 * Vault object actions (under the vault prefix) by what a function does there.
 * Every level also lists the prefix: without s3:ListBucket S3 answers a missing
 * key with 403 instead of 404, and the vault reads treat 404 as "absent".
 */
const VAULT_ACTIONS = {
  none: [],
  read: ['s3:GetObject'],
  write: ['s3:GetObject', 's3:PutObject'],
  // Retention reads manifests and inventories, then deletes; it writes nothing.
  prune: ['s3:GetObject', 's3:DeleteObject'],
  // Server-side copies carry the source's tags (both tagging actions), large
  // ones are multipart (aborts), and a copy whose checksum disproves the
  // blob's digest is deleted again.
  copy: [
    's3:GetObject',
    's3:PutObject',
    's3:AbortMultipartUpload',
    's3:GetObjectTagging',
    's3:PutObjectTagging',
    's3:DeleteObject',
  ],
} as const satisfies Record<string, readonly string[]>;
type VaultAccess = keyof typeof VAULT_ACTIONS;

/**
 * Object actions on the deployer's `roleBucketNames` (plain backup sources and
 * restore targets the functions reach with their own role); every level but
 * `none` also lists the buckets.
 */
const ROLE_BUCKET_ACTIONS = {
  none: [],
  // Discovery and planning list a backup source.
  list: [],
  // The proof lists a restore target and reads back the blobs it hashes.
  read: ['s3:GetObject'],
  // Preflight writes one probe object into a restore target and deletes it.
  probe: ['s3:PutObject', 's3:DeleteObject'],
  // The copy worker reads sources and writes targets, as into the vault.
  copy: VAULT_ACTIONS.copy,
} as const satisfies Record<string, readonly string[]>;
type RoleBucketAccess = keyof typeof ROLE_BUCKET_ACTIONS;

interface FunctionSpec {
  readonly description: string;
  readonly timeout: Duration;
  readonly memorySize: number;
  /**
   * Calls the cluster API: the registry profile, or bucket keys read from the
   * registry's storage Secret (any location with `registry-secret:` access).
   * Only these get the kubeconfig secret.
   */
  readonly cluster: boolean;
  /** Calls the registry API (verification): only these get the registry login. */
  readonly registryApi: boolean;
  readonly vault: VaultAccess;
  readonly roleBuckets: RoleBucketAccess;
}

/**
 * One entry per Lambda function of the step table
 * (`functions/commons/workflows/steps.ts`: its steps and its other functions),
 * each built from `functions/<name>.ts`; the typecheck fails when the table
 * gains or loses a function this table does not. Steps whose work grows with the
 * registry (listing, inventory, verification, rollout waits) get the 900 s the
 * ASL allows them; the others stay short so a hang fails fast. The access
 * columns follow what each handler's step calls in `functions/commons/workflows/`.
 */
const FUNCTIONS = {
  // Reads the registry's storage from the cluster, lists the source, writes the cluster files and manifest.
  discover: {
    description:
      'Backup: validate the input, read the registry storage from the cluster, capture its config',
    timeout: Duration.minutes(5),
    memorySize: 1024,
    cluster: true,
    registryApi: false,
    vault: 'write',
    roleBuckets: 'list',
  },
  // Lists the source (keys from the registry Secret) and writes the run's job.
  plan: {
    description: 'Backup: split the source bucket into shards and write the run job',
    timeout: Duration.minutes(15),
    memorySize: 1024,
    cluster: true,
    registryApi: false,
    vault: 'write',
    roleBuckets: 'list',
  },
  // Vault only: the workers' records in, inventory, catalog and manifest out.
  finalize: {
    description: 'Backup: inventory, catalog, checks, and the manifest written last',
    timeout: Duration.minutes(15),
    memorySize: 3008,
    cluster: false,
    registryApi: false,
    vault: 'write',
    roleBuckets: 'none',
  },
  // Finalizes with the error, so the same vault access, time and memory as
  // finalize: a Lambda timeout is no exception its fallback could catch, and a
  // snapshot whose failure path timed out would keep its running manifest.
  'mark-failed': {
    description: 'Backup: mark the snapshot failed with the cause',
    timeout: Duration.minutes(15),
    memorySize: 3008,
    cluster: false,
    registryApi: false,
    vault: 'write',
    roleBuckets: 'none',
  },
  // Not read-only: it writes the run's job for the copy workers. It only asks
  // whether a registry URL is set; it never calls the registry.
  resolve: {
    description: 'Restore: validate the input and resolve a complete snapshot',
    timeout: Duration.minutes(5),
    memorySize: 1024,
    cluster: false,
    registryApi: false,
    vault: 'write',
    roleBuckets: 'none',
  },
  // Touches only the target bucket, whose keys come from the cluster.
  preflight: {
    description: 'Restore: the target bucket exists, is writable and is empty unless allowed',
    timeout: Duration.minutes(2),
    memorySize: 1024,
    cluster: true,
    registryApi: false,
    vault: 'none',
    roleBuckets: 'probe',
  },
  // Reads the snapshot inventory and the run's records, lists the target and
  // hashes the blobs the copy did not check (streamed, bounded memory).
  prove: {
    description: 'Restore: prove the target (objects, references, blob digests) before the switch',
    timeout: Duration.minutes(15),
    memorySize: 3008,
    cluster: true,
    registryApi: false,
    vault: 'read',
    roleBuckets: 'read',
  },
  // Records the registry's storage in the run before it patches (runs/<id>/registry-before.json).
  switch: {
    description: 'Restore: point the registry storage at the restored bucket',
    timeout: Duration.minutes(2),
    memorySize: 1024,
    cluster: true,
    registryApi: false,
    vault: 'write',
    roleBuckets: 'none',
  },
  // The ASL gives CheckRollout 120 s; the function must end before that.
  'rollout-status': {
    description: 'Restore: how far the registry rollout is',
    timeout: Duration.minutes(1),
    memorySize: 1024,
    cluster: true,
    registryApi: false,
    vault: 'none',
    roleBuckets: 'none',
  },
  // Reads the snapshot catalog and pulls (or pushes) through the registry API.
  verify: {
    description: 'Restore: the registry serves what the snapshot catalog lists',
    timeout: Duration.minutes(15),
    memorySize: 1024,
    cluster: false,
    registryApi: true,
    vault: 'read',
    roleBuckets: 'none',
  },
  // Reads what the switch recorded, for a switch that failed after its patch applied.
  rollback: {
    description: 'Restore: roll the registry back when asked, wait for it, and say what failed',
    timeout: Duration.minutes(15),
    memorySize: 1024,
    cluster: true,
    registryApi: false,
    vault: 'read',
    roleBuckets: 'none',
  },
  // Backup: source (registry Secret keys) -> vault; restore: vault -> target (keys from the cluster).
  'copy-worker': {
    description: 'Copy worker: copy part of a shard, hand the rest on, report to the workflow',
    timeout: Duration.minutes(15),
    memorySize: 2048,
    cluster: true,
    registryApi: false,
    vault: 'copy',
    roleBuckets: 'copy',
  },
  // Reads only the message: the task token and the shard it names.
  'dead-letter': {
    description: 'Fail the waiting workflow task of a copy message the workers gave up on',
    timeout: Duration.minutes(1),
    memorySize: 512,
    cluster: false,
    registryApi: false,
    vault: 'none',
    roleBuckets: 'none',
  },
  // Retention: deletes expired snapshots and the vault objects no snapshot uses any more.
  prune: {
    description: 'Retention: delete expired snapshots, then sweep vault objects no snapshot uses',
    timeout: Duration.minutes(15),
    memorySize: 3008,
    cluster: false,
    registryApi: false,
    vault: 'prune',
    roleBuckets: 'none',
  },
} as const satisfies Record<FunctionName, FunctionSpec>;

export type { FunctionName, WorkflowName };

/** `rollout-status` -> `RolloutStatus`: construct ids and ASL placeholders are built from it. */
function pascalCase(name: FunctionName): string {
  return name.replace(/(^|-)([a-z])/g, (_match, _dash: string, letter: string) =>
    letter.toUpperCase(),
  );
}

/** `rollout-status` -> `RolloutStatusFunctionArn`, the placeholder the ASL files use. */
export function functionArnPlaceholder(name: FunctionName): string {
  return `${pascalCase(name)}FunctionArn`;
}

/** The version the functions write into snapshot manifests. */
function packageVersion(): string {
  const manifest: unknown = JSON.parse(readFileSync(join(PROJECT_ROOT, 'package.json'), 'utf8'));
  const version =
    typeof manifest === 'object' && manifest !== null && 'version' in manifest
      ? manifest.version
      : undefined;
  return typeof version === 'string' ? version : '0.0.0';
}

/** How long one copy message may take; the copy queue's visibility timeout follows from it. */
const COPY_WORKER_TIMEOUT = FUNCTIONS['copy-worker'].timeout;

export interface RegvaultStackProps extends StackProps {
  readonly settings: RegvaultSettings;
}

export class RegvaultStack extends Stack {
  readonly vaultBucket: Bucket | IBucket;
  readonly vaultKey: IKey | undefined;
  readonly copyQueue: Queue;
  readonly deadLetterQueue: Queue;
  readonly functions: Readonly<Record<FunctionName, HouseFunction>>;
  readonly stateMachines: Readonly<Record<WorkflowName, StateMachine>>;

  constructor(scope: Construct, id: string, props: RegvaultStackProps) {
    super(scope, id, props);
    const { settings } = props;
    const logRetention = settings.logRetentionDays as RetentionDays;
    const alarmAction: IAlarmAction | undefined =
      settings.alarmTopicArn === undefined
        ? undefined
        : new SnsAction(Topic.fromTopicArn(this, 'AlarmTopic', settings.alarmTopicArn));

    // --- Vault bucket and key -------------------------------------------------
    const importedKey =
      settings.kmsKeyArn === undefined
        ? undefined
        : Key.fromKeyArn(this, 'VaultKey', settings.kmsKeyArn);
    if (settings.vaultBucketName === undefined) {
      const key =
        importedKey ??
        new Key(this, 'VaultKey', {
          description: 'regvault vault bucket encryption',
          enableKeyRotation: true,
        });
      this.vaultKey = key;
      this.vaultBucket = this.newVaultBucket(settings, key);
    } else {
      // An existing bucket keeps its own encryption; its key is only needed in the grants.
      this.vaultKey = importedKey;
      this.vaultBucket = Bucket.fromBucketName(this, 'VaultBucket', settings.vaultBucketName);
    }

    // --- Copy queue -------------------------------------------------------------
    // SQS-managed encryption: the messages carry run and shard ids and a task
    // token, no data or keys, and a CMK would add a KMS call to every copy
    // message and a key policy the queue's users must be let into.
    this.deadLetterQueue = new Queue(this, 'CopyDeadLetterQueue', {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
      // Six times the dead-letter function's timeout, as for the copy queue.
      visibilityTimeout: Duration.seconds(FUNCTIONS['dead-letter'].timeout.toSeconds() * 6),
    });
    this.copyQueue = new Queue(this, 'CopyQueue', {
      encryption: QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      // A message must not come back while a worker still runs it (AWS: six times the function timeout).
      visibilityTimeout: Duration.seconds(COPY_WORKER_TIMEOUT.toSeconds() * 6),
      retentionPeriod: Duration.days(4),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: 5 },
    });

    // --- Functions --------------------------------------------------------------
    const network = this.functionNetwork(settings);
    const environment: Record<string, string> = {
      VAULT_BUCKET: this.vaultBucket.bucketName,
      VAULT_PREFIX: settings.vaultPrefix,
      // Object Lock default retention refuses uploads without Content-MD5; an
      // existing bucket may have it, so it gets the header too.
      VAULT_CONTENT_MD5: String(
        settings.objectLockMode !== undefined || settings.vaultBucketName !== undefined,
      ),
      PROFILE_SETTINGS: JSON.stringify(settings.profileSettings),
      COPY_QUEUE_URL: this.copyQueue.queueUrl,
      COPY_CONCURRENCY: String(settings.copyConcurrency),
      REGVAULT_VERSION: packageVersion(),
      ...(settings.registryUrl === undefined ? {} : { REGISTRY_URL: settings.registryUrl }),
    };
    // The shared runtime reads every secret whose ARN it is given when a
    // container starts, so a secret's ARN goes exactly where its grant goes.
    const secretsOf = (spec: FunctionSpec) => ({
      ...(spec.cluster && settings.kubeconfigSecretArn !== undefined
        ? { KUBECONFIG_SECRET_ARN: settings.kubeconfigSecretArn }
        : {}),
      ...(spec.registryApi && settings.registryCredentialsSecretArn !== undefined
        ? { REGISTRY_CREDENTIALS_SECRET_ARN: settings.registryCredentialsSecretArn }
        : {}),
    });
    const functions = Object.fromEntries(
      (Object.entries(FUNCTIONS) as Array<[FunctionName, FunctionSpec]>).map(([name, spec]) => {
        const fn = new HouseFunction(this, `${pascalCase(name)}Function`, {
          entry: `functions/${name}.ts`,
          description: spec.description,
          timeout: spec.timeout,
          memorySize: spec.memorySize,
          environment: { ...environment, ...secretsOf(spec) },
          logRetention,
          // The cluster API, the registry and the buckets beside them may be reachable only in the VPC.
          network: spec.cluster || spec.registryApi ? network : undefined,
          alarmAction,
        });
        this.grantRuntime(fn.role, settings, spec);
        return [name, fn];
      }),
    ) as Record<FunctionName, HouseFunction>;
    this.functions = functions;

    const worker = functions['copy-worker'].function;
    worker.addEventSource(
      new SqsEventSource(this.copyQueue, {
        batchSize: 1,
        maxConcurrency: settings.copyWorkers,
        reportBatchItemFailures: true,
      }),
    );
    // Continuations: a worker hands the rest of its shard on as a new message.
    this.copyQueue.grantSendMessages(worker);
    functions['dead-letter'].function.addEventSource(
      new SqsEventSource(this.deadLetterQueue, { batchSize: 10 }),
    );

    // --- State machines ---------------------------------------------------------
    this.stateMachines = {
      backup: this.workflow('backup', settings, logRetention),
      restore: this.workflow('restore', settings, logRetention),
    };
    // A separate policy, not the roles' default one: the state machines already
    // depend on the functions, and the functions on their default policies.
    new Policy(this, 'CopyTaskCallbacks', {
      roles: [functions['copy-worker'].role, functions['dead-letter'].role],
      statements: [
        new PolicyStatement({
          actions: ['states:SendTaskSuccess', 'states:SendTaskFailure', 'states:SendTaskHeartbeat'],
          resources: Object.values(this.stateMachines).map((machine) => machine.stateMachineArn),
        }),
      ],
    });

    if (settings.backupSchedule !== undefined)
      this.backupSchedule(settings.backupSchedule, settings);
    if (settings.pruneSchedule !== undefined)
      this.pruneSchedule(settings.pruneSchedule, settings, functions.prune);
    this.operations(alarmAction);

    new CfnOutput(this, 'VaultBucketName', { value: this.vaultBucket.bucketName });
    new CfnOutput(this, 'BackupStateMachineArn', {
      value: this.stateMachines.backup.stateMachineArn,
    });
    new CfnOutput(this, 'RestoreStateMachineArn', {
      value: this.stateMachines.restore.stateMachineArn,
    });
    new CfnOutput(this, 'CopyQueueUrl', { value: this.copyQueue.queueUrl });
  }

  private newVaultBucket(settings: RegvaultSettings, key: IKey): Bucket {
    const accessLogs = new Bucket(this, 'AccessLogsBucket', {
      // Server access logging delivers only to SSE-S3 buckets.
      encryption: BucketEncryption.S3_MANAGED,
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      versioned: true,
      lifecycleRules: [
        { expiration: Duration.days(365), noncurrentVersionExpiration: Duration.days(30) },
      ],
    });
    Validations.of(accessLogs).acknowledge({
      id: 'AwsSolutions-S1',
      reason:
        'This bucket receives the vault bucket access logs; logging it into itself would log its own deliveries forever.',
    });
    const lock =
      settings.objectLockMode === undefined || settings.objectLockRetentionDays === undefined
        ? undefined
        : settings.objectLockMode === 'COMPLIANCE'
          ? ObjectLockRetention.compliance(Duration.days(settings.objectLockRetentionDays))
          : ObjectLockRetention.governance(Duration.days(settings.objectLockRetentionDays));
    return new Bucket(this, 'VaultBucket', {
      encryption: BucketEncryption.KMS,
      encryptionKey: key,
      // One data key per bucket, not per object: copies write millions of objects.
      bucketKeyEnabled: true,
      blockPublicAccess: BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      versioned: true,
      ...(lock === undefined ? {} : { objectLockEnabled: true, objectLockDefaultRetention: lock }),
      lifecycleRules: [
        { noncurrentVersionExpiration: Duration.days(settings.noncurrentVersionDays) },
        { abortIncompleteMultipartUploadAfter: Duration.days(7) },
      ],
      serverAccessLogsBucket: accessLogs as IBucket,
      serverAccessLogsPrefix: 'vault/',
    });
  }

  private functionNetwork(settings: RegvaultSettings): FunctionNetwork | undefined {
    const { vpcId, subnetIds, availabilityZones } = settings;
    if (vpcId === undefined || subnetIds === undefined || availabilityZones === undefined)
      return undefined;
    // Imported by id with no lookup, so synth needs no AWS credentials.
    const vpc = Vpc.fromVpcAttributes(this, 'Vpc', {
      vpcId,
      availabilityZones: [...new Set(availabilityZones)],
    });
    const subnets = subnetIds.map((subnetId, index) => {
      const subnet = Subnet.fromSubnetAttributes(this, `Subnet${index}`, {
        subnetId,
        availabilityZone: availabilityZones[index] ?? '',
      });
      Validations.of(subnet).acknowledge({
        id: 'Annotation::@aws-cdk/aws-ec2:noSubnetRouteTableId',
        reason:
          'Functions are only placed in these subnets; nothing here reads or changes their route tables.',
      });
      return subnet;
    });
    const securityGroup = new SecurityGroup(this, 'FunctionsSecurityGroup', {
      vpc,
      description:
        'regvault functions: outbound to the cluster API, the registry and AWS APIs; no inbound',
      allowAllOutbound: true,
    });
    return { vpc, subnets, securityGroup };
  }

  /** What one function's step touches: the vault under its prefix, the role buckets, the secrets it reads. */
  private grantRuntime(role: IRole, settings: RegvaultSettings, spec: FunctionSpec): void {
    const root = settings.vaultPrefix.replace(/^\/+/, '').replace(/\/+$/, '');
    const keys = root === '' ? '*' : `${root}/*`;
    const vaultActions: readonly string[] = VAULT_ACTIONS[spec.vault];
    const roleBucketActions: readonly string[] = ROLE_BUCKET_ACTIONS[spec.roleBuckets];
    const roleBuckets = spec.roleBuckets === 'none' ? [] : settings.roleBucketNames;
    const statements: PolicyStatement[] = [];
    if (vaultActions.length > 0) {
      statements.push(
        new PolicyStatement({
          actions: ['s3:ListBucket'],
          resources: [this.vaultBucket.bucketArn],
          ...(root === '' ? {} : { conditions: { StringLike: { 's3:prefix': [`${root}/*`] } } }),
        }),
        new PolicyStatement({
          actions: [...vaultActions],
          resources: [this.vaultBucket.arnForObjects(keys)],
        }),
      );
      if (this.vaultKey !== undefined) {
        // Reading an SSE-KMS object decrypts its data key; writing one makes a new one.
        const keyActions = [
          'kms:Decrypt',
          ...(vaultActions.includes('s3:PutObject') ? ['kms:GenerateDataKey'] : []),
        ];
        statements.push(
          new PolicyStatement({ actions: keyActions, resources: [this.vaultKey.keyArn] }),
        );
      }
    }
    if (roleBuckets.length > 0) {
      const arns = roleBuckets.map((name) =>
        this.formatArn({ service: 's3', region: '', account: '', resource: name }),
      );
      statements.push(new PolicyStatement({ actions: ['s3:ListBucket'], resources: arns }));
      if (roleBucketActions.length > 0) {
        statements.push(
          new PolicyStatement({
            actions: [...roleBucketActions],
            resources: arns.map((arn) => `${arn}/*`),
          }),
        );
      }
    }
    const secrets = [
      ...(spec.cluster && settings.kubeconfigSecretArn !== undefined
        ? [settings.kubeconfigSecretArn]
        : []),
      ...(spec.registryApi && settings.registryCredentialsSecretArn !== undefined
        ? [settings.registryCredentialsSecretArn]
        : []),
    ];
    if (secrets.length > 0) {
      statements.push(
        new PolicyStatement({ actions: ['secretsmanager:GetSecretValue'], resources: secrets }),
      );
    }
    for (const statement of statements) role.addToPrincipalPolicy(statement);

    // cdk-nag names each wildcard resource in its own finding; these are the object grants above.
    if (vaultActions.length > 0) {
      Validations.of(role).acknowledge({
        id: `AwsSolutions-IAM5[Resource::${this.nagBucketArn(this.vaultBucket, settings.vaultBucketName)}/${keys}]`,
        reason:
          'Vault objects are keyed by snapshot, run and digest; the grant is every key under the vault prefix and no other.',
      });
    }
    if (roleBucketActions.length > 0) {
      for (const name of roleBuckets) {
        Validations.of(role).acknowledge({
          id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::${name}/*]`,
          reason: `The deployer named ${name} (roleBucketNames) as a plain source or target the role copies whole.`,
        });
      }
    }
  }

  /** A bucket ARN the way cdk-nag prints it in findings. */
  private nagBucketArn(bucket: Bucket | IBucket, importedName: string | undefined): string {
    if (importedName !== undefined) return `arn:<AWS::Partition>:s3:::${importedName}`;
    return `<${this.getLogicalId(bucket.node.defaultChild as CfnBucket)}.Arn>`;
  }

  private workflow(
    name: WorkflowName,
    settings: RegvaultSettings,
    logRetention: RetentionDays,
  ): StateMachine {
    const file = join(PROJECT_ROOT, 'state-machines', `${name}.asl.json`);
    // The functions a definition invokes are the ones its placeholders name.
    const wanted = placeholdersIn(readFileSync(file, 'utf8'));
    const values: Record<string, string> = {
      CopyQueueUrl: this.copyQueue.queueUrl,
      ShardsInFlight: String(settings.shardsInFlight),
    };
    const invoked = [];
    for (const fnName of Object.keys(FUNCTIONS) as FunctionName[]) {
      const placeholder = functionArnPlaceholder(fnName);
      if (!wanted.has(placeholder)) continue;
      const fn = this.functions[fnName].function;
      values[placeholder] = fn.functionArn;
      invoked.push(fn);
    }
    const title = `${name[0]?.toUpperCase()}${name.slice(1)}`;
    const machine = new StateMachine(this, `${title}StateMachine`, {
      stateMachineType: StateMachineType.STANDARD,
      definitionBody: DefinitionBody.fromFile(file),
      definitionSubstitutions: substitutionsFor(file, values),
      tracingEnabled: true,
      logs: {
        destination: new LogGroup(this, `${title}ExecutionLogs`, { retention: logRetention }),
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
    machine.addToRolePolicy(
      new PolicyStatement({ actions: ['sqs:SendMessage'], resources: [this.copyQueue.queueArn] }),
    );
    Validations.of(machine.role).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason:
        'Step Functions log delivery (logs:*LogDelivery, logs:*ResourcePolicy, logs:DescribeLogGroups) and X-Ray tracing ' +
        'actions support no resource-level scope; the tasks the role may run are named one by one.',
    });
    return machine;
  }

  private backupSchedule(expression: string, settings: RegvaultSettings): void {
    const role = new Role(this, 'BackupScheduleRole', {
      description: 'EventBridge Scheduler: start the regvault backup state machine, nothing else',
      assumedBy: new ServicePrincipal('scheduler.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': this.account } },
      }),
    });
    this.stateMachines.backup.grantStartExecution(role);
    new CfnSchedule(this, 'BackupSchedule', {
      description: 'regvault: scheduled backup of the registry bucket into the vault',
      scheduleExpression: expression,
      scheduleExpressionTimezone: settings.backupScheduleTimezone,
      flexibleTimeWindow: { mode: 'OFF' },
      state: 'ENABLED',
      target: {
        arn: this.stateMachines.backup.stateMachineArn,
        roleArn: role.roleArn,
        input: JSON.stringify(settings.backupInput),
        retryPolicy: { maximumRetryAttempts: 3, maximumEventAgeInSeconds: 3600 },
      },
    });
  }

  private pruneSchedule(
    expression: string,
    settings: RegvaultSettings,
    prune: HouseFunction,
  ): void {
    prune.function.addEnvironment('RETENTION_POLICY', JSON.stringify(settings.retentionPolicy));
    prune.function.addEnvironment(
      'RETENTION_GRACE_MINUTES',
      String(settings.retentionGraceMinutes),
    );
    const role = new Role(this, 'PruneScheduleRole', {
      description: 'EventBridge Scheduler: invoke the regvault prune function, nothing else',
      assumedBy: new ServicePrincipal('scheduler.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': this.account } },
      }),
    });
    prune.function.grantInvoke(role);
    new CfnSchedule(this, 'PruneSchedule', {
      description: 'regvault: scheduled retention of vault snapshots',
      scheduleExpression: expression,
      scheduleExpressionTimezone: settings.backupScheduleTimezone,
      flexibleTimeWindow: { mode: 'OFF' },
      state: 'ENABLED',
      target: {
        arn: prune.function.functionArn,
        roleArn: role.roleArn,
        input: JSON.stringify({ dryRun: false }),
        retryPolicy: { maximumRetryAttempts: 2, maximumEventAgeInSeconds: 3600 },
      },
    });
  }

  private operations(alarmAction: IAlarmAction | undefined): void {
    const alarms: Alarm[] = [
      new Alarm(this, 'DeadLetterAlarm', {
        alarmDescription:
          'A copy message failed five deliveries and went to the dead-letter queue: its shard failed; read the copy worker logs',
        // Not the visible count: the dead-letter function drains the queue within
        // seconds, so a visible message rarely lasts until a sample. Every dead
        // letter is received by that function at least once.
        metric: this.deadLetterQueue.metricNumberOfMessagesReceived({
          period: Duration.minutes(1),
          statistic: 'Sum',
        }),
        threshold: 0,
        evaluationPeriods: 1,
        comparisonOperator: ComparisonOperator.GREATER_THAN_THRESHOLD,
        treatMissingData: TreatMissingData.NOT_BREACHING,
      }),
    ];
    for (const [name, machine] of Object.entries(this.stateMachines)) {
      const outcomes = {
        Failed: machine.metricFailed({ period: Duration.minutes(5), statistic: 'Sum' }),
        TimedOut: machine.metricTimedOut({ period: Duration.minutes(5), statistic: 'Sum' }),
        Aborted: machine.metricAborted({ period: Duration.minutes(5), statistic: 'Sum' }),
      };
      for (const [outcome, metric] of Object.entries(outcomes)) {
        alarms.push(
          new Alarm(this, `${name}Executions${outcome}Alarm`, {
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
    const worker = this.functions['copy-worker'].function;
    const dashboard = new Dashboard(this, 'Dashboard', { defaultInterval: Duration.hours(6) });
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
          this.copyQueue.metricApproximateNumberOfMessagesVisible({ label: 'waiting' }),
          this.copyQueue.metricApproximateNumberOfMessagesNotVisible({ label: 'in flight' }),
          this.deadLetterQueue.metricNumberOfMessagesReceived({
            statistic: 'Sum',
            label: 'dead letters handled',
          }),
        ],
        width: 8,
      }),
      new GraphWidget({
        title: 'Executions',
        left: Object.entries(this.stateMachines).flatMap(([name, machine]) => [
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
}
