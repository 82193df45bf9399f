/**
 * Bad input, as a new user types it, against a real S3 server process, a real
 * registry and the fake cluster: every case exits 2, says what it is about
 * (the flag, setting, file line, bucket, Secret or snapshot) and what to do,
 * and leaves every bucket object and every cluster object as it was. Nothing
 * secret (the registry password in a config file, a kubeconfig token, S3
 * keys) is ever quoted back. Failures that are not the user's input (nothing
 * answers, keys that may not) exit 1 and say where and what to check.
 */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListBucketsCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { populateRegistry } from '../../sandbox/images/index.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { NOTHING_ANSWERS } from '../../sandbox/process.ts';
import { htpasswdLine, type RegistryHandle, startRegistry } from '../../sandbox/registry/index.ts';
import { type FaultRule, type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { type CliRun, jsonLines, runRegvault } from '../support/cli.ts';
import { clientFor, createBucket, listAll, putObjects, readObject } from '../support/s3.ts';

/** The registry password: in config files and the login registry, never in any output. */
const PASSWORD = 'pw-SECRET-4d1e9b';
const WRONG_PASSWORD = 'pw-SECRET-wrong-08aa3f';
const KUBE_TOKEN = 'kube-SECRET-77c2a1';
/** A snapshot id no vault here holds. */
const MISSING_ID = '20200102T000000.000Z-000000';
const BUCKET = {
  registry: 'bad-registry',
  vault: 'bad-vault',
  emptyVault: 'bad-vault-empty',
  target: 'bad-target',
} as const;

/** What the cases refer to, known once the sandbox runs. */
interface Fixture {
  readonly s3: S3ServerHandle;
  readonly cluster: FakeCluster;
  /** A registry on the registry's bucket that wants user `regvault` with PASSWORD. */
  readonly loginRegistry: RegistryHandle;
  /** An http endpoint nobody listens on. */
  readonly deadEndpoint: string;
  /** A failed snapshot in the vault (the complete one is `latest`). */
  readonly failedId: string;
  /** Files written for the cases, by name. */
  readonly file: (name: keyof typeof FILES) => string;
}

/** Files the cases read: config files around the password, a kubeconfig around a token. */
const FILES = {
  'syntax.yaml': `vaultBucket: ${BUCKET.vault}\nregistryPassword: ${PASSWORD}\nregistryUsername: [ci\n`,
  'runs-on.yaml': `vaultBucket: ${BUCKET.vault}\nregistryPassword: ${PASSWORD}\n  registryUsername: ci\n`,
  'quote.yaml': `registryPassword: "${PASSWORD}\nvaultBucket: ${BUCKET.vault}\n`,
  'not-text.yaml': `vaultBucket: ${BUCKET.vault}\nregistryPassword: [${PASSWORD}]\n`,
  'misspelt.yaml': `vaultBucket: ${BUCKET.vault}\nregistryPasword: ${PASSWORD}\n`,
  'bad-values.yaml': `vaultBucket: Bad_Bucket\nregistryPassword: ${PASSWORD}\nconcurrency: lots\n`,
  'list.yaml': `- vaultBucket: ${BUCKET.vault}\n`,
  'twice.yaml': `vaultBucket: ${BUCKET.vault}\nvaultBucket: ${BUCKET.target}\n`,
  'empty-password.txt': '\n',
  'wrong-password.txt': `${WRONG_PASSWORD}\n`,
  'broken-kubeconfig.yaml': `apiVersion: v1\nusers:\n- name: u\n  user:\n    token: ${KUBE_TOKEN}\n   bad: [\n`,
} as const;

type Given<T> = T | ((f: Fixture) => T);
const given = <T>(value: Given<T>, f: Fixture): T =>
  typeof value === 'function' ? (value as (f: Fixture) => T)(f) : value;

interface Case {
  readonly case: string;
  /** The command line, without --json (added before the first flag). */
  readonly args: Given<readonly string[]>;
  /** Changes to the environment; undefined removes a variable. */
  readonly env?: Given<NodeJS.ProcessEnv>;
  /** S3 errors the server answers with while the case runs. */
  readonly faults?: Given<readonly FaultRule[]>;
  /** What stderr and the result object both say: the thing the case is about, and the fix. */
  readonly says: Given<readonly string[]>;
  /** Words the result says exactly once (a fix explained at two layers was printed twice). */
  readonly once?: string;
}

const loginUrl = (f: Fixture) => f.loginRegistry.url;
/** `verify` of the login registry as user regvault, with `more` flags. */
const verifyAsRegvault = (f: Fixture, ...more: string[]) => [
  'verify',
  '--registry-url',
  loginUrl(f),
  '--registry-username',
  'regvault',
  ...more,
];
/** Every request of `operation` to `bucket` fails with `code`. */
const refused = (bucket: string, code: string, operations: readonly string[]): FaultRule[] =>
  operations.map((operation) => ({ operation, status: 403, code, count: 1_000, bucket }));
const VAULT_CALLS = ['ListObjectsV2', 'GetObject', 'HeadObject', 'PutObject'] as const;

const BAD_INPUT: readonly Case[] = [
  // Usage: what commander refuses
  { case: 'an unknown command', args: ['nosuch'], says: ["unknown command 'nosuch'", '--help'] },
  {
    case: 'an unknown flag',
    args: ['backup', '--no-such-flag'],
    says: ["unknown option '--no-such-flag'", '--help'],
  },
  {
    case: 'a flag without its value',
    args: ['backup', '--ttl-days'],
    says: ["'--ttl-days <days>' argument missing", '--help'],
  },
  {
    case: 'a missing required flag',
    args: ['restore'],
    says: ["required option '--target-bucket <bucket>' not specified", '--help'],
  },
  {
    case: 'a missing argument',
    args: ['snapshots', 'show'],
    says: ["missing required argument 'id'", '--help'],
  },
  // Settings, from flags and the environment
  {
    case: 'a concurrency that is not a number',
    args: ['backup', '--source-bucket', BUCKET.registry, '--concurrency', 'many'],
    says: ['--concurrency: ', 'expected number'],
  },
  {
    case: 'a concurrency of 0',
    args: ['snapshots', 'list', '--concurrency', '0'],
    says: ['--concurrency: ', 'expected number to be >=1'],
  },
  {
    case: 'a vault bucket from the environment S3 refuses',
    args: ['snapshots', 'list'],
    env: { REGVAULT_VAULT_BUCKET: 'Bad_Bucket' },
    says: ['--vault-bucket (from REGVAULT_VAULT_BUCKET): a bucket name'],
  },
  {
    case: 'a vault endpoint that is no URL',
    args: ['snapshots', 'list', '--vault-endpoint', 'minio:9000'],
    says: ['--vault-endpoint: an http(s) URL such as'],
  },
  {
    case: 'no vault region anywhere',
    args: ['snapshots', 'list'],
    env: { REGVAULT_VAULT_REGION: undefined },
    says: ['--vault-region (or REGVAULT_VAULT_REGION / vaultRegion in the config file)'],
  },
  {
    case: 'a registry URL that is no URL',
    args: ['verify', '--registry-url', 'registry.example.com'],
    says: ['--registry-url: '],
  },
  {
    case: 'a Content-MD5 switch from the environment that is neither true nor false',
    args: ['snapshots', 'list'],
    env: { REGVAULT_VAULT_CONTENT_MD5: 'yes' },
    says: ['--vault-content-md5 (from REGVAULT_VAULT_CONTENT_MD5)'],
  },
  {
    case: 'a path style switch from the environment that is neither true nor false',
    args: ['snapshots', 'list'],
    env: { REGVAULT_VAULT_PATH_STYLE: 'sometimes' },
    says: ['--vault-path-style (from REGVAULT_VAULT_PATH_STYLE): true or false'],
  },
  {
    case: 'no vault keys anywhere',
    args: ['snapshots', 'list'],
    env: { AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined },
    says: [
      'regvault has no keys to',
      "the vault's keys (the AWS SDK's chain",
      'set AWS_ACCESS_KEY_ID',
    ],
  },
  // Config files: the line and the key, never the text
  {
    case: 'a config file that does not exist',
    args: (f) => ['snapshots', 'list', '--config', join(f.file('syntax.yaml'), 'missing')],
    says: ['--config: ', 'ENOTDIR'],
  },
  {
    case: 'a config file with a YAML syntax error after the password',
    args: (f) => ['snapshots', 'list', '--config', f.file('syntax.yaml')],
    says: ['not valid YAML', 'line 4', 'in registryUsername, from line 3', 'bracket is not closed'],
  },
  {
    case: 'a config file whose password line runs on into the next',
    args: (f) => ['snapshots', 'list', '--config', f.file('runs-on.yaml')],
    says: ['not valid YAML', 'line 2', 'in registryPassword', 'indented too far'],
  },
  {
    case: 'a config file whose password has no closing quote',
    args: (f) => ['snapshots', 'list', '--config', f.file('quote.yaml')],
    says: ['not valid YAML', 'in registryPassword, from line 1', 'closing quote'],
  },
  {
    case: 'a config file whose password is not text',
    args: (f) => ['snapshots', 'list', '--config', f.file('not-text.yaml')],
    says: (f) => [`registryPassword (in ${f.file('not-text.yaml')}, line 2)`, 'expected string'],
  },
  {
    case: 'a config file with a misspelt setting',
    args: (f) => ['snapshots', 'list', '--config', f.file('misspelt.yaml')],
    says: ['registryPasword in the config file (line 2) (unknown setting)', 'fix its spelling'],
  },
  {
    case: 'a config file with two bad values',
    args: (f) => ['snapshots', 'list', '--config', f.file('bad-values.yaml')],
    env: { REGVAULT_VAULT_BUCKET: undefined },
    says: (f) => [
      `--vault-bucket (from vaultBucket in ${f.file('bad-values.yaml')}, line 1): a bucket name`,
      `--concurrency (from concurrency in ${f.file('bad-values.yaml')}, line 3)`,
    ],
  },
  {
    case: 'a config file that is a list',
    args: (f) => ['snapshots', 'list', '--config', f.file('list.yaml')],
    says: ['must hold a mapping of settings'],
  },
  {
    case: 'a config file that sets a setting twice',
    args: (f) => ['snapshots', 'list', '--config', f.file('twice.yaml')],
    says: ['line 2', 'given twice'],
  },
  // The commands' own flags
  {
    case: 'a shard size below the minimum',
    args: ['plan', '--source-bucket', BUCKET.registry, '--shard-objects', '5'],
    says: ['--shard-objects: 5 is not accepted'],
  },
  {
    case: 'a ttl that is not a number',
    args: ['backup', '--source-bucket', BUCKET.registry, '--ttl-days', 'soon'],
    says: ['--ttl-days: soon is not accepted'],
  },
  {
    case: 'keeping no snapshots',
    args: ['snapshots', 'prune', '--keep-last', '0'],
    says: ['--keep-last: 0 is not accepted'],
  },
  {
    case: 'a negative grace period',
    args: ['snapshots', 'prune', '--keep-last', '2', '--grace-minutes', '-5'],
    says: ['--grace-minutes: -5 is not accepted'],
  },
  {
    case: 'an empty grace period (it used to be read as 0)',
    args: ['snapshots', 'prune', '--keep-last', '2', '--grace-minutes', ''],
    says: ['--grace-minutes: an empty value is not accepted', 'expected number'],
  },
  {
    case: 'a shard size in hexadecimal (it used to be read as 4096)',
    args: ['plan', '--source-bucket', BUCKET.registry, '--shard-objects', '0x1000'],
    says: ['--shard-objects: 0x1000 is not accepted'],
  },
  {
    case: 'a sample that is not a number',
    args: ['fsck', '--deep', '--sample', 'abc'],
    says: ['--sample: abc is not accepted'],
  },
  {
    case: 'a pull sample that is neither a count nor all',
    args: (f) => ['verify', '--registry-url', loginUrl(f), '--pull-sample', 'lots'],
    says: ['--pull-sample: expected a count of images (0 or more) or "all"'],
  },
  {
    case: 'a rollout timeout below the workflow minimum',
    args: ['restore', '--no-switch', '--target-bucket', BUCKET.target, '--rollout-timeout', '5'],
    says: ['--rollout-timeout: '],
  },
  {
    case: 'a snapshot id in a form ids never have',
    args: [
      'restore',
      '--no-switch',
      '--target-bucket',
      BUCKET.target,
      '--snapshot',
      '20261123T0200Z',
    ],
    says: ['--snapshot: a snapshot id such as'],
  },
  {
    case: 'a snapshot to show that is no id',
    args: ['snapshots', 'show', 'yesterday'],
    says: ['<id>: expected an id such as', 'regvault snapshots list'],
  },
  {
    case: 'deleting "latest"',
    args: ['snapshots', 'delete', 'latest'],
    says: ['<id>: expected an id such as'],
  },
  {
    case: 'a copy source without s3://',
    args: ['copy', '--from', BUCKET.registry, '--to', `s3://${BUCKET.target}`],
    says: ['--from: expected s3://bucket/prefix'],
  },
  {
    case: 'a copy target S3 refuses',
    args: ['copy', '--from', `s3://${BUCKET.registry}`, '--to', 's3://Bad_Bucket'],
    says: ['--to: a bucket name'],
  },
  {
    case: 'a copy source endpoint that is no URL',
    args: [
      'copy',
      '--from',
      `s3://${BUCKET.registry}`,
      '--to',
      `s3://${BUCKET.target}`,
      '--from-endpoint',
      'not-a-url',
    ],
    says: ['--from-endpoint: an http(s) URL such as'],
  },
  {
    case: 'a bucket to plan S3 refuses',
    args: ['plan', '--source-bucket', 'Bad_Bucket'],
    says: ['--source-bucket: a bucket name'],
  },
  {
    case: 'an empty region to plan in',
    args: ['plan', '--source-bucket', BUCKET.registry, '--source-region', ''],
    says: ['--source-region: a region'],
  },
  {
    case: 'an fsck endpoint that is not http(s)',
    args: ['fsck', '--bucket', BUCKET.registry, '--bucket-endpoint', 'ftp://s3.example.com'],
    says: ['--bucket-endpoint: an http(s) URL such as'],
  },
  {
    case: 'a restore target S3 refuses',
    args: ['restore', '--no-switch', '--target-bucket', 'Bad_Bucket'],
    says: ['--target-bucket: a bucket name'],
  },
  {
    case: 'a switching restore without the target Secret',
    args: (f) => ['restore', '--target-bucket', BUCKET.target, '--registry-url', loginUrl(f)],
    says: ['--target-secret: required unless --no-switch'],
  },
  {
    case: 'a switching restore without the registry URL',
    args: ['restore', '--target-bucket', BUCKET.target, '--target-secret', 'registry-s3-secret'],
    says: [
      '--registry-url (or REGVAULT_REGISTRY_URL / registryUrl in the config file): switching the registry needs its URL',
    ],
  },
  {
    case: 'verify without the registry URL',
    args: ['verify'],
    says: ['--registry-url (or REGVAULT_REGISTRY_URL / registryUrl in the config file)'],
  },
  // The cluster
  {
    case: 'a backup of the registry without a kubeconfig',
    args: ['backup'],
    env: { KUBECONFIG: undefined },
    says: ['no kubeconfig was found', '--kubeconfig'],
  },
  {
    case: 'KUBECONFIG naming a file that does not exist',
    args: ['backup'],
    env: (f) => ({ KUBECONFIG: join(f.file('syntax.yaml'), '..', 'no-kubeconfig') }),
    says: ['does not exist', '--kubeconfig'],
  },
  {
    case: 'a kubeconfig that is not valid YAML',
    args: (f) => ['backup', '--kubeconfig', f.file('broken-kubeconfig.yaml')],
    says: ['--kubeconfig: give a valid kubeconfig', 'not valid YAML (near line 6'],
  },
  {
    case: 'a context the kubeconfig does not have',
    args: ['backup', '--context', 'nosuch'],
    says: ['the kubeconfig has no context "nosuch"', '--context: name one of its contexts'],
  },
  {
    case: 'a profile regvault does not know',
    args: ['backup', '--profile', 'harbour'],
    says: ['--profile', 'harbour', '"acp"'],
  },
  {
    case: 'a ModuleInfo named for a profile that has none',
    args: ['backup', '--profile', 'distribution', '--module-info', 'image-registry'],
    says: ['the distribution profile has no ModuleInfo', '--module-info: ', '--profile acp'],
  },
  {
    case: 'a ModuleInfo the cluster does not have',
    args: ['backup', '--module-info', 'nosuch'],
    says: ['no ModuleInfo "nosuch"', '--module-info: ', 'image-registry'],
  },
  {
    case: 'a target Secret the cluster does not have',
    args: ['restore', '--no-switch', '--target-bucket', BUCKET.target, '--target-secret', 'nosuch'],
    says: [
      'Secret cpaas-system/nosuch does not exist',
      'create it in namespace cpaas-system',
      'kubectl -n cpaas-system get secrets',
    ],
  },
  // Buckets that are not there
  {
    case: 'a vault bucket that does not exist',
    args: ['snapshots', 'list', '--vault-bucket', 'bad-no-such-vault'],
    says: (f) => [
      `the vault bucket s3://bad-no-such-vault does not exist at ${f.s3.endpoint}`,
      'create the bucket, or fix --vault-bucket',
    ],
  },
  {
    case: 'a bucket to plan that does not exist',
    args: ['plan', '--source-bucket', 'bad-no-such-source'],
    says: ['s3://bad-no-such-source does not exist at', 'create the bucket'],
  },
  {
    case: 'a copy source that does not exist',
    args: ['copy', '--from', 's3://bad-no-such-source', '--to', `s3://${BUCKET.target}`],
    says: ['s3://bad-no-such-source does not exist at', 'create the bucket'],
  },
  {
    case: 'a copy target that does not exist',
    args: ['copy', '--from', `s3://${BUCKET.registry}`, '--to', 's3://bad-no-such-target'],
    says: ['s3://bad-no-such-target does not exist at', 'create the bucket'],
    once: 'create the bucket',
  },
  {
    case: 'a bucket to fsck that does not exist',
    args: ['fsck', '--bucket', 'bad-no-such-source'],
    says: ['s3://bad-no-such-source does not exist at', 'create the bucket'],
  },
  {
    case: 'a bucket to back up that does not exist',
    args: ['backup', '--source-bucket', 'bad-no-such-source'],
    says: ['s3://bad-no-such-source does not exist at', 'create the bucket'],
  },
  {
    case: 'a restore target that does not exist',
    args: ['restore', '--no-switch', '--target-bucket', 'bad-no-such-target'],
    says: ['s3://bad-no-such-target does not exist at', 'create the bucket'],
    once: 'create the bucket',
  },
  // Snapshots that are not there, or not complete
  {
    case: 'restoring a snapshot the vault does not hold',
    args: ['restore', '--no-switch', '--target-bucket', BUCKET.target, '--snapshot', MISSING_ID],
    says: [
      `snapshot ${MISSING_ID} is not in the vault s3://${BUCKET.vault}/`,
      '--snapshot: name one the vault holds',
    ],
  },
  {
    case: 'verifying against a snapshot the vault does not hold',
    args: (f) => ['verify', '--registry-url', loginUrl(f), '--snapshot', MISSING_ID],
    says: [`snapshot ${MISSING_ID} is not in the vault`, '--snapshot: name one the vault holds'],
  },
  {
    case: 'checking a snapshot the vault does not hold',
    args: ['fsck', '--snapshot', MISSING_ID],
    says: [`snapshot ${MISSING_ID} is not in the vault`, '--snapshot: name one the vault holds'],
  },
  {
    case: 'showing a snapshot the vault does not hold',
    args: ['snapshots', 'show', MISSING_ID],
    says: [`snapshot ${MISSING_ID} is not in the vault`, '<id>: name one the vault holds'],
  },
  {
    case: 'deleting a snapshot the vault does not hold',
    args: ['snapshots', 'delete', MISSING_ID],
    says: [`snapshot ${MISSING_ID} is not in the vault`, '<id>: name one the vault holds'],
  },
  {
    case: 'restoring a failed snapshot',
    args: (f) => [
      'restore',
      '--no-switch',
      '--target-bucket',
      BUCKET.target,
      '--snapshot',
      f.failedId,
    ],
    says: (f) => [`snapshot ${f.failedId} is failed, not complete`, '--snapshot: name a complete'],
  },
  {
    case: 'restoring the latest snapshot of an empty vault',
    args: ['restore', '--no-switch', '--target-bucket', BUCKET.target],
    env: { REGVAULT_VAULT_BUCKET: BUCKET.emptyVault },
    says: ['holds no complete snapshot', 'run `regvault backup` first'],
  },
  // Keys S3 does not accept, and whose they are
  {
    case: 'vault keys S3 does not know',
    args: ['snapshots', 'list'],
    faults: refused(BUCKET.vault, 'InvalidAccessKeyId', VAULT_CALLS),
    says: [
      "the vault's keys (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
      'InvalidAccessKeyId',
      'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY',
    ],
  },
  {
    case: 'a vault secret key that does not match its key ID',
    args: ['fsck'],
    faults: refused(BUCKET.vault, 'SignatureDoesNotMatch', VAULT_CALLS),
    says: ["the vault's keys", 'SignatureDoesNotMatch', 'set AWS_ACCESS_KEY_ID'],
  },
  {
    case: 'registry Secret keys S3 does not know, on a backup',
    args: ['backup'],
    faults: refused(BUCKET.registry, 'InvalidAccessKeyId', ['ListObjectsV2', 'HeadObject']),
    says: [
      'the keys in Secret cpaas-system/registry-s3-secret',
      'InvalidAccessKeyId',
      'put keys this S3 accepts into Secret cpaas-system/registry-s3-secret',
    ],
  },
  {
    case: 'target Secret keys S3 does not know, on a restore',
    args: [
      'restore',
      '--no-switch',
      '--target-bucket',
      BUCKET.target,
      '--target-secret',
      'registry-s3-secret',
    ],
    faults: refused(BUCKET.target, 'InvalidAccessKeyId', ['PutObject', 'ListObjectsV2']),
    says: ['the keys in Secret cpaas-system/registry-s3-secret', 'InvalidAccessKeyId'],
  },
  // The registry's login
  {
    case: 'verifying a registry that wants a login, without one',
    args: (f) => ['verify', '--registry-url', loginUrl(f)],
    says: ['HTTP 401', 'no credentials', '--registry-username', 'REGVAULT_REGISTRY_PASSWORD'],
  },
  {
    case: 'verifying with a wrong registry password',
    args: (f) => ['verify', '--registry-url', loginUrl(f), '--registry-username', 'regvault'],
    env: { REGVAULT_REGISTRY_PASSWORD: WRONG_PASSWORD },
    says: ['refused user "regvault"', 'HTTP 401', 'REGVAULT_REGISTRY_PASSWORD'],
  },
  {
    case: 'a registry password file that does not exist',
    args: (f) =>
      verifyAsRegvault(
        f,
        '--registry-password-file',
        join(f.file('empty-password.txt'), 'missing'),
      ),
    says: ['--registry-password-file: ', 'cannot be read (ENOTDIR)'],
  },
  {
    case: 'an empty registry password file from the environment',
    args: (f) => verifyAsRegvault(f),
    env: (f) => ({ REGVAULT_REGISTRY_PASSWORD_FILE: f.file('empty-password.txt') }),
    says: [
      '--registry-password-file (from REGVAULT_REGISTRY_PASSWORD_FILE): ',
      'holds no password',
    ],
  },
  {
    case: 'a registry password given both in a file and in the environment',
    args: (f) => [
      'verify',
      '--registry-url',
      loginUrl(f),
      '--registry-password-file',
      f.file('wrong-password.txt'),
    ],
    env: { REGVAULT_REGISTRY_PASSWORD: PASSWORD },
    says: ['given twice', '--registry-password-file: ', 'REGVAULT_REGISTRY_PASSWORD, not both'],
  },
  {
    case: 'verifying with a wrong registry password from a file',
    args: (f) => verifyAsRegvault(f, '--registry-password-file', f.file('wrong-password.txt')),
    says: ['refused user "regvault"', 'HTTP 401'],
  },
  {
    case: 'a switching restore with a wrong registry password',
    args: (f) => [
      'restore',
      '--target-bucket',
      BUCKET.target,
      '--target-secret',
      'registry-s3-secret',
      '--registry-url',
      loginUrl(f),
      '--registry-username',
      'regvault',
    ],
    env: { REGVAULT_REGISTRY_PASSWORD: WRONG_PASSWORD },
    says: ['refused user "regvault"', '--registry-username: '],
  },
];

const NOT_INPUT: readonly Case[] = [
  {
    case: 'a vault endpoint where nothing answers',
    args: (f) => ['snapshots', 'list', '--vault-endpoint', f.deadEndpoint],
    says: (f) => [
      `cannot reach the vault at ${f.deadEndpoint}`,
      'connection refused',
      'check --vault-endpoint',
    ],
  },
  {
    case: 'vault keys that may not list the vault',
    args: ['snapshots', 'list'],
    faults: refused(BUCKET.vault, 'AccessDenied', ['ListObjectsV2']),
    says: ["the vault's keys", 'may not ListObjectsV2', 'grant s3:ListBucket'],
  },
  {
    case: 'a registry where nothing answers',
    args: (f) => ['verify', '--registry-url', f.deadEndpoint],
    says: (f) => [
      `could not reach the registry at ${f.deadEndpoint}`,
      'ECONNREFUSED',
      '--registry-url',
    ],
  },
];

let s3: S3ServerHandle;
let client: S3Client;
let cluster: FakeCluster;
let loginRegistry: RegistryHandle;
let fixture: Fixture;
let baseEnv: NodeJS.ProcessEnv;

/** `--json` before the first flag (a flag may take the next word as its value), else last. */
function withJson(args: readonly string[]): string[] {
  const at = args.findIndex((arg) => arg.startsWith('-'));
  return at === -1 ? [...args, '--json'] : [...args.slice(0, at), '--json', ...args.slice(at)];
}

/**
 * Every object of every bucket, and every cluster object without its status
 * (the sandbox's controller writes pod and deployment status as the registry's
 * health changes, say under an injected S3 fault; regvault writes none).
 */
async function world(): Promise<{ buckets: Record<string, unknown>; cluster: string[] }> {
  const names = ((await client.send(new ListBucketsCommand({}))).Buckets ?? [])
    .map((b) => b.Name ?? '')
    .sort();
  const buckets: Record<string, unknown> = {};
  for (const name of names) buckets[name] = Object.fromEntries(await listAll(client, name));
  const { server } = cluster;
  const objects = server.resources.flatMap((resource) =>
    server.store.list(resource).map(({ status: _status, metadata, ...rest }) => {
      const { resourceVersion: _version, ...named } = metadata;
      return `${resource.resource} ${JSON.stringify({ metadata: named, ...rest })}`;
    }),
  );
  return { buckets, cluster: objects };
}

/**
 * Runs a case: how it ended, what its result object says (error, issues,
 * hint), the world before and after, and the cluster writes it made.
 */
async function runCase(c: Case): Promise<{
  run: CliRun;
  said: string;
  before: unknown;
  after: unknown;
  writes: string[];
}> {
  const before = await world();
  cluster.server.clearRequests();
  for (const rule of given(c.faults ?? [], fixture)) await s3.injectFaults(rule);
  const run = await runRegvault(withJson(given(c.args, fixture)), {
    ...baseEnv,
    ...given(c.env ?? {}, fixture),
  }).finally(() => s3.clearFaults());
  const after = await world();
  const writes = cluster.server.requests().filter((r) => r.method !== 'GET');
  const result = jsonLines(run.stdout).at(-1) ?? {};
  const issues = (result['issues'] as unknown[] | undefined) ?? [];
  const said = [result['error'], ...issues, result['hint']].join('\n');
  return { run, said, before, after, writes: writes.map((w) => `${w.method} ${w.path}`) };
}

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-bad-input' });
  client = clientFor(s3);
  for (const bucket of Object.values(BUCKET)) await createBucket(client, bucket);
  cluster = await startFakeCluster({ tls: true });
  const storage = {
    bucket: BUCKET.registry,
    endpoint: s3.endpoint,
    region: s3.region,
    accessKey: s3.credentials.accessKeyId,
    secretKey: s3.credentials.secretAccessKey,
  };
  await cluster.seedAcpRegistry(storage);
  await cluster.waitForReadyPod(30_000);
  await populateRegistry(new URL(cluster.registryUrl).host, {
    repositories: 1,
    tagsPerRepository: 1,
  });
  loginRegistry = await startRegistry({
    storage: { kind: 's3', ...storage },
    auth: { kind: 'htpasswd', htpasswd: htpasswdLine('regvault', PASSWORD) },
    name: 'registry-bad-input',
  });
  const dir = await mkdtemp(join(tmpdir(), 'regvault-bad-input-'));
  const home = join(dir, 'home');
  await mkdir(home);
  for (const [name, text] of Object.entries(FILES)) await writeFile(join(dir, name), text);
  baseEnv = {
    PATH: process.env['PATH'],
    // No ~/.kube or ~/.aws: only what a case gives is found.
    HOME: home,
    AWS_EC2_METADATA_DISABLED: 'true',
    KUBECONFIG: cluster.kubeconfigPath,
    REGVAULT_VAULT_BUCKET: BUCKET.vault,
    REGVAULT_VAULT_REGION: s3.region,
    REGVAULT_VAULT_ENDPOINT: s3.endpoint,
    AWS_ACCESS_KEY_ID: s3.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.credentials.secretAccessKey,
  };
  // The vault holds a complete snapshot of the registry, and a failed one older than it.
  const backup = await runRegvault(['backup', '--json'], baseEnv);
  if (backup.code !== 0) throw new Error(`the fixture's backup failed: ${backup.stderr}`);
  const snapshotId = String(
    (jsonLines(backup.stdout).at(-1)?.['snapshot'] as { snapshotId?: string } | undefined)
      ?.snapshotId,
  );
  const manifest = JSON.parse(
    (await readObject(client, BUCKET.vault, `snapshots/${snapshotId}/manifest.json`)).toString(),
  ) as Record<string, unknown>;
  const failedId = '20200101T000000.000Z-0f0f0f';
  await putObjects(client, BUCKET.vault, [
    {
      key: `snapshots/${failedId}/manifest.json`,
      body: JSON.stringify({
        ...manifest,
        id: failedId,
        runId: `backup-${failedId}`,
        status: 'failed',
      }),
    },
  ]);
  fixture = {
    s3,
    cluster,
    loginRegistry,
    deadEndpoint: NOTHING_ANSWERS,
    failedId,
    file: (name) => join(dir, name),
  };
}, 180_000);

afterAll(async () => {
  client?.destroy();
  await loginRegistry?.stop();
  await cluster?.stop();
  await s3?.stop();
});

/** Nothing secret in anything a run printed. */
function expectNoSecrets(run: CliRun): void {
  for (const secret of [PASSWORD, WRONG_PASSWORD, KUBE_TOKEN, s3.credentials.secretAccessKey]) {
    expect(run.stdout).not.toContain(secret);
    expect(run.stderr).not.toContain(secret);
  }
}

describe('bad input to the CLI', () => {
  it('has at least 30 cases', () => {
    expect(BAD_INPUT.length).toBeGreaterThanOrEqual(30);
  });

  it.each(BAD_INPUT)(
    'exits 2 for $case, saying what and how to fix it, and changes nothing',
    async (c) => {
      // Act
      const { run, said, before, after, writes } = await runCase(c);
      // Assess
      expect({ code: run.code, stderr: run.stderr }).toEqual({
        code: 2,
        stderr: expect.any(String),
      });
      expect(jsonLines(run.stdout).at(-1)).toMatchObject({
        event: 'result',
        ok: false,
        exitCode: 2,
      });
      for (const text of given(c.says, fixture)) {
        expect(run.stderr).toContain(text);
        expect(said).toContain(text);
      }
      if (c.once !== undefined) expect(said.split(c.once).length - 1).toBe(1);
      expect(after).toEqual(before);
      expect(writes).toEqual([]);
      expectNoSecrets(run);
    },
  );
});

describe('failures that are not bad input', () => {
  it.each(NOT_INPUT)('exits 1 for $case, saying where and what to check', async (c) => {
    // Act
    const { run, said, before, after, writes } = await runCase(c);
    // Assess
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 1, stderr: expect.any(String) });
    for (const text of given(c.says, fixture)) {
      expect(run.stderr).toContain(text);
      expect(said).toContain(text);
    }
    expect(after).toEqual(before);
    expect(writes).toEqual([]);
    expectNoSecrets(run);
  });
});
