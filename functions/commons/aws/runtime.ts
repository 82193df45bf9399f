/**
 * What every regvault Lambda shares: its configuration (environment variables
 * set by the CDK stack, parsed once with zod), Powertools logger, metrics and
 * tracer, the workflow dependencies built on AWS (vault through the function's
 * role, kubeconfig from Secrets Manager), and the middy chain handlers wrap
 * their logic in. Handlers stay one-liners over the shared workflow steps.
 */

import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { logMetrics } from '@aws-lambda-powertools/metrics/middleware';
import { Tracer } from '@aws-lambda-powertools/tracer';
import { captureLambdaHandler } from '@aws-lambda-powertools/tracer/middleware';
import type { S3Client } from '@aws-sdk/client-s3';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import {
  SendTaskFailureCommand,
  SendTaskHeartbeatCommand,
  SendTaskSuccessCommand,
  SFNClient,
} from '@aws-sdk/client-sfn';
import { SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import { z } from 'zod';
import { loadKubeConfig } from '../cluster/kube.ts';
import type { Location } from '../copy/model.ts';
import { InputError, issueLines } from '../errors.ts';
import { acpProfile, acpSettingsSchema } from '../registry/acp.ts';
import { RegistryClient } from '../registry/client.ts';
import type { RegistryProfile, StorageKeys } from '../registry/profile.ts';
import { createS3Client } from '../s3/client.ts';
import { Access, registrySecretOf, type WorkflowDeps } from '../workflows/deps.ts';
import type { MessageSender, ShardOutcome, TaskCallbacks } from '../workflows/worker.ts';
import { registryCredentialsOf } from './secret-values.ts';

export const SERVICE = 'regvault';

/** The environment the stack gives every function (infra/ sets the same names). */
export const runtimeConfigSchema = z.object({
  VAULT_BUCKET: z.string().min(3),
  VAULT_PREFIX: z.string().default(''),
  /** 'true' when vault uploads must carry Content-MD5 (Object Lock default retention). */
  VAULT_CONTENT_MD5: z.enum(['true', 'false']).default('false'),
  AWS_REGION: z.string().min(1),
  /** Secrets Manager ARN of the kubeconfig that reaches the registry's cluster. */
  KUBECONFIG_SECRET_ARN: z.string().optional(),
  /** JSON of profile settings overriding the ACP defaults (names, namespace, labels). */
  PROFILE_SETTINGS: z.string().default('{}'),
  /** Where the registry answers, for verification after a restore. */
  REGISTRY_URL: z.url().optional(),
  /** Secrets Manager ARN of `{"username": ..., "password": ...}` for the registry API. */
  REGISTRY_CREDENTIALS_SECRET_ARN: z.string().optional(),
  COPY_QUEUE_URL: z.string().optional(),
  COPY_CONCURRENCY: z.coerce.number().int().positive().default(64),
});
export type RuntimeConfig = z.infer<typeof runtimeConfigSchema>;

/** Parses the environment once; a missing variable names itself. */
export function readConfig(env: NodeJS.ProcessEnv = process.env): Readonly<RuntimeConfig> {
  const parsed = runtimeConfigSchema.safeParse(env);
  if (!parsed.success) {
    throw new InputError(
      'the function is misconfigured (its environment comes from the CDK stack)',
      issueLines(parsed.error, '(environment)'),
    );
  }
  return Object.freeze(parsed.data);
}

export const logger = new Logger({ serviceName: SERVICE });
export const metrics = new Metrics({ namespace: 'Regvault', serviceName: SERVICE });
export const tracer = new Tracer({ serviceName: SERVICE });

const secrets = new SecretsManagerClient({});
const secretCache = new Map<string, string>();

async function secretText(arn: string): Promise<string> {
  const cached = secretCache.get(arn);
  if (cached !== undefined) return cached;
  const value = await secrets.send(new GetSecretValueCommand({ SecretId: arn }));
  if (value.SecretString === undefined)
    throw new InputError(`the secret ${arn} holds no text; store the value as a string`);
  secretCache.set(arn, value.SecretString);
  return value.SecretString;
}

/** Workflow dependencies on AWS; built once per container and reused across invocations. */
export async function awsDeps(config: RuntimeConfig): Promise<WorkflowDeps> {
  const vaultLocation: Location = {
    region: config.AWS_REGION,
    bucket: config.VAULT_BUCKET,
    prefix: config.VAULT_PREFIX,
    contentMd5: config.VAULT_CONTENT_MD5 === 'true',
    forcePathStyle: false,
    access: Access.Vault,
  };
  let profile: RegistryProfile | undefined;
  const kubeconfig =
    config.KUBECONFIG_SECRET_ARN === undefined
      ? undefined
      : await secretText(config.KUBECONFIG_SECRET_ARN);
  const registryCredentials =
    config.REGISTRY_CREDENTIALS_SECRET_ARN === undefined
      ? undefined
      : registryCredentialsOf(
          await secretText(config.REGISTRY_CREDENTIALS_SECRET_ARN),
          config.REGISTRY_CREDENTIALS_SECRET_ARN,
        );
  const getProfile = () => {
    if (profile === undefined) {
      if (kubeconfig === undefined)
        throw new InputError('this step needs the cluster: set kubeconfigSecretArn on the stack');
      profile = acpProfile(
        loadKubeConfig({ yaml: kubeconfig }),
        acpSettingsSchema.parse(JSON.parse(config.PROFILE_SETTINGS)),
      );
    }
    return profile;
  };
  const keys = new Map<string, StorageKeys | undefined>();
  const keysFor = async (access: string) => {
    if (!keys.has(access)) {
      const secretName = registrySecretOf(access);
      keys.set(
        access,
        secretName === undefined ? undefined : await getProfile().readStorageKeys(secretName),
      );
    }
    return keys.get(access);
  };
  const clients = new Map<string, S3Client>();
  return {
    vault: {
      location: vaultLocation,
      client: createS3Client(vaultLocation, undefined, { maxSockets: config.COPY_CONCURRENCY }),
    },
    async s3(location) {
      const id = `${location.endpoint ?? 'aws'}|${location.region}|${location.access}`;
      let client = clients.get(id);
      if (client === undefined) {
        client = createS3Client(location, await keysFor(location.access), {
          maxSockets: config.COPY_CONCURRENCY,
        });
        clients.set(id, client);
      }
      return client;
    },
    async sameAccess(source, target) {
      if ((source.endpoint ?? '') !== (target.endpoint ?? '')) return false;
      if (source.access === target.access) return true;
      const [a, b] = await Promise.all([keysFor(source.access), keysFor(target.access)]);
      // The role (no keys) and a Secret's keys are different identities: stream between them.
      return a !== undefined && b !== undefined && a.accessKeyId === b.accessKeyId;
    },
    profile: getProfile,
    registry: () =>
      config.REGISTRY_URL === undefined
        ? undefined
        : new RegistryClient(
            config.REGISTRY_URL,
            registryCredentials === undefined
              ? { kind: 'anonymous' }
              : { kind: 'basic', ...registryCredentials },
          ),
    now: () => new Date(),
    log: {
      info: (message, fields) => logger.info(message, fields ?? {}),
      warn: (message, fields) => logger.warn(message, fields ?? {}),
    },
    toolVersion: process.env['REGVAULT_VERSION'] ?? '0.1.0',
  };
}

const sfn = new SFNClient({});
const sqs = new SQSClient({});

/** Step Functions task callbacks; a token that has expired or completed is logged, not thrown. */
export const stepFunctionsCallbacks: TaskCallbacks = {
  async success(taskToken: string, output: ShardOutcome) {
    await tolerateClosedTask(() =>
      sfn.send(new SendTaskSuccessCommand({ taskToken, output: JSON.stringify(output) })),
    );
  },
  async failure(taskToken: string, error: string, cause: string) {
    await tolerateClosedTask(() =>
      sfn.send(new SendTaskFailureCommand({ taskToken, error, cause: cause.slice(0, 32_000) })),
    );
  },
  async heartbeat(taskToken: string) {
    await tolerateClosedTask(() => sfn.send(new SendTaskHeartbeatCommand({ taskToken })));
  },
};

async function tolerateClosedTask(call: () => Promise<unknown>): Promise<void> {
  try {
    await call();
  } catch (err) {
    const name = typeof err === 'object' && err !== null && 'name' in err ? String(err.name) : '';
    if (name === 'TaskTimedOut' || name === 'TaskDoesNotExist' || name === 'InvalidToken') {
      logger.warn('the waiting task is already closed', { error: name });
      return;
    }
    throw err;
  }
}

export function sqsSender(queueUrl: string | undefined): MessageSender {
  return {
    async send(message) {
      if (queueUrl === undefined)
        throw new InputError('COPY_QUEUE_URL is not set on the copy worker');
      await sqs.send(
        new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: JSON.stringify(message) }),
      );
    },
  };
}

let shared: Promise<{ config: Readonly<RuntimeConfig>; deps: WorkflowDeps }> | undefined;

/** The configuration and dependencies of this container, made on first use. */
export function runtime(): Promise<{ config: Readonly<RuntimeConfig>; deps: WorkflowDeps }> {
  shared ??= (async () => {
    const config = readConfig();
    return { config, deps: await awsDeps(config) };
  })();
  return shared;
}

/** Wraps a step in the house middy chain: context in logs, metrics flushed, traced. */
export function lambda<E, R>(step: (event: E, deps: WorkflowDeps, context: Context) => Promise<R>) {
  return middy<E, R>()
    .use(injectLambdaContext(logger, { resetKeys: true }))
    .use(logMetrics(metrics))
    .use(captureLambdaHandler(tracer))
    .handler(async (event: E, context: Context) => step(event, (await runtime()).deps, context));
}
