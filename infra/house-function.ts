/**
 * The one construct every regvault Lambda is made with, so house defaults live
 * in one place: Node.js 22 on arm64, X-Ray tracing, JSON logs into a log group
 * with retention, an ESM bundle built offline by the local esbuild with the
 * AWS SDK inside it, a role of its own, and an alarm on errors.
 */
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Duration, Validations } from 'aws-cdk-lib';
import {
  Alarm,
  ComparisonOperator,
  type IAlarmAction,
  TreatMissingData,
} from 'aws-cdk-lib/aws-cloudwatch';
import type { ISecurityGroup, ISubnet, IVpc } from 'aws-cdk-lib/aws-ec2';
import { ManagedPolicy, Role, ServicePrincipal } from 'aws-cdk-lib/aws-iam';
import { Architecture, LoggingFormat, Runtime, Tracing } from 'aws-cdk-lib/aws-lambda';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

/** The repository root: the esbuild project root and where package-lock.json lives. */
export const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * ESM bundles need `require` for the CommonJS dependencies esbuild inlines
 * (the X-Ray SDK under Powertools Tracer among them).
 */
const ESM_REQUIRE_BANNER =
  "import { createRequire as regvaultCreateRequire } from 'node:module'; const require = regvaultCreateRequire(import.meta.url);";

/** node:http without its ES module view (40 ms of a cold start; scripts/node-http.mjs). */
const NODE_HTTP = join(PROJECT_ROOT, 'scripts', 'node-http.mjs');

/** Where a function runs when it must reach the cluster's API server from inside a VPC. */
export interface FunctionNetwork {
  readonly vpc: IVpc;
  readonly subnets: readonly ISubnet[];
  readonly securityGroup: ISecurityGroup;
}

export interface HouseFunctionProps {
  /** Entry file relative to the repository root, e.g. `functions/plan.ts`. */
  readonly entry: string;
  readonly description: string;
  readonly timeout: Duration;
  readonly memorySize: number;
  readonly environment: Readonly<Record<string, string>>;
  readonly logRetention: RetentionDays;
  readonly network?: FunctionNetwork | undefined;
  readonly alarmAction: IAlarmAction;
}

/** A regvault Lambda function with the house defaults. */
export class HouseFunction extends Construct {
  readonly function: NodejsFunction;
  readonly role: Role;
  readonly logGroup: LogGroup;
  readonly errorsAlarm: Alarm;

  constructor(scope: Construct, id: string, props: HouseFunctionProps) {
    super(scope, id);
    this.logGroup = new LogGroup(this, 'Logs', { retention: props.logRetention });
    // A role per function: each holds only what its own step needs.
    this.role = new Role(this, 'Role', {
      assumedBy: new ServicePrincipal('lambda.amazonaws.com'),
      description: `regvault ${relative('functions', props.entry)}`,
    });
    // Instead of AWSLambdaBasicExecutionRole (any log group): only this function's.
    this.logGroup.grantWrite(this.role);

    this.function = new NodejsFunction(this, 'Function', {
      entry: join(PROJECT_ROOT, props.entry),
      handler: 'handler',
      description: props.description,
      runtime: Runtime.NODEJS_22_X,
      architecture: Architecture.ARM_64,
      memorySize: props.memorySize,
      timeout: props.timeout,
      tracing: Tracing.ACTIVE,
      role: this.role,
      logGroup: this.logGroup,
      loggingFormat: LoggingFormat.JSON,
      environment: { NODE_OPTIONS: '--enable-source-maps', ...props.environment },
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      bundling: {
        format: OutputFormat.ESM,
        target: 'node22',
        mainFields: ['module', 'main'],
        banner: ESM_REQUIRE_BANNER,
        esbuildArgs: { '--alias:http': NODE_HTTP, '--alias:node:http': NODE_HTTP },
        // The SDK clients are pinned in package-lock.json; the runtime's copy
        // may be older or newer than what the copy engine was tested with.
        bundleAwsSDK: true,
        externalModules: [],
        minify: true,
        keepNames: true,
        sourceMap: true,
        sourcesContent: false,
        forceDockerBundling: false,
      },
      ...(props.network === undefined
        ? {}
        : {
            vpc: props.network.vpc,
            vpcSubnets: { subnets: [...props.network.subnets] },
            securityGroups: [props.network.securityGroup],
          }),
    });

    Validations.of(this.role).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason:
        'Active tracing grants xray:PutTraceSegments and xray:PutTelemetryRecords, which support no resource-level scope; ' +
        'infra tests check that every other statement of these roles names its resources.',
    });
    Validations.of(this.function).acknowledge({
      id: 'AwsSolutions-L1',
      reason:
        'Node.js 22 is the runtime the functions are built and tested on (package.json engines and its node devDependency); ' +
        'moving to a newer runtime is a change of its own, made with the tests run on it.',
    });
    if (props.network !== undefined) {
      // CDK adds this only to roles it makes itself; Lambda needs it to place the function's ENIs.
      this.role.addManagedPolicy(
        ManagedPolicy.fromAwsManagedPolicyName('service-role/AWSLambdaVPCAccessExecutionRole'),
      );
      Validations.of(this.role).acknowledge({
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]',
        reason:
          'The AWS-managed VPC access policy holds only the network-interface actions Lambda needs to join the subnets; ' +
          'those EC2 actions support no narrower resource scope, so an inline copy would be the same policy.',
      });
    }

    this.errorsAlarm = new Alarm(this, 'ErrorsAlarm', {
      alarmDescription: `regvault ${props.entry} failed an invocation; its log group ${this.logGroup.logGroupName} says why`,
      metric: this.function.metricErrors({ period: Duration.minutes(5), statistic: 'Sum' }),
      threshold: 1,
      evaluationPeriods: 1,
      comparisonOperator: ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      treatMissingData: TreatMissingData.NOT_BREACHING,
    });
    this.errorsAlarm.addAlarmAction(props.alarmAction);
  }
}
