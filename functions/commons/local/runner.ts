/**
 * Runs the very ASL files CDK deploys on one machine with
 * aws-local-stepfunctions: each Lambda task calls, in process, the handler
 * its Lambda runs (made from the step table: middy chain, event parsed, step)
 * with a local Lambda context. The enqueue step's messages go to a pool of
 * local workers running the copy worker's code, through an in-process queue
 * or a real SQS queue (the sandbox's); the pool's size is the copy workers'
 * concurrency, as the event source's is on AWS. The count of finished shards
 * looks when the pool has nothing left to do (or after the poll time at
 * most) instead of after the Wait state's seconds.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Context } from 'aws-lambda';
import { StateMachine } from 'aws-local-stepfunctions';
import { localContext, stepHandler } from '../aws/step-handler.ts';
import type { Totals } from '../copy/model.ts';
import { messageOf } from '../errors.ts';
import { type BackupState, renewBackupLease } from '../workflows/backup.ts';
import { copyTiming } from '../workflows/copy-timing.ts';
import type { WorkflowDeps } from '../workflows/deps.ts';
import { type StepName, stepsOf, type WorkflowName } from '../workflows/steps.ts';
import type { MessageSender } from '../workflows/worker.ts';
import { type Transport, WorkerPool } from './worker-pool.ts';

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

export type { Transport } from './worker-pool.ts';

export interface LocalRunOptions {
  readonly deps: WorkflowDeps;
  /** Copy messages worked on at once (the copy workers' concurrency, `copyWorkers`, in AWS). */
  readonly workers?: number;
  readonly transport?: Transport;
  /** Milliseconds for each Wait state (the rollout poll). */
  readonly waitMs?: number;
  /**
   * The longest a count of finished shards waits for the local workers to
   * run out of messages (ms; the stack's `copyPollSeconds` in AWS). The pool
   * knows when its last message is worked, so the count mostly looks once;
   * this bounds how late a shard past its deadline is noticed.
   */
  readonly shardPollMs?: number;
  /** How long the shards may take (s; the stack's `copyTimeoutHours` in AWS). */
  readonly copyTimeoutSeconds?: number;
  /**
   * The copy worker's timeout (s), as the stack's `copyWorkerTimeoutSeconds`:
   * a message's work budget and the visibility of a received SQS message
   * derive from it as on AWS (workflows/copy-timing.ts).
   */
  readonly copyWorkerTimeoutSeconds?: number;
  /** Overrides the derived budget (ms): tests hand shards on sooner to exercise continuations. */
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
  /** Events of the execution (states entered and left, the execution's start and end): its history. */
  readonly events: number;
  /** What the copy workers did, summed over every message. */
  readonly totals: Totals;
}

/** How long the shards may take when the caller does not say: a day (a local run has no history to fill). */
export const DEFAULT_COPY_TIMEOUT_SECONDS = 86_400;

/**
 * Fills the `${Placeholder}`s as CDK's definitionSubstitutions do in AWS, with
 * local stand-ins: the tasks they name run through local handlers anyway, and
 * the Wait between counts is replaced (see `run`).
 */
export function substitute(
  text: string,
  copyTimeoutSeconds = DEFAULT_COPY_TIMEOUT_SECONDS,
): string {
  return text.replace(/\$\{([A-Za-z0-9]+)\}/g, (_match, placeholder: string) => {
    if (placeholder === 'CopyPollSeconds') return '1';
    if (placeholder === 'CopyTimeoutSeconds') return String(copyTimeoutSeconds);
    if (placeholder.endsWith('FunctionArn'))
      return `arn:aws:lambda:us-east-1:000000000000:function:regvault-local-${placeholder.slice(0, -'FunctionArn'.length)}`;
    throw new Error(`state machine placeholder \${${placeholder}} has no local value`);
  });
}

interface AslState {
  readonly Type?: string;
  readonly Resource?: string;
  readonly Next?: string;
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
 * carries `deps` and the local workers' `queue`. A Task state no step serves
 * is an error, not a call to real AWS.
 */
export function taskHandlers(
  workflow: WorkflowName,
  tasks: ReadonlyArray<{ state: string; resource: string }>,
  deps: WorkflowDeps,
  queue: MessageSender,
): Record<string, { readonly step: StepName; readonly handle: LocalHandler }> {
  const byState = new Map<string, StepName>();
  for (const { name, states } of stepsOf(workflow))
    for (const state of states) byState.set(state, name);
  const handlers: Record<string, { step: StepName; handle: LocalHandler }> = {};
  for (const { state } of tasks) {
    const name = byState.get(state);
    if (name !== undefined) {
      const handler = stepHandler(name);
      handlers[state] = {
        step: name,
        handle: (input) => handler(input, localContext(name, deps, queue) satisfies Context),
      };
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
  const text = substitute(
    await readFile(stateMachineFile(name), 'utf8'),
    options.copyTimeoutSeconds,
  );
  const definition = JSON.parse(text);
  const states = (JSON.parse(text) as { States?: Record<string, AslState> }).States ?? {};
  // The files ship with regvault and test/infra/state-machines.test.ts runs
  // asl-validator over them; validating again here compiled its JSON schema
  // on every run, a quarter of a second before the first step.
  const machine = new StateMachine(definition, { validationOptions: { noValidate: true } });
  const timing = copyTiming(options.copyWorkerTimeoutSeconds);
  const pool = new WorkerPool(
    options.deps,
    options.transport ?? { kind: 'memory' },
    options.workers ?? 8,
    {
      budgetMs: options.workerBudgetMs ?? timing.messageBudgetMs,
      visibilitySeconds: timing.visibilityTimeoutSeconds,
    },
    options.onCopyProgress,
  );
  const local = taskHandlers(name, taskStatesOf(definition), options.deps, pool);
  const pollMs = options.shardPollMs ?? 30_000;
  const lease = new LeaseKeeper(options.deps);
  const taskResourceLocalHandlers: Record<string, (input: never) => Promise<never>> = {};
  for (const [state, { step, handle }] of Object.entries(local)) {
    taskResourceLocalHandlers[state] = async (stateInput: never) => {
      // The Wait before a count is the pool running dry here, at most the poll time.
      if (step === 'count-shards') await pool.whenIdle(pollMs);
      options.onState?.(state);
      // The steps that end a run release its lease: renewing it after would say it was lost.
      if (step === 'finalize' || step === 'mark-failed') lease.stop();
      const output = await handle(stateInput);
      if (step === 'discover') lease.keep(output as BackupState);
      options.onStateDone?.(state, output);
      return output as never;
    };
  }
  const waitTimeOverrides: Record<string, number> = {};
  for (const [state, body] of Object.entries(states)) {
    if (body.Type !== 'Wait') continue;
    const next = body.Next === undefined ? undefined : local[body.Next];
    waitTimeOverrides[state] = next?.step === 'count-shards' ? 0 : (options.waitMs ?? 1_000);
  }
  const execution = machine.run(input as never, {
    // `$$.Execution.Id`, which a backup's run lease records (an ARN on AWS).
    context: { Execution: { Id: `local:${name}:${randomUUID()}` } },
    overrides: {
      taskResourceLocalHandlers: taskResourceLocalHandlers as never,
      waitTimeOverrides,
      retryIntervalOverrides: Object.fromEntries(Object.keys(local).map((state) => [state, 10])),
    },
  });
  let events = 0;
  const history = (async () => {
    for await (const _event of execution.eventLogs) events++;
  })();
  const ended = async () => {
    // The engine closes its event log when the execution ends; a second at most, all the same.
    await Promise.race([
      history.catch(() => undefined),
      new Promise((resolve) => setTimeout(resolve, 1_000).unref()),
    ]);
    return { messages: pool.messages, events, totals: pool.totals };
  };
  try {
    const output = await execution.result;
    return { status: 'SUCCEEDED', output, ...(await ended()) };
  } catch (err) {
    const failure = err as {
      name?: string;
      message?: string;
      cause?: { name?: string; message?: string };
    };
    const error = failure.cause?.name ?? failure.name ?? 'Error';
    const cause = failure.cause?.message ?? failure.message ?? String(err);
    return { status: 'FAILED', error, cause, ...(await ended()) };
  } finally {
    lease.stop();
    await pool.stop();
  }
}

/**
 * Renews a local backup's run lease while the process runs (on AWS the steps
 * renew it): every quarter of its ttl, so a process that stops renewing
 * (killed) is seen dead once the ttl has passed, or at once on this host.
 */
class LeaseKeeper {
  readonly #deps: WorkflowDeps;
  #timer: NodeJS.Timeout | undefined;

  constructor(deps: WorkflowDeps) {
    this.#deps = deps;
  }

  keep(state: BackupState): void {
    this.stop();
    this.#timer = setInterval(
      () => {
        renewBackupLease(state, this.#deps).catch((err: unknown) =>
          this.#deps.log.warn('could not renew the run lease', {
            runId: state.runId,
            error: messageOf(err),
          }),
        );
      },
      Math.max(1_000, this.#deps.lease.ttlMs / 4),
    );
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
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
