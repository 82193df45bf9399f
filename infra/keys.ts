/**
 * The stack's KMS keys. CDK's default key policy gives the account root
 * `kms:*`, so any principal an IAM policy in the account allows may encrypt
 * and decrypt. These keys give the account administration only (below); each
 * use is granted in the key policy itself, to the roles and service that need
 * it, so no IAM policy elsewhere in the account can open the key.
 */
import type { Stack } from 'aws-cdk-lib';
import { AccountRootPrincipal, PolicyDocument, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { Key } from 'aws-cdk-lib/aws-kms';

/**
 * What the account keeps: managing the key, never using it. Without these
 * the key could not be updated, rotated or deleted by CloudFormation, and KMS
 * refuses a policy that locks its creator out. `kms:Put*` (PutKeyPolicy) is
 * what lets a key administrator grant itself use: it is kept for deploys, and
 * every such change is a CloudTrail event.
 */
export const KEY_ADMIN_ACTIONS = [
  'kms:CancelKeyDeletion',
  'kms:Create*',
  'kms:Delete*',
  'kms:Describe*',
  'kms:Disable*',
  'kms:Enable*',
  'kms:Get*',
  'kms:List*',
  'kms:Put*',
  'kms:Revoke*',
  'kms:ScheduleKeyDeletion',
  'kms:TagResource',
  'kms:UntagResource',
  'kms:Update*',
] as const;

/** A rotating key whose policy lets the account administer it and nobody use it until granted. */
export function houseKey(stack: Stack, id: string, description: string): Key {
  return new Key(stack, id, {
    description,
    enableKeyRotation: true,
    policy: new PolicyDocument({
      statements: [
        new PolicyStatement({
          sid: 'AccountAdministersTheKeyOnly',
          principals: [new AccountRootPrincipal()],
          actions: [...KEY_ADMIN_ACTIONS],
          resources: ['*'],
        }),
      ],
    }),
  });
}
