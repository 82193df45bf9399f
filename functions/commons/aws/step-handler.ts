/**
 * The Lambda handler of every workflow step, made from the step table: the
 * house middy chain, then the event parsed with the step's schema (an
 * InputError naming every bad field, before the step touches anything), then
 * the step, then its metrics. The local runner calls these very handlers with
 * a local Lambda context that carries the run's dependencies; on AWS the
 * container's dependencies are used.
 */
import type { Context } from 'aws-lambda';
import type { z } from 'zod';
import { STEPS, type Step, type StepName } from '../workflows/steps.ts';
import { houseChain, localDepsOf, metrics, parseEvent, queueOf, runtime } from './runtime.ts';

export { localContext } from './runtime.ts';

function handlerFor(name: StepName, step: Step<z.ZodType, unknown>) {
  return houseChain<unknown, unknown>()
    .use(parseEvent(step.event, `event of the ${name} step`))
    .handler(async (event: unknown, context: Context) => {
      const output = await step.run(
        event,
        localDepsOf(context) ?? (await runtime()).deps,
        await queueOf(context),
      );
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
