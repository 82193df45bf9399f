/**
 * Runs the very ASL files CDK deploys on one machine with
 * aws-local-stepfunctions: each Lambda task calls, in process, the handler
 * its Lambda runs (made from the step table: middy chain, event parsed, step)
 * with a local Lambda context, and the wait-for-task-token copy task hands its message to the
 * same worker code, through an in-process queue or a real SQS queue (the
 * sandbox's), with the task token made here because the local engine does
 * not make one.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DeleteMessageCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  type SQSClient,
} from '@aws-sdk/client-sqs';
import type { Context } from 'aws-lambda';
import { StateMachine } from 'aws-local-stepfunctions';
import { localContext, stepHandler } from '../aws/step-handler.ts';
import { addTotals, emptyTotals, type Totals } from '../copy/model.ts';
import { messageOf } from '../errors.ts';
import type { ShardMessage } from '../vault/runs.ts';
import type { WorkflowDeps } from '../workflows/deps.ts';
import { processShardRecords } from '../workflows/sqs-worker.ts';
import { type StepName, stepsOf, type WorkflowName } from '../workflows/steps.ts';
import { type ShardOutcome, sqsDelay, type TaskCallbacks } from '../workflows/worker.ts';

/**
 * The ASL file CDK deploys: the nearest `state-machines/` folder above this
 * module (functions/commons/local/ in the sources, dist/chunks/ in the
 * compiled CLI).
 */
function stateMachineFile(name: WorkflowName): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, 'state-machines', `${name}.asl.json`);
    if (existsSync(candidate)) return candidate;
    const up = dirname(dir);
    if (up === dir)
      throw new Error(
        `no state-machines/${name}.asl.json above ${fileURLToPath(import.meta.url)}; run regvault from its package`,
      );
    dir = up;
  }
}

export type Transport =
  | { readonly kind: 'memory' }
  | { readonly kind: 'sqs'; readonly client: SQSClient; readonly queueUrl: string };

export interface LocalRunOptions {
  readonly deps: WorkflowDeps;
  /** Copy messages worked on at once (the Lambda's concurrency in AWS). */
  readonly workers?: number;
  /** Shards each copy Map keeps in flight (the stack's `shardsInFlight` in AWS). */
  readonly shardsInFlight?: number;
  readonly transport?: Transport;
  /** Milliseconds for each Wait state (the rollout poll). */
  readonly waitMs?: number;
  /** A worker hands its shard on after this long (ms): keeps continuations exercised. */
  readonly workerBudgetMs?: number;
  /** Called with each state's name as it is entered, for progress. */
  readonly onState?: (name: string) => void;
  /** Called with a task state's name and its result when it finishes (e.g. the plan's estimate). */
  readonly onStateDone?: (name: string, output: unknown) => void;
  /** Called with the running copy totals after each copy message. */
  readonly onCopyProgress?: (totals: Totals) => void;
}

export interface LocalRunResult {
  readonly status: 'SUCCEEDED' | 'FAILED';
  readonly output?: unknown;
  readonly error?: string;
  readonly cause?: string;
  /** Copy messages handled, continuations included. */
  readonly messages: number;
  /** What the copy workers did, summed over every message. */
  readonly totals: Totals;
}

/** Task tokens the local harness hands out, each resolved by a worker's callback. */
class TokenBook implements TaskCallbacks {
  readonly #waiting = new Map<
    string,
    { resolve: (v: ShardOutcome) => void; reject: (e: Error) => void }
  >();
  heartbeats = 0;

  issue(): { token: string; done: Promise<ShardOutcome> } {
    const token = `local-task-${randomUUID()}`;
    const done = new Promise<ShardOutcome>((resolve, reject) =>
      this.#waiting.set(token, { resolve, reject }),
    );
    return { token, done };
  }

  async success(token: string, output: ShardOutcome): Promise<void> {
    this.#waiting.get(token)?.resolve(output);
    this.#waiting.delete(token);
  }

  async failure(token: string, error: string, cause: string): Promise<void> {
    const failure = new Error(cause);
    failure.name = error;
    this.#waiting.get(token)?.reject(failure);
    this.#waiting.delete(token);
  }

  async heartbeat(token: string): Promise<boolean> {
    this.heartbeats++;
    return this.#waiting.has(token);
  }
}

/** Moves copy messages from the workflow to the worker code and back. */
class WorkerPool {
  readonly book = new TokenBook();
  messages = 0;
  readonly #deps: WorkflowDeps;
  readonly #transport: Transport;
  readonly #workers: number;
  readonly #budgetMs: number;
  readonly #memoryQueue: ShardMessage[] = [];
  #wake: (() => void) | undefined;
  #running = true;
  readonly #loops: Array<Promise<void>> = [];

  /** Totals of every message worked on so far (copied, skipped, failed, bytes). */
  totals: Totals = emptyTotals();
  /** The running totals of the messages being worked on now. */
  readonly #inFlight = new Map<string, Totals>();

  #report(): void {
    let sum = this.totals;
    for (const running of this.#inFlight.values()) sum = addTotals(sum, running);
    this.#onProgress?.(sum);
  }
  readonly #onProgress: ((totals: Totals) => void) | undefined;

  constructor(
    deps: WorkflowDeps,
    transport: Transport,
    workers: number,
    budgetMs: number,
    onProgress?: (totals: Totals) => void,
  ) {
    this.#onProgress = onProgress;
    this.#deps = deps;
    this.#transport = transport;
    this.#workers = workers;
    this.#budgetMs = budgetMs;
    for (let i = 0; i < workers; i++) this.#loops.push(this.#loop());
  }

  async send(message: ShardMessage, options: { delayMs?: number } = {}): Promise<void> {
    if (this.#transport.kind === 'sqs') {
      await this.#transport.client.send(
        new SendMessageCommand({
          QueueUrl: this.#transport.queueUrl,
          MessageBody: JSON.stringify(message),
          ...sqsDelay(options.delayMs),
        }),
      );
      return;
    }
    const enqueue = () => {
      this.#memoryQueue.push(message);
      this.#wake?.();
    };
    if (options.delayMs === undefined) enqueue();
    else setTimeout(enqueue, options.delayMs);
  }

  async #next(): Promise<Array<{ messageId: string; body: string; receipt?: string }>> {
    if (this.#transport.kind === 'sqs') {
      const received = await this.#transport.client.send(
        new ReceiveMessageCommand({
          QueueUrl: this.#transport.queueUrl,
          MaxNumberOfMessages: 1,
          WaitTimeSeconds: 1,
          VisibilityTimeout: 900,
        }),
      );
      return (received.Messages ?? []).map((m) => ({
        messageId: m.MessageId ?? '',
        body: m.Body ?? '',
        ...(m.ReceiptHandle === undefined ? {} : { receipt: m.ReceiptHandle }),
      }));
    }
    const message = this.#memoryQueue.shift();
    if (message !== undefined) return [{ messageId: randomUUID(), body: JSON.stringify(message) }];
    await new Promise<void>((resolve) => {
      this.#wake = resolve;
      setTimeout(resolve, 200);
    });
    return [];
  }

  async #loop(): Promise<void> {
    while (this.#running) {
      let batch: Array<{ messageId: string; body: string; receipt?: string }>;
      try {
        batch = await this.#next();
      } catch (err) {
        this.#deps.log.warn('local worker could not receive', { error: messageOf(err) });
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      }
      if (batch.length === 0) continue;
      this.messages += batch.length;
      const slot = randomUUID();
      const result = await processShardRecords(batch, this.#deps, {
        callbacks: this.book,
        sender: this,
        deadline: Date.now() + this.#budgetMs,
        // Running totals after every page, so progress moves during a long shard.
        onProgress: (running) => {
          this.#inFlight.set(slot, running);
          this.#report();
        },
      });
      this.#inFlight.delete(slot);
      this.totals = addTotals(this.totals, result.totals);
      this.#report();
      const retry = new Set(result.batchItemFailures.map((f) => f.itemIdentifier));
      for (const record of batch) {
        if (
          this.#transport.kind === 'sqs' &&
          record.receipt !== undefined &&
          !retry.has(record.messageId)
        ) {
          await this.#transport.client.send(
            new DeleteMessageCommand({
              QueueUrl: this.#transport.queueUrl,
              ReceiptHandle: record.receipt,
            }),
          );
        } else if (this.#transport.kind === 'memory' && retry.has(record.messageId)) {
          this.#memoryQueue.push(JSON.parse(record.body) as ShardMessage);
        }
      }
    }
  }

  /** The local stand-in for `sqs:sendMessage.waitForTaskToken`. */
  async copyTask(input: unknown): Promise<ShardOutcome> {
    const body =
      (input as { MessageBody?: { runId?: string; shardId?: string } }).MessageBody ?? {};
    const { token, done } = this.book.issue();
    await this.send({
      runId: body.runId ?? '',
      shardId: body.shardId ?? '',
      taskToken: token,
      seq: 0,
    });
    return done;
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.#wake?.();
    await Promise.all(this.#loops);
  }

  get size(): number {
    return this.#workers;
  }
}

/** Shards each copy Map keeps in flight when the caller does not say (the stack's default too). */
export const DEFAULT_SHARDS_IN_FLIGHT = 40;

/**
 * Fills the `${Placeholder}`s as CDK's definitionSubstitutions do in AWS, with
 * local stand-ins: the tasks they name run through local handlers anyway.
 */
export function substitute(
  text: string,
  transport: Transport | undefined,
  shardsInFlight = DEFAULT_SHARDS_IN_FLIGHT,
): string {
  return text.replace(/\$\{([A-Za-z0-9]+)\}/g, (_match, placeholder: string) => {
    if (placeholder === 'ShardsInFlight') return String(shardsInFlight);
    if (placeholder === 'CopyQueueUrl')
      return transport?.kind === 'sqs'
        ? transport.queueUrl
        : 'https://sqs.local/000000000000/regvault-copy';
    if (placeholder.endsWith('FunctionArn'))
      return `arn:aws:lambda:us-east-1:000000000000:function:regvault-local-${placeholder.slice(0, -'FunctionArn'.length)}`;
    throw new Error(`state machine placeholder \${${placeholder}} has no local value`);
  });
}

/** The resource of the copy tasks: one SQS message per shard, answered through its task token. */
const COPY_TASK_RESOURCE = 'arn:aws:states:::sqs:sendMessage.waitForTaskToken';

interface AslState {
  readonly Type?: string;
  readonly Resource?: string;
  readonly States?: Record<string, AslState>;
  readonly ItemProcessor?: { readonly States?: Record<string, AslState> };
  readonly Iterator?: { readonly States?: Record<string, AslState> };
  readonly Branches?: ReadonlyArray<{ readonly States?: Record<string, AslState> }>;
}

/** Every Task state of a definition, nested Maps and Parallels included, with its Resource. */
export function taskStatesOf(definition: {
  readonly States?: Record<string, AslState>;
}): Array<{ state: string; resource: string }> {
  const tasks: Array<{ state: string; resource: string }> = [];
  const walk = (states: Record<string, AslState> | undefined) => {
    for (const [state, body] of Object.entries(states ?? {})) {
      if (body.Type === 'Task') tasks.push({ state, resource: body.Resource ?? '' });
      walk(body.ItemProcessor?.States ?? body.Iterator?.States);
      for (const branch of body.Branches ?? []) walk(branch.States);
    }
  };
  walk(definition.States);
  return tasks;
}

type LocalHandler = (input: unknown) => Promise<unknown>;

/**
 * The local stand-in of each Task state of a workflow: a step's Lambda
 * handler (the one its entry file exports) called with a local context that
 * carries `deps`; a copy task goes to `copyTask`. A Task state with neither
 * is an error, not a call to real AWS.
 */
export function taskHandlers(
  workflow: WorkflowName,
  tasks: ReadonlyArray<{ state: string; resource: string }>,
  deps: WorkflowDeps,
  copyTask: LocalHandler,
): Record<string, LocalHandler> {
  const byState = new Map<string, StepName>();
  for (const { name, step } of stepsOf(workflow))
    for (const state of step.states) byState.set(state, name);
  const handlers: Record<string, LocalHandler> = {};
  for (const { state, resource } of tasks) {
    const name = byState.get(state);
    if (resource === COPY_TASK_RESOURCE) handlers[state] = copyTask;
    else if (name !== undefined) {
      const handler = stepHandler(name);
      handlers[state] = (input) => handler(input, localContext(name, deps) satisfies Context);
    } else
      throw new Error(
        `state machine ${workflow} has a Task state ${state} that no step in functions/commons/workflows/steps.ts serves`,
      );
  }
  return handlers;
}

async function run(
  name: WorkflowName,
  input: unknown,
  options: LocalRunOptions,
): Promise<LocalRunResult> {
  const definition = JSON.parse(
    substitute(
      await readFile(stateMachineFile(name), 'utf8'),
      options.transport,
      options.shardsInFlight,
    ),
  );
  // The files ship with regvault and test/infra/state-machines.test.ts runs
  // asl-validator over them; validating again here compiled its JSON schema
  // on every run, a quarter of a second before the first step.
  const machine = new StateMachine(definition, { validationOptions: { noValidate: true } });
  const pool = new WorkerPool(
    options.deps,
    options.transport ?? { kind: 'memory' },
    options.workers ?? 8,
    options.workerBudgetMs ?? 600_000,
    options.onCopyProgress,
  );
  const local = taskHandlers(name, taskStatesOf(definition), options.deps, (e) => pool.copyTask(e));
  const taskResourceLocalHandlers: Record<string, (input: never) => Promise<never>> = {};
  for (const [state, fn] of Object.entries(local)) {
    taskResourceLocalHandlers[state] = async (stateInput: never) => {
      options.onState?.(state);
      const output = await fn(stateInput);
      options.onStateDone?.(state, output);
      return output as never;
    };
  }
  const execution = machine.run(input as never, {
    // The local engine makes no task tokens; the harness issues its own per task (see WorkerPool.copyTask).
    context: { Task: { Token: 'issued-by-the-local-harness' } } as never,
    overrides: {
      taskResourceLocalHandlers: taskResourceLocalHandlers as never,
      waitTimeOverrides: { WaitForRollout: options.waitMs ?? 1_000 },
      retryIntervalOverrides: Object.fromEntries(Object.keys(local).map((state) => [state, 10])),
    },
  });
  try {
    const output = await execution.result;
    return { status: 'SUCCEEDED', output, messages: pool.messages, totals: pool.totals };
  } catch (err) {
    const failure = err as {
      name?: string;
      message?: string;
      cause?: { name?: string; message?: string };
    };
    const error = failure.cause?.name ?? failure.name ?? 'Error';
    const cause = failure.cause?.message ?? failure.message ?? String(err);
    return { status: 'FAILED', error, cause, messages: pool.messages, totals: pool.totals };
  } finally {
    await pool.stop();
  }
}

/** Runs `state-machines/backup.asl.json` on this machine. */
export function runBackupLocally(
  input: unknown,
  options: LocalRunOptions,
): Promise<LocalRunResult> {
  return run('backup', input, options);
}

/** Runs `state-machines/restore.asl.json` on this machine. */
export function runRestoreLocally(
  input: unknown,
  options: LocalRunOptions,
): Promise<LocalRunResult> {
  return run('restore', input, options);
}
