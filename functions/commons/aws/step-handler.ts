/**
 * The Lambda handler of every workflow step, made from the step table: the
 * house middy chain, then the event parsed with the step's schema (an
 * InputError naming every bad field, before the step touches anything), then
 * the step, then its metrics. The local runner calls these very handlers with
 * a local Lambda context that carries the run's dependencies; on AWS the
 * container's dependencies are used.
 */
import { randomUUID } from 'node:crypto';
import type { Context } from 'aws-lambda';
import type { z } from 'zod';
import type { WorkflowDeps } from '../workflows/deps.ts';
import { STEPS, type Step, type StepName } from '../workflows/steps.ts';
import { houseChain, metrics, parseEvent, runtime } from './runtime.ts';

/** Dependencies given to an invocation by a local run, keyed by its context. */
const localDeps = new WeakMap<Context, WorkflowDeps>();

/** The longest a Node timer waits: a local step has no Lambda deadline. */
const NO_DEADLINE_MS = 2 ** 31 - 1;

/**
 * A Lambda context for one local invocation of a step's handler, carrying
 * the local run's dependencies in place of the container's.
 */
export function localContext(name: StepName, deps: WorkflowDeps): Context {
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
  return context;
}

function handlerFor(name: StepName, step: Step<z.ZodType, unknown>) {
  return houseChain<unknown, unknown>()
    .use(parseEvent(step.event, `event of the ${name} step`))
    .handler(async (event: unknown, context: Context) => {
      const local = localDeps.get(context);
      const output = await step.run(event, local ?? (await runtime()).deps);
      // Local runs count nothing: EMF lines would land in the CLI's output.
      if (local === undefined)
        for (const point of step.metrics?.(output) ?? [])
          metrics.addMetric(point.name, point.unit, point.value);
      return output;
    });
}

export type StepHandler = ReturnType<typeof handlerFor>;

const handlers = new Map<StepName, StepHandler>();

/** The handler of a step: the one its entry file exports and the local runner calls. */
export function stepHandler(name: StepName): StepHandler {
  let handler = handlers.get(name);
  if (handler === undefined) {
    // Each entry's types hold inside the table; here every step is alike.
    const step: Step<z.ZodType, unknown> = STEPS[name];
    handler = handlerFor(name, step);
    handlers.set(name, handler);
  }
  return handler;
}
