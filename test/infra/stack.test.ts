import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import { Bucket } from 'aws-cdk-lib/aws-s3';
import type { Queue } from 'aws-cdk-lib/aws-sqs';
import { AwsSolutionsChecks } from 'cdk-nag';
import {
  OTHER_FUNCTIONS,
  STEPS,
  stepsOf,
  WORKFLOWS,
} from '../../functions/commons/workflows/steps.ts';
import { PROJECT_ROOT } from '../../infra/house-function.ts';
import {
  actionsOf,
  actionsOn,
  type Built,
  buildStack,
  FULL_CONTEXT,
  type FunctionName,
  functionStatements,
  logicalIdOf,
  resourceList,
  resourcesOf,
  statementsOf,
} from './support.ts';

// Synthesising costs seconds; each configuration is built once per file.
const defaults = buildStack();
const full = buildStack(FULL_CONTEXT);
const existing = buildStack({
  vaultBucketName: 'acme-registry-vault',
  vaultPrefix: 'prod/',
  kmsKeyArn: 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab',
  roleBucketNames: 'acme-plain-source',
});

/** What each handler's step does, traced through functions/commons/workflows/. */
const ACCESS = {
  discover: {
    kubeconfig: true,
    registryLogin: false,
    vault: { snapshots: 'write', locks: 'read' },
    roleBuckets: 'list',
    runLease: 'renew',
  },
  plan: {
    kubeconfig: true,
    registryLogin: false,
    vault: { snapshots: 'read', runs: 'write', locks: 'read' },
    roleBuckets: 'list',
    runLease: 'renew',
  },
  finalize: {
    kubeconfig: false,
    registryLogin: false,
    vault: { snapshots: 'write', runs: 'read', locks: 'read' },
    roleBuckets: 'none',
    runLease: 'release',
  },
  'mark-failed': {
    kubeconfig: false,
    registryLogin: false,
    vault: { snapshots: 'write', runs: 'read', locks: 'read' },
    roleBuckets: 'none',
    runLease: 'release',
  },
  'end-dead-run': {
    kubeconfig: false,
    registryLogin: false,
    vault: { snapshots: 'write', locks: 'read' },
    roleBuckets: 'none',
    runLease: 'release',
  },
  resolve: {
    kubeconfig: false,
    registryLogin: false,
    vault: { snapshots: 'read' },
    roleBuckets: 'none',
  },
  preflight: {
    kubeconfig: true,
    registryLogin: false,
    vault: { snapshots: 'read', blobs: 'read', runs: 'write' },
    roleBuckets: 'probe',
  },
  prove: {
    kubeconfig: true,
    registryLogin: false,
    vault: { snapshots: 'read', runs: 'write' },
    roleBuckets: 'read',
  },
  switch: {
    kubeconfig: true,
    registryLogin: false,
    vault: { snapshots: 'read', runs: 'write' },
    roleBuckets: 'none',
  },
  'rollout-status': {
    kubeconfig: true,
    registryLogin: false,
    vault: {},
    roleBuckets: 'none',
  },
  verify: {
    kubeconfig: false,
    registryLogin: true,
    vault: { snapshots: 'read' },
    roleBuckets: 'none',
  },
  rollback: {
    kubeconfig: true,
    registryLogin: false,
    vault: { runs: 'read' },
    roleBuckets: 'none',
  },
  'copy-worker': {
    kubeconfig: true,
    registryLogin: false,
    vault: { blobs: 'pool', snapshots: 'copy', runs: 'write' },
    roleBuckets: 'copy',
  },
  'dead-letter': {
    kubeconfig: false,
    registryLogin: false,
    vault: { runs: 'write' },
    roleBuckets: 'none',
  },
  'enqueue-shards': {
    kubeconfig: false,
    registryLogin: false,
    vault: { runs: 'read' },
    roleBuckets: 'none',
  },
  'count-shards': {
    kubeconfig: false,
    registryLogin: false,
    vault: { runs: 'read', locks: 'read' },
    roleBuckets: 'none',
    runLease: 'renew',
  },
  prune: {
    kubeconfig: false,
    registryLogin: false,
    vault: { snapshots: 'prune', runs: 'prune', blobs: 'prune', locks: 'read' },
    roleBuckets: 'none',
  },
} as const satisfies Record<
  FunctionName,
  {
    kubeconfig: boolean;
    registryLogin: boolean;
    /** What it does in each vault folder it reaches. */
    vault: Partial<Record<'blobs' | 'snapshots' | 'runs' | 'locks', VaultLevel>>;
    roleBuckets: 'none' | 'list' | 'read' | 'probe' | 'copy';
    /** Backup run leases (locks/*): written by renewals, deleted by the steps that end a run. */
    runLease?: 'renew' | 'release';
  }
>;
const ACCESS_TABLE = Object.entries(ACCESS) as Array<[FunctionName, (typeof ACCESS)[FunctionName]]>;

const COPY_ACTIONS = [
  's3:AbortMultipartUpload',
  's3:DeleteObject',
  's3:GetObject',
  's3:GetObjectTagging',
  's3:PutObject',
  's3:PutObjectTagging',
];
const VAULT_OBJECT_ACTIONS = {
  read: ['s3:GetObject'],
  write: ['s3:AbortMultipartUpload', 's3:GetObject', 's3:PutObject'],
  prune: ['s3:DeleteObject', 's3:GetObject'],
  copy: COPY_ACTIONS.filter((action) => action !== 's3:DeleteObject'),
  pool: COPY_ACTIONS,
} as const;
type VaultLevel = keyof typeof VAULT_OBJECT_ACTIONS;
const FOLDERS = ['blobs', 'snapshots', 'runs', 'locks'] as const;
const LEASE_ACTIONS = {
  renew: ['s3:PutObject'],
  release: ['s3:DeleteObject', 's3:PutObject'],
} as const;
const ROLE_BUCKET_OBJECT_ACTIONS = {
  none: [],
  list: [],
  read: ['s3:GetObject'],
  probe: ['s3:DeleteObject', 's3:PutObject'],
  copy: COPY_ACTIONS,
} as const;

describe('the vault bucket', () => {
  it('is encrypted with the stack KMS key, private, TLS-only, versioned and logged', () => {
    // Prepare
    const { template, stack } = defaults;
    const keyId = logicalIdOf(
      defaults,
      stack.vaultKey as unknown as { node: { defaultChild?: unknown } },
    );

    // Act
    const buckets = template.findResources('AWS::S3::Bucket', {
      Properties: {
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [
            { ServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms' } },
          ],
        },
      },
    });

    // Assess
    expect(Object.keys(buckets)).toHaveLength(1);
    template.hasResourceProperties('AWS::S3::Bucket', {
      BucketEncryption: {
        ServerSideEncryptionConfiguration: [
          {
            BucketKeyEnabled: true,
            ServerSideEncryptionByDefault: {
              SSEAlgorithm: 'aws:kms',
              KMSMasterKeyID: { 'Fn::GetAtt': [keyId, 'Arn'] },
            },
          },
        ],
      },
      PublicAccessBlockConfiguration: {
        BlockPublicAcls: true,
        BlockPublicPolicy: true,
        IgnorePublicAcls: true,
        RestrictPublicBuckets: true,
      },
      VersioningConfiguration: { Status: 'Enabled' },
      LoggingConfiguration: { DestinationBucketName: Match.anyValue(), LogFilePrefix: 'vault/' },
      LifecycleConfiguration: {
        Rules: Match.arrayWith([
          Match.objectLike({
            NoncurrentVersionExpiration: { NoncurrentDays: 30 },
            Status: 'Enabled',
          }),
          Match.objectLike({
            AbortIncompleteMultipartUpload: { DaysAfterInitiation: 7 },
            Status: 'Enabled',
          }),
        ]),
      },
    });
    template.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
  });

  it('denies requests without TLS on the vault bucket and its access-log bucket', () => {
    // Prepare
    const { template, stack } = defaults;
    const vaultId = logicalIdOf(defaults, stack.vaultBucket);

    // Act
    const tlsDenials = Object.values(resourcesOf(template, 'AWS::S3::BucketPolicy'))
      .filter((policy) =>
        JSON.stringify(policy.Properties['PolicyDocument']).includes(
          '"aws:SecureTransport":"false"',
        ),
      )
      .map((policy) => JSON.stringify(policy.Properties['Bucket']));

    // Assess
    expect(tlsDenials).toHaveLength(2);
    expect(tlsDenials).toContain(JSON.stringify({ Ref: vaultId }));
  });

  it('locks objects by default for the configured days when Object Lock is asked for', () => {
    // Prepare
    const { template } = full;

    // Act / Assess
    template.hasResourceProperties('AWS::S3::Bucket', {
      ObjectLockEnabled: true,
      ObjectLockConfiguration: {
        ObjectLockEnabled: 'Enabled',
        Rule: { DefaultRetention: { Mode: 'GOVERNANCE', Days: 35 } },
      },
    });
  });

  it('creates no bucket or key when an existing vault bucket and key are given, and grants on those', () => {
    // Prepare
    const { template } = existing;
    const statements = statementsOf(existing);

    // Act
    const objectGrant = statements.find(
      (statement) =>
        actionsOf(statement).includes('s3:PutObject') &&
        JSON.stringify(statement.Resource).includes('acme-registry-vault'),
    );
    const keyGrant = statements.find((statement) =>
      actionsOf(statement).includes('kms:GenerateDataKey'),
    );
    const listGrant = statements.find(
      (statement) =>
        actionsOf(statement).includes('s3:ListBucket') &&
        JSON.stringify(statement.Resource).includes('acme-registry-vault'),
    );

    // Assess
    template.resourceCountIs('AWS::S3::Bucket', 0);
    // The only key the stack makes is its alarm topic's.
    expect(Object.keys(resourcesOf(template, 'AWS::KMS::Key'))).toEqual([
      expect.stringMatching(/^AlarmTopicKey/),
    ]);
    expect(JSON.stringify(objectGrant?.Resource)).toMatch(
      /:s3:::acme-registry-vault\/prod\/(blobs|snapshots|runs|locks)\/\*/,
    );
    expect(keyGrant?.Resource).toBe(
      'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab',
    );
    expect(listGrant?.Condition).toEqual({ StringLike: { 's3:prefix': ['prod/*'] } });
  });
});

describe('the copy queue', () => {
  it('hides a message for at least six worker timeouts and dead-letters it after five receives', () => {
    // Prepare
    const { template, stack } = defaults;
    const workerTimeout = resourcesOf(template, 'AWS::Lambda::Function')[
      logicalIdOf(defaults, stack.functions['copy-worker'].function)
    ]?.Properties['Timeout'];

    // Act
    const queue = template.findResources('AWS::SQS::Queue', {
      Properties: { RedrivePolicy: Match.anyValue() },
    });
    const [queueProps] = Object.values(queue).map(
      (resource) => (resource as { Properties: Record<string, unknown> }).Properties,
    );

    // Assess
    expect(workerTimeout).toBe(900);
    expect(queueProps?.['VisibilityTimeout']).toBe(6 * 900);
    expect(queueProps?.['RedrivePolicy']).toMatchObject({ maxReceiveCount: 5 });
  });

  it('derives the copy worker timeout and the queue visibility from copyWorkerTimeoutSeconds', () => {
    // Prepare
    const built = buildStack({ copyWorkerTimeoutSeconds: '300' });
    const workerTimeout = resourcesOf(built.template, 'AWS::Lambda::Function')[
      logicalIdOf(built, built.stack.functions['copy-worker'].function)
    ]?.Properties['Timeout'];

    // Act
    const queue = built.template.findResources('AWS::SQS::Queue', {
      Properties: { RedrivePolicy: Match.anyValue() },
    });
    const [queueProps] = Object.values(queue).map(
      (resource) => (resource as { Properties: Record<string, unknown> }).Properties,
    );

    // Assess
    expect(workerTimeout).toBe(300);
    expect(queueProps?.['VisibilityTimeout']).toBe(1800);
  });

  it.each(['CopyQueue', 'CopyDeadLetterQueue'])(
    '%s is encrypted and refuses requests without TLS',
    (name) => {
      // Prepare
      const { template, stack } = defaults;
      const queue = name === 'CopyQueue' ? stack.copyQueue : stack.deadLetterQueue;
      const logicalId = logicalIdOf(defaults, queue);

      // Act
      const props = resourcesOf(template, 'AWS::SQS::Queue')[logicalId]?.Properties;
      const policies = Object.values(resourcesOf(template, 'AWS::SQS::QueuePolicy')).filter(
        (policy) => JSON.stringify(policy.Properties['Queues']).includes(logicalId),
      );

      // Assess
      expect(props?.['SqsManagedSseEnabled']).toBe(true);
      expect(
        JSON.stringify(policies.map((policy) => policy.Properties['PolicyDocument'])),
      ).toContain('"Condition":{"Bool":{"aws:SecureTransport":"false"}},"Effect":"Deny"');
    },
  );

  it('feeds the copy worker one message at a time, up to the configured workers, with partial batch failures', () => {
    // Prepare
    const { template, stack } = full;

    // Act / Assess
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: { 'Fn::GetAtt': [logicalIdOf(full, stack.copyQueue), 'Arn'] },
      FunctionName: { Ref: logicalIdOf(full, stack.functions['copy-worker'].function) },
      BatchSize: 1,
      ScalingConfig: { MaximumConcurrency: 25 },
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: { 'Fn::GetAtt': [logicalIdOf(full, stack.deadLetterQueue), 'Arn'] },
      FunctionName: { Ref: logicalIdOf(full, stack.functions['dead-letter'].function) },
    });
  });
});

describe('dead backup runs', () => {
  it('ends the run of a backup execution that was aborted, timed out or failed, through the end-dead-run function', () => {
    // Prepare
    const { template, stack } = defaults;
    const backupId = logicalIdOf(defaults, stack.stateMachines.backup);
    const functionId = logicalIdOf(defaults, stack.functions['end-dead-run'].function);

    // Act
    const rules = template.findResources('AWS::Events::Rule', {
      Properties: { EventPattern: { source: ['aws.states'] } },
    });

    // Assess
    expect(Object.values(rules)).toHaveLength(1);
    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['aws.states'],
        'detail-type': ['Step Functions Execution Status Change'],
        detail: {
          stateMachineArn: [{ Ref: backupId }],
          status: ['ABORTED', 'TIMED_OUT', 'FAILED'],
        },
      },
      State: 'ENABLED',
      Targets: [
        Match.objectLike({
          Arn: { 'Fn::GetAtt': [functionId, 'Arn'] },
          RetryPolicy: { MaximumRetryAttempts: 185 },
        }),
      ],
    });
    template.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      FunctionName: { 'Fn::GetAtt': [functionId, 'Arn'] },
      Principal: 'events.amazonaws.com',
    });
  });

  it('passes the execution id to discovery, which records it in the run lease', () => {
    // Prepare
    const definition = JSON.parse(
      readFileSync(join(PROJECT_ROOT, 'state-machines', 'backup.asl.json'), 'utf8'),
    ) as { States: Record<string, { Parameters?: Record<string, unknown> }> };

    // Act
    const parameters = definition.States['DiscoverRegistryStorage']?.Parameters;

    // Assess
    expect(parameters).toEqual({ 'input.$': '$.input', 'execution.$': '$$.Execution.Id' });
  });
});

describe('the functions', () => {
  const SIZES = [
    ['discover', 300, 1024],
    ['plan', 900, 1024],
    ['enqueue-shards', 300, 1024],
    ['count-shards', 60, 1024],
    ['finalize', 900, 3008],
    ['mark-failed', 900, 3008],
    ['resolve', 300, 1024],
    ['preflight', 900, 3008],
    ['prove', 900, 3008],
    ['switch', 120, 1024],
    ['rollout-status', 60, 1024],
    ['verify', 900, 1024],
    ['rollback', 900, 1024],
    ['copy-worker', 900, 2048],
    ['dead-letter', 60, 512],
    ['end-dead-run', 60, 512],
    ['prune', 900, 3008],
  ] as const;

  it('sizes every function of the stack, prune included', () => {
    // Prepare
    const { stack } = defaults;

    // Act
    const sized = SIZES.map(([name]) => name).sort();

    // Assess
    expect(sized).toEqual(Object.keys(stack.functions).sort());
  });

  it.each(SIZES)(
    '%s runs Node.js 22 on arm64, traced, %i s and %i MB, logging JSON to its own log group',
    (name, timeout, memory) => {
      // Prepare
      const { template, stack } = defaults;
      const fn = stack.functions[name];

      // Act
      const props = resourcesOf(template, 'AWS::Lambda::Function')[
        logicalIdOf(defaults, fn.function)
      ]?.Properties;
      const logGroup = resourcesOf(template, 'AWS::Logs::LogGroup')[
        logicalIdOf(defaults, fn.logGroup)
      ]?.Properties;

      // Assess
      expect(props).toMatchObject({
        Runtime: 'nodejs22.x',
        Architectures: ['arm64'],
        Handler: 'index.handler',
        Timeout: timeout,
        MemorySize: memory,
        TracingConfig: { Mode: 'Active' },
        LoggingConfig: { LogFormat: 'JSON', LogGroup: { Ref: logicalIdOf(defaults, fn.logGroup) } },
      });
      expect(logGroup?.['RetentionInDays']).toBe(90);
    },
  );

  it('gives the failure path at least the time and memory of the finalize it runs', () => {
    // Prepare
    const { template, stack } = defaults;
    const propsOf = (name: 'finalize' | 'mark-failed') =>
      resourcesOf(template, 'AWS::Lambda::Function')[
        logicalIdOf(defaults, stack.functions[name].function)
      ]?.Properties;

    // Act
    const finalize = propsOf('finalize');
    const markFailed = propsOf('mark-failed');

    // Assess
    expect(Number(markFailed?.['Timeout'])).toBeGreaterThanOrEqual(Number(finalize?.['Timeout']));
    expect(Number(markFailed?.['MemorySize'])).toBeGreaterThanOrEqual(
      Number(finalize?.['MemorySize']),
    );
  });

  it('leaves Content-MD5 off for a new vault bucket without Object Lock', () => {
    // Act
    const environments = Object.values(resourcesOf(defaults.template, 'AWS::Lambda::Function')).map(
      (fn) => (fn.Properties['Environment'] as { Variables: Record<string, unknown> }).Variables,
    );
    // Assess
    expect(new Set(environments.map((variables) => variables['VAULT_CONTENT_MD5']))).toEqual(
      new Set(['false']),
    );
  });

  it('gives every function the runtime environment the shared runtime parses', () => {
    // Prepare
    const { template } = full;

    // Act
    const environments = Object.values(resourcesOf(template, 'AWS::Lambda::Function')).map(
      (fn) => (fn.Properties['Environment'] as { Variables: Record<string, unknown> }).Variables,
    );

    // Assess
    expect(environments).toHaveLength(17);
    for (const variables of environments) {
      expect(variables).toMatchObject({
        VAULT_PREFIX: 'regvault/',
        // The full context turns Object Lock on: vault uploads carry Content-MD5.
        VAULT_CONTENT_MD5: 'true',
        PROFILE_SETTINGS: '{"namespace":"cpaas-system"}',
        REGISTRY_URL: FULL_CONTEXT.registryUrl,
        COPY_CONCURRENCY: '64',
      });
      expect(variables['VAULT_BUCKET']).toBeDefined();
      expect(variables['COPY_QUEUE_URL']).toBeDefined();
    }
  });

  it.each(ACCESS_TABLE)(
    'tells %s the ARN of exactly the secrets its role may read (the runtime reads every ARN it gets)',
    (name, access) => {
      // Prepare
      const { template, stack } = full;

      // Act
      const environment = resourcesOf(template, 'AWS::Lambda::Function')[
        logicalIdOf(full, stack.functions[name].function)
      ]?.Properties['Environment'] as { Variables: Record<string, unknown> } | undefined;
      const variables = environment?.Variables ?? {};

      // Assess
      expect(variables['KUBECONFIG_SECRET_ARN']).toBe(
        access.kubeconfig ? FULL_CONTEXT.kubeconfigSecretArn : undefined,
      );
      expect(variables['REGISTRY_CREDENTIALS_SECRET_ARN']).toBe(
        access.registryLogin ? FULL_CONTEXT.registryCredentialsSecretArn : undefined,
      );
    },
  );

  it.each(ACCESS_TABLE)(
    'puts %s in the given subnets only if it calls the cluster or the registry',
    (name, access) => {
      // Prepare
      const { template, stack } = full;

      // Act
      const vpcConfig = resourcesOf(template, 'AWS::Lambda::Function')[
        logicalIdOf(full, stack.functions[name].function)
      ]?.Properties['VpcConfig'];

      // Assess
      if (access.kubeconfig || access.registryLogin) {
        expect(vpcConfig).toMatchObject({ SubnetIds: ['subnet-0aa11', 'subnet-0bb22'] });
      } else {
        expect(vpcConfig).toBeUndefined();
      }
    },
  );

  it('lets the functions in the VPC attach to it, and only them', () => {
    // Prepare
    const { template, stack } = full;
    const roles = resourcesOf(template, 'AWS::IAM::Role');
    const managed = (name: 'discover' | 'dead-letter') =>
      JSON.stringify(
        roles[logicalIdOf(full, stack.functions[name].role)]?.Properties['ManagedPolicyArns'] ?? [],
      );

    // Act / Assess
    expect(managed('discover')).toContain('service-role/AWSLambdaVPCAccessExecutionRole');
    expect(managed('dead-letter')).toBe('[]');
  });

  it('alarms on the errors of every function, copy worker included, and notifies the topic', () => {
    // Prepare
    const { template, stack } = full;

    // Act / Assess
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'Errors',
      Namespace: 'AWS/Lambda',
      Dimensions: [
        {
          Name: 'FunctionName',
          Value: { Ref: logicalIdOf(full, stack.functions['copy-worker'].function) },
        },
      ],
      Threshold: 1,
      AlarmActions: [FULL_CONTEXT.alarmTopicArn],
    });
    expect(
      Object.keys(
        template.findResources('AWS::CloudWatch::Alarm', { Properties: { MetricName: 'Errors' } }),
      ),
    ).toHaveLength(17);
  });
});

describe('IAM', () => {
  // Actions AWS offers no resource-level permissions for.
  const UNSCOPED =
    /^(xray:(PutTraceSegments|PutTelemetryRecords|GetSamplingRules|GetSamplingTargets)|logs:(CreateLogDelivery|DeleteLogDelivery|DescribeLogGroups|DescribeResourcePolicies|GetLogDelivery|ListLogDeliveries|PutResourcePolicy|UpdateLogDelivery))$/;

  it.each([
    ['defaults', defaults],
    ['cluster, VPC and schedule', full],
    ['an existing bucket', existing],
  ])('grants "*" only for actions that cannot name a resource (%s)', (_name, built) => {
    // Prepare
    const statements = statementsOf(built);

    // Act
    const wildcard = statements.filter((statement) => resourceList(statement).includes('*'));
    const wildcardActions = statements.flatMap(actionsOf).filter((action) => action.includes('*'));

    // Assess
    expect(statements.length).toBeGreaterThan(20);
    expect(wildcardActions).toEqual([]);
    for (const statement of wildcard) {
      expect(actionsOf(statement).filter((action) => !UNSCOPED.test(action))).toEqual([]);
    }
  });

  it('reads secrets only with GetSecretValue on the named ARNs, one statement per reader', () => {
    // Prepare
    const statements = statementsOf(full);
    const readers = ACCESS_TABLE.filter(([, access]) => access.kubeconfig || access.registryLogin);

    // Act
    const secretGrants = statements.filter((statement) =>
      actionsOf(statement).some((action) => action.startsWith('secretsmanager:')),
    );

    // Assess
    expect(secretGrants).toHaveLength(readers.length);
    for (const statement of secretGrants) {
      expect(actionsOf(statement)).toEqual(['secretsmanager:GetSecretValue']);
    }
  });

  it.each(ACCESS_TABLE)(
    'lets %s read the kubeconfig only if it calls the cluster, the registry login only if it calls the registry',
    (name, access) => {
      // Prepare
      const built = full;

      // Act
      const kubeconfig = actionsOn(built, name, FULL_CONTEXT.kubeconfigSecretArn);
      const registryLogin = actionsOn(built, name, FULL_CONTEXT.registryCredentialsSecretArn);

      // Assess
      expect(kubeconfig).toEqual(access.kubeconfig ? ['secretsmanager:GetSecretValue'] : []);
      expect(registryLogin).toEqual(access.registryLogin ? ['secretsmanager:GetSecretValue'] : []);
    },
  );

  it.each(ACCESS_TABLE)(
    'gives %s only the vault object and key actions its step uses, under the prefix',
    (name, access) => {
      // Prepare
      const built = existing;
      const keyArn = 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
      const levels: Partial<Record<string, VaultLevel>> = access.vault;
      const lease = 'runLease' in access ? LEASE_ACTIONS[access.runLease] : [];
      const reaches = Object.keys(levels).length > 0;
      const expected = Object.fromEntries(
        FOLDERS.map((folder) => {
          const level = levels[folder];
          const own: readonly string[] = level === undefined ? [] : VAULT_OBJECT_ACTIONS[level];
          return [folder, [...new Set([...own, ...(folder === 'locks' ? lease : [])])].sort()];
        }),
      );

      // Act
      const objectActions = Object.fromEntries(
        FOLDERS.map((folder) => [
          folder,
          [...new Set(actionsOn(built, name, `acme-registry-vault/prod/${folder}/*`))].sort(),
        ]),
      );
      const wholePrefix = actionsOn(built, name, 'acme-registry-vault/prod/*');
      const listing = functionStatements(built, name).filter(
        (statement) =>
          actionsOf(statement).includes('s3:ListBucket') &&
          JSON.stringify(statement.Resource).includes('acme-registry-vault'),
      );
      const keyActions = actionsOn(built, name, keyArn);

      // Assess
      expect(objectActions).toEqual(expected);
      expect(wholePrefix).toEqual([]);
      expect(listing.map((statement) => statement.Condition)).toEqual(
        reaches ? [{ StringLike: { 's3:prefix': ['prod/*'] } }] : [],
      );
      expect(keyActions).toEqual(
        !reaches
          ? []
          : Object.values(expected).some((actions) => actions.includes('s3:PutObject'))
            ? ['kms:Decrypt', 'kms:GenerateDataKey']
            : ['kms:Decrypt'],
      );
    },
  );

  it.each(ACCESS_TABLE)(
    'lets %s write run leases only if it renews one, and delete them only if it ends a run',
    (name, access) => {
      // Prepare
      const built = existing;
      const lease = 'runLease' in access ? access.runLease : undefined;

      // Act
      const leaseActions = actionsOn(built, name, 'acme-registry-vault/prod/locks/*').filter(
        (action) => action !== 's3:GetObject',
      );

      // Assess
      expect(leaseActions).toEqual(
        lease === undefined
          ? []
          : lease === 'renew'
            ? ['s3:PutObject']
            : ['s3:DeleteObject', 's3:PutObject'],
      );
    },
  );

  it.each(ACCESS_TABLE)(
    'gives %s only the roleBucketNames access its step uses',
    (name, access) => {
      // Prepare
      const built = existing;

      // Act
      const objectActions = actionsOn(built, name, 'acme-plain-source/*');
      const listing = actionsOn(built, name, 'acme-plain-source').filter(
        (action) => action === 's3:ListBucket',
      );

      // Assess
      expect(objectActions).toEqual(ROLE_BUCKET_OBJECT_ACTIONS[access.roleBuckets]);
      expect(listing).toEqual(access.roleBuckets === 'none' ? [] : ['s3:ListBucket']);
    },
  );

  it('lets the functions reach vault objects only in the vault folders under the prefix', () => {
    // Prepare
    const statements = statementsOf(defaults);
    const bucketArn = { 'Fn::GetAtt': [logicalIdOf(defaults, defaults.stack.vaultBucket), 'Arn'] };
    const folderArns = FOLDERS.map((folder) => ({
      'Fn::Join': ['', [bucketArn, `/regvault/${folder}/*`]],
    }));

    // Act
    const objectGrants = statements.filter(
      (statement) =>
        JSON.stringify(statement.Resource).includes(JSON.stringify(bucketArn)) &&
        !actionsOf(statement).includes('s3:ListBucket') &&
        !actionsOf(statement).includes('s3:GetBucketObjectLockConfiguration'),
    );

    // Assess
    expect(objectGrants.length).toBeGreaterThan(ACCESS_TABLE.length);
    for (const statement of objectGrants)
      for (const resource of resourceList(statement)) expect(folderArns).toContainEqual(resource);
    // Outside the leases only two functions delete: the copy worker in the pool (a
    // copy whose checksum disproves the blob's digest) and prune (expired snapshots,
    // their runs, unreferenced objects).
    const deleters = objectGrants.filter(
      (statement) =>
        actionsOf(statement).includes('s3:DeleteObject') &&
        !JSON.stringify(statement.Resource).includes('/regvault/locks/*'),
    );
    const policyOf = (name: 'copy-worker' | 'prune') =>
      logicalIdOf(
        defaults,
        defaults.stack.functions[name].role.node.findChild('DefaultPolicy') as unknown as {
          node: { defaultChild?: unknown };
        },
      );
    expect(deleters.map((statement) => statement.policy).sort()).toEqual(
      [policyOf('copy-worker'), policyOf('prune')].sort(),
    );
  });

  it('lets no function answer or extend a workflow task: nothing waits on a task token', () => {
    // Act
    const callbacks = statementsOf(defaults).filter((statement) =>
      actionsOf(statement).some((action) => action.startsWith('states:SendTask')),
    );

    // Assess
    expect(callbacks).toEqual([]);
  });

  it('lets the enqueue step and the copy worker send to the copy queue, and no one else', () => {
    // Prepare
    const { stack } = defaults;
    const policyOf = (name: FunctionName) =>
      logicalIdOf(
        defaults,
        stack.functions[name].role.node.findChild('DefaultPolicy') as unknown as {
          node: { defaultChild?: unknown };
        },
      );

    // Act
    const senders = statementsOf(defaults).filter((statement) =>
      actionsOf(statement).includes('sqs:SendMessage'),
    );

    // Assess
    expect(senders.map((statement) => statement.policy).sort()).toEqual(
      [policyOf('enqueue-shards'), policyOf('copy-worker')].sort(),
    );
    for (const statement of senders)
      expect(statement.Resource).toEqual({
        'Fn::GetAtt': [logicalIdOf(defaults, stack.copyQueue), 'Arn'],
      });
  });

  it.each(WORKFLOWS)(
    'lets the %s state machine invoke only the functions of its steps in the table, and send nothing',
    (workflow) => {
      // Prepare
      const { stack } = defaults;
      const names = stepsOf(workflow).map((entry) => entry.name);
      const roleId = logicalIdOf(
        defaults,
        stack.stateMachines[workflow].role as unknown as { node: { defaultChild?: unknown } },
      );
      const expected = names.map((name) => ({
        'Fn::GetAtt': [logicalIdOf(defaults, stack.functions[name].function), 'Arn'],
      }));

      // Act
      const statements = statementsOf(defaults).filter((statement) => {
        const roles = resourcesOf(defaults.template, 'AWS::IAM::Policy')[statement.policy]
          ?.Properties['Roles'];
        return JSON.stringify(roles) === JSON.stringify([{ Ref: roleId }]);
      });
      const invoke = statements.filter((statement) =>
        actionsOf(statement).includes('lambda:InvokeFunction'),
      );
      const send = statements.filter((statement) =>
        actionsOf(statement).includes('sqs:SendMessage'),
      );

      // Assess
      expect(invoke).toHaveLength(1);
      expect(
        new Set(((invoke[0]?.Resource ?? []) as unknown[]).map((arn) => JSON.stringify(arn))),
      ).toEqual(new Set(expected.map((arn) => JSON.stringify(arn))));
      expect(send).toEqual([]);
    },
  );

  it('gives the function roles no managed policy outside a VPC', () => {
    // Prepare
    const { template } = defaults;

    // Act
    const managed = Object.values(resourcesOf(template, 'AWS::IAM::Role')).filter(
      (role) => role.Properties['ManagedPolicyArns'] !== undefined,
    );

    // Assess
    expect(managed).toEqual([]);
  });
});

describe('the state machines', () => {
  it('has one function per entry of the step table and per other function, built from functions/<name>.ts', () => {
    // Prepare
    const expected = [...Object.keys(STEPS), ...OTHER_FUNCTIONS].sort();

    // Act
    const built = Object.keys(defaults.stack.functions).sort();
    const missingEntries = expected.filter(
      (name) => !existsSync(join(PROJECT_ROOT, 'functions', `${name}.ts`)),
    );

    // Assess
    expect(built).toEqual(expected);
    expect(missingEntries).toEqual([]);
  });

  it.each(['backup', 'restore'] as const)(
    '%s is Standard, traced, and logs ALL without execution data',
    (workflow) => {
      // Prepare
      const { template, stack } = defaults;

      // Act
      const props = resourcesOf(template, 'AWS::StepFunctions::StateMachine')[
        logicalIdOf(defaults, stack.stateMachines[workflow])
      ]?.Properties;

      // Assess
      expect(props).toMatchObject({
        StateMachineType: 'STANDARD',
        TracingConfiguration: { Enabled: true },
        LoggingConfiguration: { Level: 'ALL', IncludeExecutionData: false },
        DefinitionS3Location: expect.anything(),
      });
    },
  );

  it('alarms on failed, timed-out and aborted executions of both, and on dead letters', () => {
    // Prepare
    const { template, stack } = defaults;

    // Act
    const executionAlarms = Object.values(resourcesOf(template, 'AWS::CloudWatch::Alarm'))
      .map((alarm) => alarm.Properties)
      .filter((props) => props['Namespace'] === 'AWS/States')
      .map((props) => `${JSON.stringify(props['Dimensions'])} ${String(props['MetricName'])}`);

    // Assess
    for (const machine of [stack.stateMachines.backup, stack.stateMachines.restore]) {
      for (const metric of ['ExecutionsFailed', 'ExecutionsTimedOut', 'ExecutionsAborted']) {
        expect(executionAlarms).toContain(
          `[{"Name":"StateMachineArn","Value":{"Ref":"${logicalIdOf(defaults, machine)}"}}] ${metric}`,
        );
      }
    }
    // The dead-letter function drains the queue at once: count deliveries, not what waits.
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/SQS',
      MetricName: 'NumberOfMessagesReceived',
      Statistic: 'Sum',
      Period: 60,
      Dimensions: [
        {
          Name: 'QueueName',
          Value: { 'Fn::GetAtt': [logicalIdOf(defaults, stack.deadLetterQueue), 'QueueName'] },
        },
      ],
      ComparisonOperator: 'GreaterThanThreshold',
      Threshold: 0,
    });
  });
});

describe('the backup schedule', () => {
  it('starts the backup state machine with the fixed input through a role allowed only that', () => {
    // Prepare
    const { template, stack } = full;
    const backupRef = { Ref: logicalIdOf(full, stack.stateMachines.backup) };

    // Act
    const schedules = Object.values(resourcesOf(template, 'AWS::Scheduler::Schedule')).map(
      (schedule) => schedule.Properties,
    );
    const target = schedules[0]?.['Target'] as {
      Arn: unknown;
      RoleArn: { 'Fn::GetAtt': [string, string] };
      Input: string;
    };
    const roleId = target.RoleArn['Fn::GetAtt'][0];
    const roleStatements = statementsOf(full).filter((statement) => {
      const roles = resourcesOf(template, 'AWS::IAM::Policy')[statement.policy]?.Properties[
        'Roles'
      ];
      return JSON.stringify(roles) === JSON.stringify([{ Ref: roleId }]);
    });

    // Assess
    expect(schedules).toHaveLength(1);
    expect(schedules[0]).toMatchObject({
      ScheduleExpression: 'cron(0 2 * * ? *)',
      ScheduleExpressionTimezone: 'Europe/Paris',
      FlexibleTimeWindow: { Mode: 'OFF' },
      State: 'ENABLED',
    });
    expect(target.Arn).toEqual(backupRef);
    expect(JSON.parse(target.Input)).toEqual({ concurrency: 32, includeSecret: false });
    const deadLetterArn = {
      'Fn::GetAtt': [
        logicalIdOf(full, stack.node.findChild('ScheduleDeadLetterQueue') as Queue),
        'Arn',
      ],
    };
    expect(roleStatements.map((statement) => [statement.Action, statement.Resource])).toEqual([
      ['states:StartExecution', backupRef],
      ['sqs:SendMessage', deadLetterArn],
    ]);
    expect(schedules[0]?.['Target']).toMatchObject({ DeadLetterConfig: { Arn: deadLetterArn } });
    template.hasResourceProperties('AWS::IAM::Role', {
      AssumeRolePolicyDocument: {
        Statement: [
          Match.objectLike({
            Principal: { Service: 'scheduler.amazonaws.com' },
            Condition: Match.anyValue() as unknown,
          }),
        ],
      },
    });
  });

  it('adds a retention schedule that invokes only the prune function, with the policy in its environment', () => {
    // Prepare
    const built = buildStack({
      ...FULL_CONTEXT,
      pruneSchedule: 'rate(1 day)',
      retentionPolicy: { keepLast: 3, ttlDays: 30 },
    });
    const pruneRef = {
      'Fn::GetAtt': [logicalIdOf(built, built.stack.functions.prune.function), 'Arn'],
    };

    // Act
    const schedules = Object.values(resourcesOf(built.template, 'AWS::Scheduler::Schedule')).map(
      (schedule) => schedule.Properties,
    );
    const prune = schedules.find((schedule) => schedule['ScheduleExpression'] === 'rate(1 day)');

    // Assess
    expect(schedules).toHaveLength(2);
    expect((prune?.['Target'] as { Arn: unknown } | undefined)?.Arn).toEqual(pruneRef);
    built.template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({
          RETENTION_POLICY: JSON.stringify({ keepLast: 3, ttlDays: 30 }),
        }),
      },
    });
  });

  it('lets the retention schedule invoke the prune function itself, no version or alias, cdk-nag clean', () => {
    // Prepare
    const built = buildStack({ ...FULL_CONTEXT, pruneSchedule: 'rate(1 day)' });
    const pruneArn = {
      'Fn::GetAtt': [logicalIdOf(built, built.stack.functions.prune.function), 'Arn'],
    };

    // Act
    const invokers = statementsOf(built).filter((statement) =>
      actionsOf(statement).includes('lambda:InvokeFunction'),
    );
    const report = new AwsSolutionsChecks(undefined, {}).validateScope(built.stack);

    // Assess
    expect(
      invokers.filter((statement) => JSON.stringify(statement.Resource).includes('Prune')),
    ).toEqual([expect.objectContaining({ Action: 'lambda:InvokeFunction', Resource: pruneArn })]);
    expect(report.violations).toEqual([]);
  });

  it('backs up daily at 02:00 by default when the stack is given the cluster', () => {
    // Prepare
    const built = buildStack({ kubeconfigSecretArn: FULL_CONTEXT.kubeconfigSecretArn });

    // Act
    const schedules = Object.values(resourcesOf(built.template, 'AWS::Scheduler::Schedule'));

    // Assess
    expect(schedules.map((schedule) => schedule.Properties)).toEqual([
      expect.objectContaining({
        ScheduleExpression: 'cron(0 2 * * ? *)',
        ScheduleExpressionTimezone: 'UTC',
        Target: expect.objectContaining({ Input: '{}' }),
      }),
    ]);
  });

  it('backs up a named source by default without the cluster', () => {
    // Prepare
    const built = buildStack({
      backupInput: '{"source":{"bucket":"acme-plain-source","region":"eu-west-1"}}',
    });

    // Act / Assess
    built.template.resourceCountIs('AWS::Scheduler::Schedule', 1);
  });

  it('makes no schedule, and says why at synth, when nothing says what a backup would read', () => {
    // Prepare / Act
    const { template, stack } = defaults;

    // Assess
    template.resourceCountIs('AWS::Scheduler::Schedule', 0);
    template.resourceCountIs('AWS::SQS::Queue', 2);
    Annotations.fromStack(stack).hasWarning(
      '*',
      Match.stringLikeRegexp('No backup schedule.*kubeconfigSecretArn'),
    );
  });

  it('makes no schedule when backupSchedule is off', () => {
    // Prepare / Act
    const built = buildStack({ ...FULL_CONTEXT, backupSchedule: 'off', backupInput: '{}' });

    // Assess
    built.template.resourceCountIs('AWS::Scheduler::Schedule', 0);
    Annotations.fromStack(built.stack).hasNoWarning(
      '*',
      Match.stringLikeRegexp('No backup schedule'),
    );
  });
});

describe('the dashboard', () => {
  /** The dashboard's metric rows, tokens (queue names, ARNs) replaced by "<ref>". */
  function dashboardMetrics(built: Built): unknown[][] {
    const [dashboard] = Object.values(resourcesOf(built.template, 'AWS::CloudWatch::Dashboard'));
    const body = dashboard?.Properties['DashboardBody'] as { 'Fn::Join': [string, unknown[]] };
    const text = body['Fn::Join'][1]
      .map((part) => (typeof part === 'string' ? part : '<ref>'))
      .join('');
    const parsed = JSON.parse(text) as {
      widgets: Array<{ properties: { metrics?: unknown[][] } }>;
    };
    return parsed.widgets.flatMap((widget) => widget.properties.metrics ?? []);
  }

  it.each(['ObjectsCopied', 'BytesCopied', 'ObjectsFailed', 'ObjectsSkipped'])(
    'graphs the workers %s summed per minute from the Regvault namespace, service dimension',
    (metric) => {
      // Prepare
      const metrics = dashboardMetrics(defaults);

      // Act
      const row = metrics.find(
        (candidate) => candidate[0] === 'Regvault' && candidate[1] === metric,
      );

      // Assess
      expect(row?.slice(0, 4)).toEqual(['Regvault', metric, 'service', 'regvault']);
      expect(row?.[4]).toMatchObject({ stat: 'Sum', period: 60 });
    },
  );
});

describe('cdk-nag AwsSolutions', () => {
  it.each([
    ['defaults', defaults],
    ['cluster, VPC and schedule', full],
    ['an existing bucket', existing],
  ])('finds nothing unacknowledged (%s), and CDK itself reports no error', (_name, built) => {
    // Prepare
    const checks = new AwsSolutionsChecks(undefined, { verbose: true });

    // Act
    const report = checks.validateScope(built.stack);

    // Assess
    expect(
      report.violations.map(
        (violation) =>
          `${violation.ruleName}: ${violation.violatingResources.map((r) => r.constructPath).join(', ')}`,
      ),
    ).toEqual([]);
    Annotations.fromStack(built.stack).hasNoError('*', Match.anyValue());
  });

  it('still reports what the stack does not acknowledge', () => {
    // Prepare
    const built = buildStack();
    new Bucket(built.stack, 'UnloggedBucket');

    // Act
    const report = new AwsSolutionsChecks(undefined, {}).validateScope(built.stack);

    // Assess
    expect(report.violations.map((violation) => violation.ruleName)).toEqual(
      expect.arrayContaining(['AwsSolutions-S1', 'AwsSolutions-S10']),
    );
  });
});
