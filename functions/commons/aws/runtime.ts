/**
 * What every regvault Lambda shares: its configuration (environment variables
 * set by the CDK stack, parsed once with zod), Powertools logger, metrics and
 * tracer (X-Ray loaded inside Lambda only), the workflow dependencies built on AWS (vault through the function's
 * role, kubeconfig from Secrets Manager, on EKS tokens signed by the role), and the middy chain handlers wrap
 * their logic in. Handlers stay one-liners over the shared workflow steps.
 */

import { randomUUID } from 'node:crypto';
import { Logger } from '@aws-lambda-powertools/logger';
import { injectLambdaContext } from '@aws-lambda-powertools/logger/middleware';
import { Metrics } from '@aws-lambda-powertools/metrics';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SendMessageBatchCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import middy, { type MiddlewareObj } from '@middy/core';
import type { Context } from 'aws-lambda';
import { z } from 'zod';
import { InputError, issueLines, parseInput } from '../errors.ts';
import {
  DEFAULT_PROFILE,
  PROFILES,
  type ProfileName,
  profileNameSchema,
} from '../registry/profiles.ts';
import { sdkRetryConfig } from '../s3/retry.ts';
import { AWS_LEASE_TTL_MS } from '../vault/run-lease.ts';
import type { ShardMessage } from '../vault/runs.ts';
import { Access, createDeps, type WorkflowDeps } from '../workflows/deps.ts';
import { type MessageSender, SEND_BATCH, sqsDelay } from '../workflows/worker.ts';
import { registryCredentialsOf } from './secret-values.ts';

export const SERVICE = 'regvault';

/**
 * A whole number written as text (an environment variable, an SQS attribute):
 * digits only. `z.coerce.number()` would read "" as 0 and " 0x10 " as 16.
 */
export const wholeNumberText = z
  .string()
  .regex(/^\d{1,9}$/, 'a whole number, digits only')
  .transform(Number);

/** The environment the stack gives every function (infra/ sets the same names). */
export const runtimeConfigSchema = z.object({
  VAULT_BUCKET: z.string().min(3),
  VAULT_PREFIX: z.string().default(''),
  /** 'true' when vault uploads must carry Content-MD5 (Object Lock default retention). */
  VAULT_CONTENT_MD5: z.enum(['true', 'false']).default('false'),
  AWS_REGION: z.string().min(1),
  /** Secrets Manager ARN of the kubeconfig that reaches the registry's cluster. */
  KUBECONFIG_SECRET_ARN: z.string().optional(),
  /** An EKS cluster: the function's role signs short-lived tokens instead of the kubeconfig's user. */
  EKS_CLUSTER_NAME: z.string().min(1).optional(),
  /** The registry's kind (registry/profiles.ts). */
  PROFILE: profileNameSchema.default(DEFAULT_PROFILE),
  /** JSON of that profile's settings overriding its defaults (names, namespace, labels). */
  PROFILE_SETTINGS: z.string().default('{}'),
  /** Where the registry answers, for verification after a restore. */
  REGISTRY_URL: z.url().optional(),
  /** Secrets Manager ARN of `{"username": ..., "password": ...}` for the registry API. */
  REGISTRY_CREDENTIALS_SECRET_ARN: z.string().optional(),
  COPY_QUEUE_URL: z.string().optional(),
  /** 'true': buckets on other endpoints than AWS S3 (a registry's MinIO) are addressed path style. */
  STORAGE_PATH_STYLE: z.enum(['true', 'false']).default('false'),
  /** Comma-separated registry buckets the role may read (registryBucketNames): read with it, copied server-side. */
  REGISTRY_BUCKETS: z.string().default(''),
  /** A role in another account the REGISTRY_BUCKETS are read through (registryReadRoleArn), and its external id. */
  REGISTRY_READ_ROLE_ARN: z.string().min(1).optional(),
  REGISTRY_READ_EXTERNAL_ID: z.string().min(1).optional(),
  /** Comma-separated buckets the role may read and write (roleBucketNames). */
  ROLE_BUCKETS: z.string().default(''),
  COPY_CONCURRENCY: wholeNumberText.pipe(z.number().positive()).default(64),
  /** The version written into snapshot manifests. */
  REGVAULT_VERSION: z.string().min(1).default('0.1.0'),
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

// The house retry policy (functions/commons/s3/retry.ts) for every AWS call, not only S3's.
const secrets = new SecretsManagerClient({ ...sdkRetryConfig() });
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

/**
 * Workflow dependencies on AWS: the one factory, configured with the
 * function's role for the vault (no keys) and the kubeconfig and registry
 * login from Secrets Manager. Built once per container and reused.
 */
export async function awsDeps(config: RuntimeConfig): Promise<WorkflowDeps> {
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
  return createDeps({
    vault: {
      location: {
        region: config.AWS_REGION,
        bucket: config.VAULT_BUCKET,
        prefix: config.VAULT_PREFIX,
        contentMd5: config.VAULT_CONTENT_MD5 === 'true',
        forcePathStyle: false,
        access: Access.Vault,
      },
    },
    ...(kubeconfig === undefined
      ? {}
      : {
          kube: {
            yaml: kubeconfig,
            ...(config.EKS_CLUSTER_NAME === undefined
              ? {}
              : {
                  eks: {
                    clusterName: config.EKS_CLUSTER_NAME,
                    region: config.AWS_REGION,
                    // The function's role, as every SDK client of this container resolves it.
                    credentials: () => secrets.config.credentials(),
                  },
                }),
          },
        }),
    kubeHint: 'set kubeconfigSecretArn on the stack',
    vaultReaches: { read: namesIn(config.REGISTRY_BUCKETS), write: namesIn(config.ROLE_BUCKETS) },
    ...(config.REGISTRY_READ_ROLE_ARN === undefined
      ? {}
      : {
          registryRole: {
            roleArn: config.REGISTRY_READ_ROLE_ARN,
            ...(config.REGISTRY_READ_EXTERNAL_ID === undefined
              ? {}
              : { externalId: config.REGISTRY_READ_EXTERNAL_ID }),
          },
        }),
    storagePathStyle: config.STORAGE_PATH_STYLE === 'true',
    profileName: config.PROFILE,
    profileSettings: profileSettingsOf(config.PROFILE, config.PROFILE_SETTINGS),
    ...(config.REGISTRY_URL === undefined ? {} : { registryUrl: config.REGISTRY_URL }),
    ...(registryCredentials === undefined
      ? {}
      : { registryCredentials: { kind: 'basic', ...registryCredentials } }),
    logger: {
      info: (message, fields) => logger.info(message, fields ?? {}),
      warn: (message, fields) => logger.warn(message, fields ?? {}),
    },
    concurrency: config.COPY_CONCURRENCY,
    toolVersion: config.REGVAULT_VERSION,
    // The discover step adds the execution's ARN; the steps renew the lease as they run.
    lease: { ttlMs: AWS_LEASE_TTL_MS, holder: { via: 'aws' } },
  });
}

/** A comma-separated list as the stack writes it. */
const namesIn = (text: string): string[] => text.split(',').filter((name) => name !== '');

/** PROFILE_SETTINGS as the stack writes it: JSON of the profile's settings, checked here. */
function profileSettingsOf(name: ProfileName, text: string): Readonly<Record<string, unknown>> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new InputError(
      'the function is misconfigured (its environment comes from the CDK stack)',
      ['PROFILE_SETTINGS: expected JSON of profile settings; set profileSettings on the stack'],
    );
  }
  return parseInput(
    PROFILES[name].settingsSchema as z.ZodType<Readonly<Record<string, unknown>>>,
    value,
    `${name} profile settings (the profileSettings stack setting)`,
  );
}

const sqs = new SQSClient({ ...sdkRetryConfig() });

/** Attempts at a SendMessageBatch whose entries SQS refused in part (throttling, a blip). */
const BATCH_ATTEMPTS = 4;

/** The copy queue as shard messages' destination (the stack sets COPY_QUEUE_URL on every function). */
export function sqsSender(queueUrl: string | undefined): MessageSender {
  const url = (): string => {
    if (queueUrl === undefined)
      throw new InputError('COPY_QUEUE_URL is not set on this function (the stack sets it)');
    return queueUrl;
  };
  return {
    async send(message, options = {}) {
      await sqs.send(
        new SendMessageCommand({
          QueueUrl: url(),
          MessageBody: JSON.stringify(message),
          ...sqsDelay(options.delayMs),
        }),
      );
    },
    async sendBatch(messages) {
      await sendBatchTo(url(), messages);
    },
  };
}

/**
 * One SendMessageBatch (at most SEND_BATCH messages); the entries SQS refuses
 * are sent again, and what is still refused after BATCH_ATTEMPTS throws.
 */
async function sendBatchTo(queueUrl: string, messages: readonly ShardMessage[]): Promise<void> {
  if (messages.length > SEND_BATCH)
    throw new Error(`a batch of ${messages.length} messages; SQS takes at most ${SEND_BATCH}`);
  let pending = messages.map((message, index) => ({ Id: String(index), message }));
  for (let attempt = 1; pending.length > 0; attempt++) {
    const answer = await sqs.send(
      new SendMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: pending.map(({ Id, message }) => ({ Id, MessageBody: JSON.stringify(message) })),
      }),
    );
    const refused = new Map((answer.Failed ?? []).map((entry) => [entry.Id, entry]));
    if (refused.size > 0 && attempt >= BATCH_ATTEMPTS) {
      const first = [...refused.values()][0];
      throw new Error(
        `SQS refused ${refused.size} of ${messages.length} copy messages after ${attempt} attempts (${first?.Code}: ${first?.Message})`,
      );
    }
    pending = pending.filter(({ Id }) => refused.has(Id));
  }
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

/**
 * Publishes the metrics an invocation added, also when it failed; unlike
 * Powertools' logMetrics it stays quiet when there are none (most steps add
 * none). A local invocation publishes nothing: EMF lines would land in the
 * CLI's output.
 */
function flushMetrics(): MiddlewareObj {
  const flush = async (request: { context: Context }) => {
    if (localDepsOf(request.context) !== undefined) metrics.clearMetrics();
    else if (metrics.hasStoredMetrics()) metrics.publishStoredMetrics();
  };
  return { after: flush, onError: flush };
}

/** Dependencies given to an invocation by a local run, keyed by its context. */
const localDeps = new WeakMap<Context, WorkflowDeps>();
const localQueues = new WeakMap<Context, MessageSender>();

/** A local invocation given no queue: a step that sends shard messages says so. */
const noLocalQueue: MessageSender = {
  send: async () => {
    throw new Error('this local invocation was given no copy queue');
  },
  sendBatch: async () => {
    throw new Error('this local invocation was given no copy queue');
  },
};

/** The longest a Node timer waits: a local invocation has no Lambda deadline. */
const NO_DEADLINE_MS = 2 ** 31 - 1;

/**
 * A Lambda context for one local invocation of a function's handler (the
 * local runner's steps, a test's prune), carrying the local run's
 * dependencies in place of the container's, and the local workers' queue in
 * place of the copy queue.
 */
export function localContext(name: string, deps: WorkflowDeps, queue?: MessageSender): Context {
  const functionName = `regvault-local-${name}`;
  const context: Context = {
    callbackWaitsForEmptyEventLoop: false,
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:us-east-1:000000000000:function:${functionName}`,
    memoryLimitInMB: '0',
    awsRequestId: randomUUID(),
    logGroupName: `/regvault/local/${name}`,
    logStreamName: 'local',
    getRemainingTimeInMillis: () => NO_DEADLINE_MS,
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
  localDeps.set(context, deps);
  if (queue !== undefined) localQueues.set(context, queue);
  return context;
}

/** Where an invocation sends shard messages: the local run's queue, else the copy queue. */
export async function queueOf(context: Context): Promise<MessageSender> {
  if (localDeps.has(context)) return localQueues.get(context) ?? noLocalQueue;
  return sqsSender((await runtime()).config.COPY_QUEUE_URL);
}

/** The dependencies a local run gave this invocation; undefined inside Lambda. */
export function localDepsOf(context: Context): WorkflowDeps | undefined {
  return localDeps.get(context);
}

/** The house middy chain every function starts from: context in logs, metrics flushed, traced. */
export function houseChain<E, R>() {
  return middy<E, R>()
    .use(injectLambdaContext(logger, { resetKeys: true }))
    .use(flushMetrics())
    .use(tracedInLambda());
}

/**
 * Powertools' X-Ray middleware, loaded on the first invocation inside Lambda
 * only. Importing the X-Ray SDK switches on async hooks for the whole process
 * (cls-hooked tracks every promise), which cost a local backup through the
 * same handlers about a tenth of its CPU; a local run has no X-Ray daemon to
 * send to anyway.
 */
function tracedInLambda(): MiddlewareObj {
  let loaded: Promise<MiddlewareObj | undefined> | undefined;
  const inner = () => {
    loaded ??=
      process.env['AWS_LAMBDA_FUNCTION_NAME'] === undefined
        ? Promise.resolve(undefined)
        : (async () => {
            const [{ Tracer }, { captureLambdaHandler }] = await Promise.all([
              import('@aws-lambda-powertools/tracer'),
              import('@aws-lambda-powertools/tracer/middleware'),
            ]);
            return captureLambdaHandler(new Tracer({ serviceName: SERVICE }));
          })();
    return loaded;
  };
  return {
    before: async (request) => (await inner())?.before?.(request),
    after: async (request) => (await inner())?.after?.(request),
    onError: async (request) => (await inner())?.onError?.(request),
  };
}

/** Parses the event before the handler body runs (what Powertools' parser middleware does). */
export function parseEvent<S extends z.ZodType>(
  schema: S,
  what: string,
): MiddlewareObj<z.output<S>> {
  return {
    before: (request) => {
      request.event = parseInput(schema, request.event, what);
    },
  };
}

/** An SQS event as the copy worker and dead-letter handler read it: each record's id, body and deliveries. */
export const sqsEventSchema = z
  .object({
    Records: z.array(
      z.object({
        messageId: z.string().min(1),
        body: z.string(),
        attributes: z.object({
          ApproximateReceiveCount: wholeNumberText.pipe(z.number().positive()),
        }),
      }),
    ),
  })
  .transform((event) =>
    event.Records.map((record) => ({
      messageId: record.messageId,
      body: record.body,
      receiveCount: record.attributes.ApproximateReceiveCount,
    })),
  );

/** Wraps a function that is not a workflow step (SQS, schedule) in the house chain, its event parsed first. */
export function lambda<S extends z.ZodType, R>(
  event: S,
  step: (event: z.output<S>, deps: WorkflowDeps, context: Context) => Promise<R>,
) {
  return houseChain<z.output<S>, R>()
    .use(parseEvent(event, 'event'))
    .handler(async (parsed: z.output<S>, context: Context) =>
      step(parsed, localDepsOf(context) ?? (await runtime()).deps, context),
    );
}
