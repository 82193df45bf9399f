/**
 * The vault: the bucket snapshots live in, with its KMS key, access-log bucket
 * and optional Object Lock, or an existing bucket (and key) imported by name;
 * and the grants on the objects under the vault prefix.
 */
import { Duration, type Stack, Validations } from 'aws-cdk-lib';
import { ArnPrincipal, type IPrincipal, type IRole, PolicyStatement } from 'aws-cdk-lib/aws-iam';
import { type IKey, Key } from 'aws-cdk-lib/aws-kms';
import {
  BlockPublicAccess,
  Bucket,
  BucketEncryption,
  type CfnBucket,
  type IBucket,
  ObjectLockRetention,
} from 'aws-cdk-lib/aws-s3';
import { houseKey } from './keys.ts';
import type { RegvaultSettings } from './settings.ts';

/**
 * The vault bucket and its key. Made in the stack's own scope, not as a
 * construct: a scope of its own would change the bucket's logical id, and
 * CloudFormation would replace the deployed vault.
 */
export class VaultBucket {
  readonly bucket: Bucket | IBucket;
  /** The bucket's key; undefined for an imported bucket given no `kmsKeyArn`. */
  readonly key: IKey | undefined;
  readonly #settings: RegvaultSettings;
  /** The key the stack made, whose policy grants each use; undefined for an imported one. */
  readonly #ownKey: Key | undefined;
  readonly #stack: Stack;

  constructor(stack: Stack, settings: RegvaultSettings) {
    this.#settings = settings;
    this.#stack = stack;
    const importedKey =
      settings.kmsKeyArn === undefined
        ? undefined
        : Key.fromKeyArn(stack, 'VaultKey', settings.kmsKeyArn);
    if (settings.vaultBucketName === undefined) {
      this.#ownKey =
        importedKey === undefined
          ? houseKey(stack, 'VaultKey', 'regvault vault bucket encryption')
          : undefined;
      const key = importedKey ?? this.#ownKey;
      if (key === undefined) throw new Error('unreachable: the vault has a key');
      this.key = key;
      this.bucket = newVaultBucket(stack, settings, key);
      if (this.#ownKey !== undefined && settings.vaultKeyUserArns.length > 0)
        this.#allowKeyUse(
          settings.vaultKeyUserArns.map((arn) => new ArnPrincipal(arn)),
          ['kms:Decrypt', 'kms:GenerateDataKey'],
          'VaultKeyUsers',
        );
    } else {
      // An existing bucket keeps its own encryption; its key is only needed in the grants.
      this.key = importedKey;
      this.#ownKey = undefined;
      this.bucket = Bucket.fromBucketName(stack, 'VaultBucket', settings.vaultBucketName);
    }
  }

  /**
   * Lets these principals use the stack's own key, through S3 only (the
   * vault's objects), in its key policy: the account root may not use it, so
   * an identity policy alone grants nothing. An imported key's policy is its
   * owner's, and the identity policies below are what it needs if that policy
   * trusts the account.
   */
  #allowKeyUse(principals: IPrincipal[], actions: readonly string[], sid?: string): void {
    this.#ownKey?.addToResourcePolicy(
      new PolicyStatement({
        ...(sid === undefined ? {} : { sid }),
        principals,
        actions: [...actions],
        resources: ['*'],
        conditions: {
          StringEquals: { 'kms:ViaService': `s3.${this.#stack.region}.amazonaws.com` },
        },
      }),
    );
  }

  /**
   * Lets a role list the vault prefix and run, in each vault folder named,
   * that folder's object actions (`<prefix>/<folder>/*`); no folder, no grant.
   */
  grantObjects(role: IRole, folders: Readonly<Record<string, readonly string[]>>): void {
    const granted = Object.entries(folders).filter(([, actions]) => actions.length > 0);
    if (granted.length === 0) return;
    const root = this.#root();
    role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:ListBucket'],
        resources: [this.bucket.bucketArn],
        ...(root === '' ? {} : { conditions: { StringLike: { 's3:prefix': [`${root}/*`] } } }),
      }),
    );
    // One statement per set of actions, naming every folder that set applies to.
    const byActions = new Map<string, string[]>();
    for (const [folder, actions] of granted) {
      const id = [...actions].sort().join(' ');
      byActions.set(id, [...(byActions.get(id) ?? []), folder]);
    }
    for (const [id, names] of byActions)
      role.addToPrincipalPolicy(
        new PolicyStatement({
          actions: id.split(' '),
          resources: names.map((folder) => this.bucket.arnForObjects(this.#keys(folder))),
        }),
      );
    const all = granted.flatMap(([, actions]) => actions);
    if (this.key !== undefined) {
      // Reading an SSE-KMS object decrypts its data key; writing one makes a new one.
      const keyActions = [
        'kms:Decrypt',
        ...(all.includes('s3:PutObject') ? ['kms:GenerateDataKey'] : []),
      ];
      role.addToPrincipalPolicy(
        new PolicyStatement({ actions: keyActions, resources: [this.key.keyArn] }),
      );
      this.#allowKeyUse([role], keyActions);
    }
    // cdk-nag names each wildcard resource in its own finding; these are the folder grants above.
    for (const [folder] of granted)
      Validations.of(role).acknowledge({
        id: `AwsSolutions-IAM5[Resource::${this.#nagArn()}/${this.#keys(folder)}]`,
        reason:
          'Vault objects are keyed by snapshot, run and digest under a few folders; the grant is the folders this step touches, under the vault prefix, and no other.',
      });
  }

  /** The vault prefix without its slashes ('' for none). */
  #root(): string {
    return this.#settings.vaultPrefix.replace(/^\/+/, '').replace(/\/+$/, '');
  }

  /** The keys of a vault folder: `<prefix>/<folder>/*`. */
  #keys(folder: string): string {
    const root = this.#root();
    return root === '' ? `${folder}/*` : `${root}/${folder}/*`;
  }

  /**
   * Lets a role read the bucket's Object Lock configuration: prune says what
   * its deletes leave behind on a locked vault. Reading only: no role may
   * change a retention or bypass one.
   */
  grantObjectLockRead(role: IRole): void {
    role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:GetBucketObjectLockConfiguration'],
        resources: [this.bucket.bucketArn],
      }),
    );
  }

  /**
   * Lets a role write (`renew`) or also delete (`release`) the run leases,
   * `locks/*` under the vault prefix: the steps that renew a backup's lease
   * and those that end a run. Only there may they delete. `keyGranted`: the
   * role may already make data keys (its vault grant writes).
   */
  grantRunLeases(role: IRole, access: 'renew' | 'release', keyGranted: boolean): void {
    const keys = this.#keys('locks');
    role.addToPrincipalPolicy(
      new PolicyStatement({
        actions: ['s3:PutObject', ...(access === 'release' ? ['s3:DeleteObject'] : [])],
        resources: [this.bucket.arnForObjects(keys)],
      }),
    );
    if (this.key !== undefined && !keyGranted) {
      role.addToPrincipalPolicy(
        new PolicyStatement({ actions: ['kms:GenerateDataKey'], resources: [this.key.keyArn] }),
      );
      this.#allowKeyUse([role], ['kms:GenerateDataKey']);
    }
    Validations.of(role).acknowledge({
      id: `AwsSolutions-IAM5[Resource::${this.#nagArn()}/${keys}]`,
      reason: "Run leases are one object per backed-up source under the vault's locks/ folder.",
    });
  }

  /** The bucket's ARN the way cdk-nag prints it in findings. */
  #nagArn(): string {
    const importedName = this.#settings.vaultBucketName;
    if (importedName !== undefined) return `arn:<AWS::Partition>:s3:::${importedName}`;
    const bucket = this.bucket.node.defaultChild as CfnBucket;
    return `<${bucket.stack.getLogicalId(bucket)}.Arn>`;
  }
}

function newVaultBucket(stack: Stack, settings: RegvaultSettings, key: IKey): Bucket {
  const accessLogs = new Bucket(stack, 'AccessLogsBucket', {
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
  return new Bucket(stack, 'VaultBucket', {
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
