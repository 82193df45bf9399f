/**
 * The regvault Lambda functions: each made with the house defaults from its
 * entry file and its row of `FUNCTIONS`, given the environment the shared
 * runtime parses, the VPC when it calls the cluster or the registry, and only
 * the grants its row names.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Annotations, Duration, type Stack, Validations } from 'aws-cdk-lib';
import type { IAlarmAction } from 'aws-cdk-lib/aws-cloudwatch';
import { SecurityGroup, Subnet, Vpc } from 'aws-cdk-lib/aws-ec2';
import { CfnAccessEntry } from 'aws-cdk-lib/aws-eks';
import { type IRole, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import type { RetentionDays } from 'aws-cdk-lib/aws-logs';
import type { IQueue } from 'aws-cdk-lib/aws-sqs';
import { PROFILES } from '../functions/commons/registry/profiles.ts';
import type { FunctionName } from '../functions/commons/workflows/steps.ts';
import {
  FUNCTIONS,
  type FunctionSpec,
  forProfile,
  functionId,
  REGISTRY_BUCKET_ACTIONS,
  ROLE_BUCKET_ACTIONS,
  VAULT_ACTIONS,
} from './function-specs.ts';
import { type FunctionNetwork, HouseFunction, PROJECT_ROOT } from './house-function.ts';
import type { RegvaultSettings } from './settings.ts';
import type { VaultBucket } from './vault-bucket.ts';

/** What the functions are given: where the vault and the copy queue are, and whom alarms notify. */
export interface FunctionsProps {
  readonly settings: RegvaultSettings;
  readonly vault: VaultBucket;
  readonly copyQueue: IQueue;
  readonly alarmAction: IAlarmAction;
}

/** Every function of `FUNCTIONS`, made in the stack's own scope (`DiscoverFunction`, ...). */
export function makeFunctions(
  stack: Stack,
  props: FunctionsProps,
): Record<FunctionName, HouseFunction> {
  const { settings, vault } = props;
  const network = functionNetwork(stack, settings);
  if (
    settings.kubeconfigSecretArn !== undefined &&
    settings.patchKubeconfigSecretArn === undefined &&
    settings.eksClusterName === undefined
  )
    Annotations.of(stack).addWarningV2(
      'regvault:oneClusterIdentity',
      "One cluster identity: every function that calls the cluster reads kubeconfigSecretArn, so it must allow switch's patch (and, with a quiescing profile such as quay, its quiesce and pods/exec). " +
        'Give the patch identity its own kubeconfig (patchKubeconfigSecretArn), or use EKS tokens (eksClusterName); see docs/deploy.md.',
    );
  const environment: Record<string, string> = {
    VAULT_BUCKET: vault.bucket.bucketName,
    VAULT_PREFIX: settings.vaultPrefix,
    // Object Lock default retention refuses uploads without Content-MD5; an
    // existing bucket may have it, so it gets the header too.
    VAULT_CONTENT_MD5: String(
      settings.objectLockMode !== undefined || settings.vaultBucketName !== undefined,
    ),
    PROFILE: settings.profile,
    PROFILE_SETTINGS: JSON.stringify(settings.profileSettings),
    ...(settings.storagePathStyle ? { STORAGE_PATH_STYLE: 'true' } : {}),
    COPY_QUEUE_URL: props.copyQueue.queueUrl,
    COPY_CONCURRENCY: String(settings.copyConcurrency),
    REGVAULT_VERSION: packageVersion(),
    // Buckets the role reaches: a registry or restore target in one is copied server-side.
    ...(settings.registryBucketNames.length === 0
      ? {}
      : { REGISTRY_BUCKETS: settings.registryBucketNames.join(',') }),
    ...(settings.roleBucketNames.length === 0
      ? {}
      : { ROLE_BUCKETS: settings.roleBucketNames.join(',') }),
    ...(settings.registryUrl === undefined ? {} : { REGISTRY_URL: settings.registryUrl }),
  };
  // A profile that stops the registry (quay) quiesces, dumps and resumes in the rows marked `quiesces`.
  const quiescing = PROFILES[settings.profile].quiesceWaitSeconds !== undefined;
  return Object.fromEntries(
    (Object.entries(FUNCTIONS) as Array<[FunctionName, FunctionSpec]>).map(([name, row]) => {
      const spec = forProfile(row, quiescing);
      // The shared runtime reads every secret whose ARN it is given when a
      // container starts, so a secret's ARN goes exactly where its grant goes.
      const secrets = secretsOf(settings, spec);
      const fn = new HouseFunction(stack, functionId(name), {
        entry: `functions/${name}.ts`,
        description: spec.description,
        // The copy worker's timeout is a setting: the queue's visibility derives from it too.
        timeout:
          name === 'copy-worker'
            ? Duration.seconds(settings.copyWorkerTimeoutSeconds)
            : spec.timeout,
        memorySize: spec.memorySize,
        environment: {
          ...environment,
          ...registryRoleOf(settings, spec),
          ...secrets,
          ...(spec.cluster !== 'none' && settings.eksClusterName !== undefined
            ? { EKS_CLUSTER_NAME: settings.eksClusterName }
            : {}),
        },
        logRetention: settings.logRetentionDays as RetentionDays,
        // The cluster API, the registry and the buckets beside them may be reachable only in the VPC.
        network: spec.cluster !== 'none' || spec.registryApi ? network : undefined,
        alarmAction: props.alarmAction,
      });
      const folders = vaultActionsOf(spec);
      vault.grantObjects(fn.role, folders);
      if (Object.values(spec.vault).includes('prune')) vault.grantObjectLockRead(fn.role);
      if (spec.runLease !== undefined) {
        const writes = Object.values(folders).some((actions) => actions.includes('s3:PutObject'));
        vault.grantRunLeases(fn.role, spec.runLease, writes);
      }
      grantRoleBuckets(stack, fn.role, settings, spec);
      grantRegistryBuckets(stack, fn.role, settings, spec);
      if (spec.cluster !== 'none' && settings.eksClusterName !== undefined)
        eksAccessEntry(stack, name, fn.role, settings.eksClusterName, spec.cluster);
      const secretArns = Object.values(secrets);
      if (secretArns.length > 0) {
        fn.role.addToPrincipalPolicy(
          new PolicyStatement({
            actions: ['secretsmanager:GetSecretValue'],
            resources: secretArns,
          }),
        );
      }
      return [name, fn];
    }),
  ) as Record<FunctionName, HouseFunction>;
}

/** The object actions of a row in each vault folder it names. */
function vaultActionsOf(spec: FunctionSpec): Record<string, readonly string[]> {
  return Object.fromEntries(
    Object.entries(spec.vault).map(([folder, access]) => [folder, VAULT_ACTIONS[access]]),
  );
}

/**
 * The kubeconfig of a function's cluster identity: the patch rows (switch,
 * rollback, and with a quiescing profile the rows that quiesce) use the
 * patch identity's when one is given, every other cluster caller the read
 * identity's.
 */
function kubeconfigOf(settings: RegvaultSettings, spec: FunctionSpec): string | undefined {
  if (spec.cluster === 'none') return undefined;
  return spec.cluster === 'patch'
    ? (settings.patchKubeconfigSecretArn ?? settings.kubeconfigSecretArn)
    : settings.kubeconfigSecretArn;
}

/** The secrets a function's row says it reads, by the environment variable that names each. */
function secretsOf(settings: RegvaultSettings, spec: FunctionSpec): Record<string, string> {
  const kubeconfig = kubeconfigOf(settings, spec);
  return {
    ...(kubeconfig === undefined ? {} : { KUBECONFIG_SECRET_ARN: kubeconfig }),
    ...(spec.registryApi && settings.registryCredentialsSecretArn !== undefined
      ? { REGISTRY_CREDENTIALS_SECRET_ARN: settings.registryCredentialsSecretArn }
      : {}),
  };
}

/** The deployer's `roleBucketNames`, listed and reached as far as the row's level allows. */
function grantRoleBuckets(
  stack: Stack,
  role: IRole,
  settings: RegvaultSettings,
  spec: FunctionSpec,
): void {
  if (spec.roleBuckets === 'none') return;
  grantBuckets(
    stack,
    role,
    settings.roleBucketNames,
    ROLE_BUCKET_ACTIONS[spec.roleBuckets],
    (name) =>
      `The deployer named ${name} (roleBucketNames) as a plain source or target the role copies whole.`,
  );
}

/** The role a registry reader assumes (`registryReadRoleArn`), for the rows that read the registry. */
function registryRoleOf(settings: RegvaultSettings, spec: FunctionSpec): Record<string, string> {
  const { registryReadRoleArn, registryReadExternalId } = settings;
  if (registryReadRoleArn === undefined || (spec.registryBuckets ?? 'none') === 'none') return {};
  return {
    REGISTRY_READ_ROLE_ARN: registryReadRoleArn,
    ...(registryReadExternalId === undefined
      ? {}
      : { REGISTRY_READ_EXTERNAL_ID: registryReadExternalId }),
  };
}

/**
 * The deployer's `registryBucketNames`, listed and read as far as the row's
 * level allows; with `registryReadRoleArn`, only the right to assume that
 * role, which lists and reads them in their own account.
 */
function grantRegistryBuckets(
  stack: Stack,
  role: IRole,
  settings: RegvaultSettings,
  spec: FunctionSpec,
): void {
  const level = spec.registryBuckets ?? 'none';
  if (level === 'none') return;
  if (settings.registryReadRoleArn !== undefined) {
    role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['sts:AssumeRole'],
        resources: [settings.registryReadRoleArn],
      }),
    );
    return;
  }
  grantBuckets(
    stack,
    role,
    settings.registryBucketNames,
    REGISTRY_BUCKET_ACTIONS[level],
    (name) =>
      `The deployer named ${name} (registryBucketNames) as a registry bucket the role backs up whole, read-only.`,
  );
}

/** Lists these buckets, and runs these object actions on every key in them (none: listing only). */
function grantBuckets(
  stack: Stack,
  role: IRole,
  names: readonly string[],
  actions: readonly string[],
  reason: (name: string) => string,
): void {
  if (names.length === 0) return;
  const arns = names.map((name) =>
    stack.formatArn({ service: 's3', region: '', account: '', resource: name }),
  );
  role.addToPrincipalPolicy(new PolicyStatement({ actions: ['s3:ListBucket'], resources: arns }));
  if (actions.length === 0) return;
  role.addToPrincipalPolicy(
    new PolicyStatement({ actions: [...actions], resources: arns.map((arn) => `${arn}/*`) }),
  );
  // cdk-nag names each wildcard resource in its own finding; these are the object grants above.
  for (const name of names) {
    Validations.of(role).acknowledge({
      id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::${name}/*]`,
      reason: reason(name),
    });
  }
}

/**
 * What the owner of a registry bucket in another account adds to its bucket
 * policy so the roles that read it may (an identity policy alone cannot
 * reach across accounts): the stack outputs it as JSON.
 */
export function registryBucketPolicy(
  stack: Stack,
  settings: RegvaultSettings,
  functions: Readonly<Record<FunctionName, HouseFunction>>,
): string | undefined {
  if (settings.registryBucketNames.length === 0 || settings.registryReadRoleArn !== undefined)
    return undefined;
  return stack.toJsonString({
    Version: '2012-10-17',
    Statement: registryReadStatements(settings, { AWS: registryReaders(functions) }),
  });
}

/** The roles of the functions that read the registry bucket: discover, plan, the copy worker. */
function registryReaders(functions: Readonly<Record<FunctionName, HouseFunction>>): string[] {
  return (Object.entries(FUNCTIONS) as Array<[FunctionName, FunctionSpec]>)
    .filter(([, spec]) => (spec.registryBuckets ?? 'none') !== 'none')
    .map(([name]) => functions[name].role.roleArn);
}

/** Listing and reading the registry buckets: in their bucket policy (`principal`) or the read role's own policy. */
function registryReadStatements(
  settings: RegvaultSettings,
  principal?: { AWS: string[] },
): Array<Record<string, unknown>> {
  const buckets = settings.registryBucketNames.map((name) => `arn:aws:s3:::${name}`);
  const who = principal === undefined ? {} : { Principal: principal };
  return [
    { Sid: 'RegvaultLists', Effect: 'Allow', ...who, Action: 's3:ListBucket', Resource: buckets },
    {
      Sid: 'RegvaultReads',
      Effect: 'Allow',
      ...who,
      Action: [...REGISTRY_BUCKET_ACTIONS.read],
      Resource: buckets.map((arn) => `${arn}/*`),
    },
  ];
}

/**
 * What the owner of the registry account gives `registryReadRoleArn`: its
 * permissions (list and read the registry buckets, nothing else) and its
 * trust policy (the reading function roles, with the external id when one
 * is set). The stack outputs both as JSON.
 */
export function registryReadRolePolicies(
  stack: Stack,
  settings: RegvaultSettings,
  functions: Readonly<Record<FunctionName, HouseFunction>>,
): { readonly permissions: string; readonly trust: string } | undefined {
  if (settings.registryReadRoleArn === undefined) return undefined;
  const externalId = settings.registryReadExternalId;
  return {
    permissions: stack.toJsonString({
      Version: '2012-10-17',
      Statement: registryReadStatements(settings),
    }),
    trust: stack.toJsonString({
      Version: '2012-10-17',
      Statement: [
        {
          Sid: 'RegvaultReadersAssume',
          Effect: 'Allow',
          Principal: { AWS: registryReaders(functions) },
          Action: 'sts:AssumeRole',
          ...(externalId === undefined
            ? {}
            : { Condition: { StringEquals: { 'sts:ExternalId': externalId } } }),
        },
      ],
    }),
  };
}

/** The Kubernetes group of each cluster identity; docs/deploy.md binds them to their RBAC roles. */
export const CLUSTER_GROUPS = { read: 'regvault-read', patch: 'regvault-patch' } as const;

/**
 * Lets a function's role into the EKS cluster as its identity's group: the
 * cluster maps the role a token was signed with to that group (an access
 * entry; the cluster's authentication mode must include the API).
 */
function eksAccessEntry(
  stack: Stack,
  name: FunctionName,
  role: IRole,
  clusterName: string,
  access: 'read' | 'patch',
): void {
  new CfnAccessEntry(stack, `${functionId(name)}EksAccess`, {
    clusterName,
    principalArn: role.roleArn,
    type: 'STANDARD',
    kubernetesGroups: [CLUSTER_GROUPS[access]],
  });
}

function functionNetwork(stack: Stack, settings: RegvaultSettings): FunctionNetwork | undefined {
  const { vpcId, subnetIds, availabilityZones } = settings;
  if (vpcId === undefined || subnetIds === undefined || availabilityZones === undefined)
    return undefined;
  // Imported by id with no lookup, so synth needs no AWS credentials.
  const vpc = Vpc.fromVpcAttributes(stack, 'Vpc', {
    vpcId,
    availabilityZones: [...new Set(availabilityZones)],
  });
  const subnets = subnetIds.map((subnetId, index) => {
    const subnet = Subnet.fromSubnetAttributes(stack, `Subnet${index}`, {
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
  const securityGroup = new SecurityGroup(stack, 'FunctionsSecurityGroup', {
    vpc,
    description:
      'regvault functions: outbound to the cluster API, the registry and AWS APIs; no inbound',
    allowAllOutbound: true,
  });
  return { vpc, subnets, securityGroup };
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
