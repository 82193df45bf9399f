/**
 * No secret leaves where it belongs (issue 18, item 6): after backups and a
 * restore, through the CLI as users run it and through the workflows with a
 * real SQS queue, the secret values (the vault's S3 keys, the keys in the
 * registry's storage Secret, the registry password, the kubeconfig's bearer
 * token; as they are and base64-encoded) appear in no CLI output, no log
 * line, no SQS message body, no state's input or output, and no vault object.
 */
import { randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { CreateQueueCommand, SQSClient } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
// Loaded here: the workflow imports the cluster client lazily, which Jest's VM modules only link when a test loaded it first.
import '../../functions/commons/cluster/kube.ts';
import '../../functions/commons/registry/acp.ts';
import { createLocalDeps } from '../../functions/commons/local/deps.ts';
import { runBackupLocally, runRestoreLocally } from '../../functions/commons/local/runner.ts';
import { createS3Client } from '../../functions/commons/s3/client.ts';
import { populateRegistry } from '../../sandbox/images/index.ts';
import { type FakeCluster, startFakeCluster } from '../../sandbox/kube/index.ts';
import { htpasswdLine, type RegistryHandle, startRegistry } from '../../sandbox/registry/index.ts';
import { type S3ServerHandle, startS3Server } from '../../sandbox/s3/index.ts';
import { runRegvault } from '../support/cli.ts';
import { createBucket, listAll, locationOn } from '../support/s3.ts';

const secret = (what: string) => `${what}${randomBytes(12).toString('hex')}`;
const SECRETS = {
  vaultAccessKey: secret('AKVAULT'),
  vaultSecretKey: secret('vault-secret-'),
  registryAccessKey: secret('AKREGISTRY'),
  registrySecretKey: secret('registry-secret-'),
  registryPassword: secret('registry-password-'),
  kubeconfigToken: secret('kube-token-'),
};
/** Each secret as it is and as base64 (a Secret's data, a basic-auth header). */
const NEEDLES = Object.entries(SECRETS).flatMap(([name, value]) => [
  { name, value },
  { name: `${name} (base64)`, value: Buffer.from(value).toString('base64') },
]);

let s3: S3ServerHandle;
let vaultClient: S3Client;
let cluster: FakeCluster;
let loginRegistry: RegistryHandle;
let env: NodeJS.ProcessEnv;

/** Everything said or stored, by where: what the test greps. */
const seen = {
  cli: [] as string[],
  logs: [] as string[],
  sqsBodies: [] as string[],
  states: [] as string[],
  vaultObjects: [] as string[],
};

beforeAll(async () => {
  s3 = await startS3Server({ name: 's3-leak' });
  // fauxqs takes any keys: the vault and the registry each sign with their own.
  const vaultKeys = {
    accessKeyId: SECRETS.vaultAccessKey,
    secretAccessKey: SECRETS.vaultSecretKey,
  };
  vaultClient = createS3Client(
    { endpoint: s3.endpoint, region: s3.region, forcePathStyle: true },
    vaultKeys,
  );
  for (const bucket of ['registry', 'vault', 'restored', 'restored-again'])
    await createBucket(vaultClient, bucket);
  cluster = await startFakeCluster({ token: SECRETS.kubeconfigToken });
  const storage = {
    bucket: 'registry',
    endpoint: s3.endpoint,
    region: s3.region,
    accessKey: SECRETS.registryAccessKey,
    secretKey: SECRETS.registrySecretKey,
  };
  await cluster.seedAcpRegistry(storage);
  await cluster.waitForReadyPod(30_000);
  await populateRegistry(new URL(cluster.registryUrl).host, {
    repositories: 2,
    tagsPerRepository: 2,
  });
  loginRegistry = await startRegistry({
    storage: { kind: 's3', ...storage },
    auth: { kind: 'htpasswd', htpasswd: htpasswdLine('regvault', SECRETS.registryPassword) },
    name: 'registry-leak',
  });
  env = {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    AWS_EC2_METADATA_DISABLED: 'true',
    KUBECONFIG: cluster.kubeconfigPath,
    REGVAULT_VAULT_BUCKET: 'vault',
    REGVAULT_VAULT_REGION: s3.region,
    REGVAULT_VAULT_ENDPOINT: s3.endpoint,
    AWS_ACCESS_KEY_ID: SECRETS.vaultAccessKey,
    AWS_SECRET_ACCESS_KEY: SECRETS.vaultSecretKey,
    REGVAULT_REGISTRY_USERNAME: 'regvault',
    REGVAULT_REGISTRY_PASSWORD: SECRETS.registryPassword,
  };

  // 1. The CLI, as users run it: plain and JSON output, success and failure.
  const cli = async (args: string[]) => {
    const run = await runRegvault(args, env);
    seen.cli.push(`$ regvault ${args.join(' ')} -> ${run.code}\n${run.stdout}\n${run.stderr}`);
    return run;
  };
  const backup = await cli(['backup', '--json']);
  expect(backup.code).toBe(0);
  expect((await cli(['backup'])).code).toBe(0);
  expect((await cli(['snapshots', 'list', '--json'])).code).toBe(0);
  expect((await cli(['fsck', '--deep', '--json'])).code).toBe(0);
  const restore = await cli([
    'restore',
    '--snapshot',
    'latest',
    '--target-bucket',
    'restored',
    '--target-secret',
    'registry-s3-secret',
    '--registry-url',
    cluster.registryUrl,
    '--rollout-timeout',
    '60',
    '--json',
  ]);
  expect(restore.code).toBe(0);
  expect(
    (await cli(['verify', '--registry-url', loginRegistry.url, '--pull-sample', 'all'])).code,
  ).toBe(0);
  // A refused login, whose message names the settings.
  await runRegvault(['verify', '--registry-url', loginRegistry.url], {
    ...env,
    REGVAULT_REGISTRY_PASSWORD: `${SECRETS.registryPassword}-wrong`,
  }).then((run) => seen.cli.push(`${run.stdout}\n${run.stderr}`));

  // 2. The workflows with a real SQS queue, every log line, message body and state kept.
  const sqs = new SQSClient({ endpoint: s3.endpoint, region: s3.region, credentials: vaultKeys });
  sqs.middlewareStack.add(
    (next) => async (args) => {
      const input = args.input as {
        MessageBody?: string;
        Entries?: Array<{ MessageBody?: string }>;
      };
      if (input.MessageBody !== undefined) seen.sqsBodies.push(input.MessageBody);
      for (const entry of input.Entries ?? [])
        if (entry.MessageBody !== undefined) seen.sqsBodies.push(entry.MessageBody);
      return next(args);
    },
    { step: 'initialize', name: 'keepMessageBodies' },
  );
  const queueUrl =
    (await sqs.send(new CreateQueueCommand({ QueueName: 'regvault-copy' }))).QueueUrl ?? '';
  const log = (level: string) => (message: string, fields?: Record<string, unknown>) =>
    seen.logs.push(`${level} ${message} ${JSON.stringify(fields ?? {})}`);
  const deps = createLocalDeps({
    vault: { location: locationOn(s3, 'vault', '', 'vault'), credentials: vaultKeys },
    kube: { path: cluster.kubeconfigPath },
    registryUrl: cluster.registryUrl,
    registryCredentials: {
      kind: 'basic',
      username: 'regvault',
      password: SECRETS.registryPassword,
    },
    logger: { info: log('info'), warn: log('warn') },
  });
  const options = {
    deps,
    transport: { kind: 'sqs' as const, client: sqs, queueUrl },
    onStateDone: (state: string, output: unknown) =>
      seen.states.push(`${state} ${JSON.stringify(output)}`),
  };
  try {
    const backedUp = await runBackupLocally({}, options);
    seen.states.push(JSON.stringify(backedUp));
    expect(backedUp.cause).toBeUndefined();
    expect(backedUp.status).toBe('SUCCEEDED');
    const restored = await runRestoreLocally(
      {
        target: {
          bucket: 'restored-again',
          endpoint: s3.endpoint,
          region: s3.region,
          secretName: 'registry-s3-secret',
        },
        switchRegistry: false,
      },
      options,
    );
    seen.states.push(JSON.stringify(restored));
    expect(restored.cause).toBeUndefined();
    expect(restored.status).toBe('SUCCEEDED');
  } finally {
    deps.close();
    sqs.destroy();
  }

  // 3. Every object in the vault, gzip'd ones unzipped.
  for (const key of (await listAll(vaultClient, 'vault')).keys()) {
    const got = await vaultClient.send(new GetObjectCommand({ Bucket: 'vault', Key: key }));
    const bytes = Buffer.from((await got.Body?.transformToByteArray()) ?? new Uint8Array());
    const text = bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes) : bytes;
    seen.vaultObjects.push(`${key}\n${text.toString('latin1')}`);
  }
}, 600_000);

afterAll(async () => {
  vaultClient?.destroy();
  await loginRegistry?.stop();
  await cluster?.stop();
  await s3?.stop();
});

describe('secrets after backups and restores', () => {
  it('saw what it greps: CLI runs, log lines, SQS messages, states and vault objects', () => {
    // Assess: a grep of nothing would pass whatever leaked.
    expect(seen.cli.length).toBeGreaterThanOrEqual(7);
    expect(seen.logs.length).toBeGreaterThan(5);
    expect(seen.sqsBodies.length).toBeGreaterThan(1);
    expect(seen.states.length).toBeGreaterThan(5);
    expect(seen.vaultObjects.length).toBeGreaterThan(20);
    expect(seen.cli.join('\n')).toContain('registry-s3-secret');
    expect(seen.sqsBodies.join('\n')).toContain('"shardId"');
  });

  it.each(Object.keys(seen) as Array<keyof typeof seen>)(
    'finds no secret value in the %s',
    (where) => {
      // Act
      const text = seen[where].join('\n');
      const found = NEEDLES.filter((needle) => text.includes(needle.value)).map((n) => n.name);

      // Assess
      expect(found).toEqual([]);
    },
  );
});
