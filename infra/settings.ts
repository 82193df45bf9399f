/**
 * The deployment settings of the regvault stack, parsed once at the edge from
 * CDK context (`cdk.json` or `cdk deploy -c key=value`). Values from the
 * command line arrive as strings, values from `cdk.json` as JSON, so lists,
 * numbers and JSON objects accept both forms.
 */
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { z } from 'zod';
import {
  DEFAULT_PROFILE,
  PROFILES,
  profileNameSchema,
} from '../functions/commons/registry/profiles.ts';
// The copy's times are data both sides read: the stack and the local runner derive them alike.
import {
  COPY_WORKER_TIMEOUT_RANGE,
  COPY_WORKER_TIMEOUT_SECONDS,
} from '../functions/commons/workflows/copy-timing.ts';
import { QUIESCE_BUDGET } from './function-specs.ts';

const bucketName = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
    'a bucket name: 3-63 lowercase letters, digits, dots and hyphens',
  );

const secretArn = z
  .string()
  .regex(
    /^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+-[A-Za-z0-9]{6}$/,
    'the complete secret ARN, ending in the six-character suffix Secrets Manager adds (see `aws secretsmanager describe-secret`)',
  );

/** A JSON object given inline (cdk.json) or as JSON text (`-c key='{"a":1}'`). */
const jsonObject = z.preprocess(
  (value) => {
    if (typeof value !== 'string') return value;
    try {
      return JSON.parse(value);
    } catch {
      return value;
    }
  },
  z.record(z.string(), z.unknown()),
);

/** A list given as an array (cdk.json) or comma-separated text (`-c key=a,b`). */
const listOf = <T extends z.ZodType>(item: T) =>
  z.preprocess(
    (value) =>
      typeof value === 'string'
        ? value
            .split(',')
            .map((part) => part.trim())
            .filter((part) => part !== '')
        : value,
    z.array(item),
  );

const retentionDays = new Set<number>(
  Object.values(RetentionDays).filter((value) => typeof value === 'number'),
);

export const regvaultSettingsSchema = z
  .object({
    /** The CloudFormation stack name; two names deploy two independent copies. */
    stackName: z
      .string()
      .regex(
        /^[A-Za-z][A-Za-z0-9-]{0,127}$/,
        'a stack name: letters, digits and hyphens, starting with a letter',
      )
      .default('Regvault'),
    /** An existing vault bucket; when absent the stack creates one. */
    vaultBucketName: bucketName.optional(),
    /** Key prefix of the vault inside the bucket; the functions reach only keys under it. */
    vaultPrefix: z
      .string()
      .regex(/^[A-Za-z0-9!_.*'()/-]*$/, "a key prefix of letters, digits and !_.*'()/-")
      .default(''),
    /** An existing KMS key; when absent a new bucket gets a new key (an existing bucket keeps its own encryption). */
    kmsKeyArn: z
      .string()
      .regex(
        /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[0-9a-f-]+$/,
        'a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)',
      )
      .optional(),
    /** S3 Object Lock on a new vault bucket, so a compromised account cannot delete backups early. */
    objectLockMode: z.enum(['GOVERNANCE', 'COMPLIANCE']).optional(),
    objectLockRetentionDays: z.coerce.number().int().min(1).max(36_500).optional(),
    /** Days a replaced or deleted vault object version is kept. */
    noncurrentVersionDays: z.coerce.number().int().min(1).max(3_650).default(30),
    /**
     * EventBridge Scheduler expression for backups, e.g. `cron(0 2 * * ? *)`,
     * or `off`. Absent: daily at 02:00 when the stack knows what to back up
     * (see `backupScheduleOf`).
     */
    backupSchedule: z
      .string()
      .regex(
        /^((cron|rate|at)\(.+\)|off)$/,
        'a Scheduler expression (cron(...), rate(...) or at(...)) or off',
      )
      .optional(),
    /** Hours without a complete snapshot after which the scheduled-backup alarm fires (1-168). */
    backupAlarmHours: z.coerce.number().int().min(1).max(168).default(26),
    backupScheduleTimezone: z.string().min(1).default('UTC'),
    /** EventBridge Scheduler expression for retention (prune); no schedule when absent. */
    pruneSchedule: z
      .string()
      .regex(/^(cron|rate|at)\(.+\)$/, 'a Scheduler expression: cron(...), rate(...) or at(...)')
      .optional(),
    /** What prune keeps: `{"keepLast": N, "ttlDays": D}` (a snapshot is kept if either rule keeps it). */
    retentionPolicy: jsonObject.default({ keepLast: 14 }),
    /** Vault objects newer than a running backup's start minus this are never swept. */
    retentionGraceMinutes: z.coerce.number().int().min(0).max(10_080).default(60),
    /** The fixed execution input of scheduled backups (the backup input schema of the workflows). */
    backupInput: jsonObject.default({}),
    /** The registry's kind (functions/commons/registry/profiles.ts). */
    profile: profileNameSchema.default(DEFAULT_PROFILE),
    /** That profile's settings overriding its defaults (names, namespace, labels). */
    profileSettings: jsonObject.default({}),
    /**
     * Address the registry's bucket and restore targets on a non-AWS endpoint
     * path style (an old MinIO); virtual-hosted otherwise, path style always
     * on an IP address.
     */
    storagePathStyle: z
      .union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')])
      .default(false),
    /**
     * The kubeconfig of regvault's read identity in the cluster: the
     * registry's resource, storage Secrets and rollout. Every function that
     * calls the cluster reads it, except the patch identity's (switch,
     * rollback, and quay's quiescing steps) when `patchKubeconfigSecretArn` is set.
     */
    kubeconfigSecretArn: secretArn.optional(),
    /**
     * The kubeconfig of the identity that may patch the registry's resource:
     * switch and rollback, and with a quiescing profile (quay) also discover,
     * finalize, mark-failed and end-dead-run (`quiesces` in function-specs.ts).
     */
    patchKubeconfigSecretArn: secretArn.optional(),
    /**
     * An EKS cluster's name: the functions sign short-lived tokens with their
     * own roles (the kubeconfig then gives only the server and its CA), and
     * the stack maps each role to the `regvault-read` or `regvault-patch`
     * group with an EKS access entry.
     */
    eksClusterName: z
      .string()
      .regex(/^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$/, 'an EKS cluster name')
      .optional(),
    /** Principals (IAM role or user ARNs) besides the functions that may use the vault's new key through S3: who runs the CLI on the vault. */
    vaultKeyUserArns: listOf(
      z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:(role|user)\/.+$/, 'an IAM role or user ARN'),
    ).default([]),
    registryUrl: z.url({ protocol: /^https?$/ }).optional(),
    registryCredentialsSecretArn: secretArn.optional(),
    /** The VPC and subnets of the functions that reach the cluster; imported by id, never looked up. */
    vpcId: z
      .string()
      .regex(/^vpc-[0-9a-f]+$/, 'a VPC id (vpc-...)')
      .optional(),
    subnetIds: listOf(
      z.string().regex(/^subnet-[0-9a-f]+$/, 'a subnet id (subnet-...)'),
    ).optional(),
    /** The availability zone of each subnet, in the same order (CDK imports a VPC with its zones). */
    availabilityZones: listOf(
      z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d[a-z]$/, 'an availability zone such as eu-west-1a'),
    ).optional(),
    /**
     * Copy workers running at once: the SQS event source's maximum
     * concurrency (2-1000, its range), and so how many shards copy at once.
     * The account's Lambda concurrency quota must leave room for it.
     */
    copyWorkers: z.coerce.number().int().min(2).max(1_000).default(40),
    /** Seconds the workflows wait between counts of the shards that have ended (their Wait state). */
    copyPollSeconds: z.coerce.number().int().min(1).max(300).default(10),
    /**
     * Hours the shards of one copy may take before the workflow fails it; below
     * the executions' 48-hour timeout, so the failure path still runs. Each
     * poll adds six history events: see the check below.
     */
    copyTimeoutHours: z.coerce.number().int().min(1).max(46).default(5),
    /**
     * The copy worker's timeout (s): the one setting the copy queue's
     * visibility timeout (six times it) and a message's work budget (it less
     * a margin to hand on) derive from (functions/commons/workflows/copy-timing.ts).
     */
    copyWorkerTimeoutSeconds: z.coerce
      .number()
      .int()
      .min(COPY_WORKER_TIMEOUT_RANGE.min)
      .max(COPY_WORKER_TIMEOUT_RANGE.max)
      .default(COPY_WORKER_TIMEOUT_SECONDS),
    /** Requests one copy worker keeps in flight (COPY_CONCURRENCY, the S3 client's sockets). */
    copyConcurrency: z.coerce.number().int().min(1).max(512).default(64),
    logRetentionDays: z.coerce
      .number()
      .refine(
        (days) => retentionDays.has(days),
        'a CloudWatch Logs retention: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...',
      )
      .default(90),
    /** Email addresses subscribed to the alarm topic the stack creates (each confirms by mail). */
    alarmEmails: listOf(z.email('an email address')).default([]),
    /** An existing SNS topic every alarm notifies instead of the stack's own. */
    alarmTopicArn: z
      .string()
      .regex(/^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:.+$/, 'an SNS topic ARN')
      .optional(),
    /**
     * Restores that switch the registry wait, after their proof, for a
     * person to approve the switch: a notice with a task token goes to the
     * alarm topic (infra/restore-approval.ts). `true` or `false`.
     */
    restoreApproval: z
      .preprocess(
        (value) => (value === 'true' ? true : value === 'false' ? false : value),
        z.boolean('true or false'),
      )
      .default(false),
    /** Hours a restore waits for its approval before it ends unswitched (1-24). */
    restoreApprovalHours: z.coerce.number().int().min(1).max(24).default(8),
    /**
     * Plain buckets the functions' own role may read and write: a backup
     * `source` or a restore `target` given without a cluster Secret.
     */
    roleBucketNames: listOf(bucketName).default([]),
    /**
     * AWS S3 buckets of registries the functions' own role may read: a
     * registry the cluster stores in one is read with the role, as the vault
     * is written, so its objects are copied server-side (CopyObject) instead
     * of streamed with the storage Secret's keys.
     */
    registryBucketNames: listOf(bucketName).default([]),
    /**
     * A role in the account of the `registryBucketNames` that may list and
     * read them: discover, plan and the copy worker assume it to read the
     * registry (the copy then streams: GET as the role, PUT as the function).
     */
    registryReadRoleArn: z
      .string()
      .regex(
        /^arn:aws[a-z-]*:iam::\d{12}:role\/.+$/,
        'an IAM role ARN (arn:aws:iam::<account>:role/<name>)',
      )
      .optional(),
    /** The external id the role's trust policy asks for (sts:ExternalId), if any. */
    registryReadExternalId: z
      .string()
      .regex(/^[\w+=,.@:/-]{2,1224}$/, '2-1224 letters, digits and +=,.@:/-')
      .optional(),
  })
  .strict()
  .superRefine((settings, ctx) => {
    if (
      (settings.objectLockMode === undefined) !==
      (settings.objectLockRetentionDays === undefined)
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['objectLockRetentionDays'],
        message: 'objectLockMode and objectLockRetentionDays go together: set both or neither',
      });
    }
    if (settings.objectLockMode !== undefined && settings.vaultBucketName !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['objectLockMode'],
        message:
          'Object Lock is set on a bucket the stack creates; configure it on the existing bucket yourself',
      });
    }
    if (
      settings.patchKubeconfigSecretArn !== undefined &&
      settings.kubeconfigSecretArn === undefined
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['patchKubeconfigSecretArn'],
        message:
          'the patch identity is the second of two: set kubeconfigSecretArn (the read identity) too',
      });
    }
    if (settings.patchKubeconfigSecretArn !== undefined && settings.eksClusterName !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['patchKubeconfigSecretArn'],
        message:
          "with eksClusterName the functions' roles are the cluster identities (read or patch by access entry): drop patchKubeconfigSecretArn",
      });
    }
    if (settings.eksClusterName !== undefined && settings.kubeconfigSecretArn === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['kubeconfigSecretArn'],
        message:
          'eksClusterName needs kubeconfigSecretArn: a kubeconfig with the cluster server and CA (its user is not used)',
      });
    }
    if (
      settings.vaultKeyUserArns.length > 0 &&
      (settings.kmsKeyArn !== undefined || settings.vaultBucketName !== undefined)
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['vaultKeyUserArns'],
        message:
          "vaultKeyUserArns go into the policy of the key the stack creates; grant them in your own key's policy instead",
      });
    }
    const subnets = settings.subnetIds?.length ?? 0;
    if ((settings.vpcId === undefined) !== (subnets === 0)) {
      ctx.addIssue({
        code: 'custom',
        path: ['subnetIds'],
        message: 'vpcId and subnetIds go together: set both or neither',
      });
    }
    if ((settings.availabilityZones?.length ?? 0) !== subnets) {
      ctx.addIssue({
        code: 'custom',
        path: ['availabilityZones'],
        message: `one availability zone per subnet, in the subnets' order (${subnets} subnets); see aws ec2 describe-subnets`,
      });
    }
    // A restore waits through two copies (blobs, then links), six events a
    // poll: 2 x 3,600 x hours / seconds x 6 must stay below the 25,000 events
    // of an execution's history, with room for the other states.
    if (settings.copyPollSeconds < 2 * settings.copyTimeoutHours) {
      ctx.addIssue({
        code: 'custom',
        path: ['copyPollSeconds'],
        message: `at least 2 x copyTimeoutHours (${2 * settings.copyTimeoutHours}): a restore polling every ${settings.copyPollSeconds} s for ${settings.copyTimeoutHours} h per copy would pass the 25,000 events of an execution's history; poll less often or allow fewer hours`,
      });
    }
    // The approval waits inside the same 48-hour execution as the two copies:
    // its timeout must leave the copies their hours and the failure path its minutes.
    if (
      settings.restoreApproval &&
      settings.restoreApprovalHours + 2 * settings.copyTimeoutHours > 46
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['restoreApprovalHours'],
        message: `at most ${46 - 2 * settings.copyTimeoutHours} with copyTimeoutHours ${settings.copyTimeoutHours}: a restore's two copies and its approval wait share one execution's 48 hours`,
      });
    }
    if (settings.backupSchedule === 'off' && Object.keys(settings.backupInput).length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['backupInput'],
        message: 'backupInput is the input of scheduled backups, and backupSchedule is off',
      });
    }
    if (settings.registryReadRoleArn !== undefined && settings.registryBucketNames.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['registryReadRoleArn'],
        message:
          'the role reads the registryBucketNames: name the registry buckets in its account there too',
      });
    }
    if (
      settings.registryReadExternalId !== undefined &&
      settings.registryReadRoleArn === undefined
    ) {
      ctx.addIssue({
        code: 'custom',
        path: ['registryReadExternalId'],
        message: 'the external id goes with registryReadRoleArn: set the role too, or drop it',
      });
    }
    quiesceFits(settings, ctx);
    if (settings.alarmTopicArn !== undefined && settings.alarmEmails.length > 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['alarmEmails'],
        message:
          'alarmEmails subscribe to the topic the stack creates, and alarmTopicArn replaces it: subscribe to your own topic, or drop alarmTopicArn',
      });
    }
  });

export type RegvaultSettings = z.output<typeof regvaultSettingsSchema>;

/**
 * A profile that quiesces the registry (quay) does it inside discover, whose
 * Lambda has `QUIESCE_BUDGET.seconds`: its quiesce wait must leave the dump
 * its share. Its settings are read here with the profile's own schema, so a
 * misspelt one is refused at synth too, before anything is deployed.
 */
function quiesceFits(
  settings: { profile: keyof typeof PROFILES; profileSettings: Record<string, unknown> },
  ctx: z.RefinementCtx,
): void {
  const kind = PROFILES[settings.profile];
  if (kind.quiesceWaitSeconds === undefined) return;
  const parsed = kind.settingsSchema.safeParse(settings.profileSettings);
  if (!parsed.success) {
    for (const issue of parsed.error.issues)
      ctx.addIssue({
        code: 'custom',
        path: ['profileSettings', ...issue.path.map(String)],
        message: `${issue.message} (the ${settings.profile} profile's settings)`,
      });
    return;
  }
  const wait = kind.quiesceWaitSeconds(parsed.data);
  const most = QUIESCE_BUDGET.seconds - QUIESCE_BUDGET.dumpSeconds;
  if (wait > most)
    ctx.addIssue({
      code: 'custom',
      path: ['profileSettings', 'waitSeconds'],
      message: `at most ${most} with profile ${settings.profile} (${wait} given): discover quiesces the registry and then dumps its database in one Lambda of ${QUIESCE_BUDGET.seconds} s (Lambda's most), and the stack keeps ${QUIESCE_BUDGET.dumpSeconds} s of it for the dump; lower waitSeconds, or back up with the CLI's local runner, which has no such limit`,
    });
}

/**
 * Context keys that look like ours: plain camelCase. CDK's own keys carry a
 * colon (`aws:cdk:...`) or an `@` (feature flags), so a mistyped setting is
 * reported instead of silently ignored.
 */
const SETTING_LIKE = /^[a-z][A-Za-z0-9]*$/;

/** Error raised when the deployment settings are not valid; lists every problem with its key. */
export class SettingsError extends Error {
  override readonly name = 'SettingsError';
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(
      `the regvault deployment settings are not valid; fix them in cdk.json or the -c flags:\n  ${problems.join('\n  ')}`,
    );
    this.problems = problems;
  }
}

/** Parses the settings from the app's whole context (undefined keys take their defaults). */
export function parseSettings(context: Readonly<Record<string, unknown>>): RegvaultSettings {
  const raw = Object.fromEntries(
    Object.entries(context).filter(([key, value]) => SETTING_LIKE.test(key) && value !== undefined),
  );
  const parsed = regvaultSettingsSchema.safeParse(raw);
  if (!parsed.success) {
    throw new SettingsError(
      parsed.error.issues.map(
        (issue) => `${issue.path.join('.') || '(settings)'}: ${issue.message}`,
      ),
    );
  }
  return parsed.data;
}
