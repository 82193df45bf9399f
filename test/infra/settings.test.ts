import { describe, expect, it } from '@jest/globals';
import { parseSettings, SettingsError } from '../../infra/settings.ts';

/** Context as `cdk deploy -c key=value` gives it: every value a string, next to CDK's own keys. */
const fromCli = (values: Record<string, string>) => ({
  '@aws-cdk/aws-iam:minimizePolicies': true,
  'aws:cdk:enable-path-metadata': true,
  ...values,
});

describe('deployment settings', () => {
  it('takes lists, numbers and JSON as command-line text', () => {
    // Prepare
    const context = fromCli({
      vpcId: 'vpc-0a1b',
      subnetIds: 'subnet-01, subnet-02',
      availabilityZones: 'eu-west-1a,eu-west-1b',
      copyWorkers: '12',
      profileSettings: '{"namespace":"registry-system"}',
    });

    // Act
    const settings = parseSettings(context);

    // Assess
    expect(settings).toMatchObject({
      subnetIds: ['subnet-01', 'subnet-02'],
      availabilityZones: ['eu-west-1a', 'eu-west-1b'],
      copyWorkers: 12,
      profileSettings: { namespace: 'registry-system' },
    });
  });

  it('takes the same values as JSON from cdk.json, and defaults what is not given', () => {
    // Prepare
    const values: Record<string, unknown> = {
      roleBucketNames: ['plain-a'],
      backupInput: { concurrency: 8 },
      backupSchedule: 'rate(1 day)',
    };

    // Act
    const settings = parseSettings(values);

    // Assess
    expect(settings).toMatchObject({
      roleBucketNames: ['plain-a'],
      backupInput: { concurrency: 8 },
      vaultPrefix: '',
      copyWorkers: 40,
      copyPollSeconds: 10,
      copyTimeoutHours: 5,
      copyWorkerTimeoutSeconds: 900,
      copyConcurrency: 64,
      logRetentionDays: 90,
      backupScheduleTimezone: 'UTC',
      backupAlarmHours: 26,
      alarmEmails: [],
    });
    expect(settings.vaultBucketName).toBeUndefined();
  });

  it('lists every problem at once, each with its key', () => {
    // Prepare
    const context = fromCli({
      vaultBucketName: 'Not_A_Bucket',
      kubeconfigSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:kubeconfig',
      copyWorkers: '1',
      logRetentionDays: '31',
      objectLockMode: 'GOVERNANCE',
      vpcId: 'vpc-0a1b',
    });

    // Act
    const parse = () => parseSettings(context);

    // Assess
    expect(parse).toThrow(SettingsError);
    try {
      parse();
    } catch (err) {
      const problems =
        err instanceof SettingsError ? err.problems.map((problem) => problem.split(':')[0]) : [];
      expect(problems).toEqual(
        expect.arrayContaining([
          'vaultBucketName',
          'kubeconfigSecretArn',
          'copyWorkers',
          'logRetentionDays',
          'objectLockRetentionDays',
          'subnetIds',
        ]),
      );
    }
  });

  it.each([
    [
      'Object Lock on a bucket the stack does not create',
      {
        vaultBucketName: 'existing-vault',
        objectLockMode: 'COMPLIANCE',
        objectLockRetentionDays: '30',
      },
      'objectLockMode',
    ],
    [
      'a schedule input with the schedule off',
      { backupSchedule: 'off', backupInput: '{"concurrency":8}' },
      'backupInput',
    ],
    [
      'alarm emails for a topic the stack does not create',
      {
        alarmTopicArn: 'arn:aws:sns:eu-west-1:123456789012:platform-alarms',
        alarmEmails: 'oncall@example.com',
      },
      'alarmEmails',
    ],
    ['an alarm email that is no address', { alarmEmails: 'oncall' }, 'alarmEmails.0'],
    [
      'a backup schedule that is neither an expression nor off',
      { backupSchedule: 'daily' },
      'backupSchedule',
    ],
    [
      'subnets without their zones',
      { vpcId: 'vpc-0a1b', subnetIds: 'subnet-01' },
      'availabilityZones',
    ],
    ['an unknown setting', { vaultBuckett: 'typo' }, '(settings)'],
    [
      'a patch identity without the read identity',
      {
        patchKubeconfigSecretArn:
          'arn:aws:secretsmanager:eu-west-1:123456789012:secret:regvault/patch-Qq1Ww2',
      },
      'patchKubeconfigSecretArn',
    ],
    [
      'a patch kubeconfig on EKS, where the roles are the identities',
      {
        kubeconfigSecretArn:
          'arn:aws:secretsmanager:eu-west-1:123456789012:secret:regvault/read-Aa1Bb2',
        patchKubeconfigSecretArn:
          'arn:aws:secretsmanager:eu-west-1:123456789012:secret:regvault/patch-Qq1Ww2',
        eksClusterName: 'registry-prod',
      },
      'patchKubeconfigSecretArn',
    ],
    [
      'an EKS cluster without its kubeconfig',
      { eksClusterName: 'registry-prod' },
      'kubeconfigSecretArn',
    ],
    [
      'key users for a key the stack does not create',
      {
        kmsKeyArn: 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab',
        vaultKeyUserArns: 'arn:aws:iam::123456789012:role/ops',
      },
      'vaultKeyUserArns',
    ],
    [
      'a poll so frequent that a restore waiting its hours would pass 25,000 history events',
      { copyPollSeconds: '10', copyTimeoutHours: '12' },
      'copyPollSeconds',
    ],
    ['a restore approval other than true or false', { restoreApproval: 'yes' }, 'restoreApproval'],
    [
      'a registry read role with no registry bucket for it to read',
      { registryReadRoleArn: 'arn:aws:iam::111122223333:role/registry-read' },
      'registryReadRoleArn',
    ],
    [
      'an external id without the role',
      { registryReadExternalId: 'ext-1' },
      'registryReadExternalId',
    ],
    [
      'a registry read role that is not a role ARN',
      {
        registryBucketNames: 'acme-registry',
        registryReadRoleArn: 'arn:aws:iam::111122223333:user/bob',
      },
      'registryReadRoleArn',
    ],
    [
      'an approval wait that, with two copies, would outlast the 48-hour execution',
      {
        restoreApproval: 'true',
        restoreApprovalHours: '24',
        copyTimeoutHours: '12',
        copyPollSeconds: '30',
      },
      'restoreApprovalHours',
    ],
  ])('refuses %s', (_case, values: Record<string, string>, key) => {
    // Prepare / Act
    const parse = () => parseSettings(fromCli(values));

    // Assess
    expect(parse).toThrow(SettingsError);
    try {
      parse();
    } catch (err) {
      expect(
        err instanceof SettingsError ? err.problems.map((problem) => problem.split(':')[0]) : [],
      ).toContain(key);
    }
  });

  it.each([
    ['true', true],
    ['false', false],
  ])('takes restoreApproval=%s from the command line as a boolean', (text, value) => {
    // Act
    const settings = parseSettings(fromCli({ restoreApproval: text }));

    // Assess
    expect(settings.restoreApproval).toBe(value);
    expect(settings.restoreApprovalHours).toBe(8);
  });
});
