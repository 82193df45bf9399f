/**
 * The one table of workflow steps. Each entry is a Lambda function (its key is
 * the function's name and entry file, `functions/<name>.ts`): the workflow and
 * the ASL Task states it serves, the zod schema of the event those states pass
 * it, the step it runs, and the metrics its result counts. The Lambda handlers
 * (`functions/commons/aws/step-handler.ts`), the local runner and, by name,
 * the CDK stack are all made from this table, so a new step is one entry here,
 * one line in `functions/`, and its sizing and grants in `infra/`.
 */
import { z } from 'zod';
import { discoverBackup, finalizeBackup, markBackupFailed, planBackup } from './backup.ts';
import type { WorkflowDeps } from './deps.ts';
import { proveRestore } from './prove.ts';
import {
  checkRollout,
  preflightRestore,
  resolveRestore,
  switchRegistry,
  verifyRestore,
} from './restore.ts';
import { causeText, rollBackOrReport } from './rollback.ts';
import {
  backupPlanOutputSchema,
  backupStateSchema,
  caughtErrorSchema,
  restoreStateSchema,
  rolloutCheckSchema,
  switchOutputSchema,
  verifyOutputSchema,
} from './step-schemas.ts';

/** The state machines, one `state-machines/<name>.asl.json` each. */
export const WORKFLOWS = ['backup', 'restore'] as const;
export type WorkflowName = (typeof WORKFLOWS)[number];

/** A CloudWatch metric a step's result adds to (on AWS; local runs count nothing). */
export interface MetricPoint {
  readonly name: string;
  readonly unit: 'Count';
  readonly value: number;
}

export interface Step<S extends z.ZodType, R> {
  readonly workflow: WorkflowName;
  /** The Task states of the workflow whose Resource is this function. */
  readonly states: readonly [string, ...string[]];
  /** The event those states pass (their `Parameters`), parsed before the step runs. */
  readonly event: S;
  run(event: z.output<S>, deps: WorkflowDeps): Promise<R>;
  metrics?(output: R): readonly MetricPoint[];
}

/** Infers an entry's event and result types from its schema and step. */
function step<S extends z.ZodType, R>(entry: Step<S, R>): Step<S, R> {
  return entry;
}

/**
 * Discover and resolve take the whole execution input and parse it themselves
 * with the workflow's input schema, so its problems are named by the input's
 * own fields (`target.bucket`), as the CLI maps them to its flags.
 */
const executionInput = z.strictObject({ input: z.unknown() });
const withState = z.strictObject({ state: backupStateSchema });
const withRestoreState = z.strictObject({ state: restoreStateSchema });
const failedRestore = z.strictObject({
  state: restoreStateSchema.nullable(),
  switched: switchOutputSchema.nullable(),
  rollout: rolloutCheckSchema.nullable(),
  verify: verifyOutputSchema.nullable(),
  error: caughtErrorSchema.nullable().exactOptional(),
});
const count = (name: string): readonly MetricPoint[] => [{ name, unit: 'Count', value: 1 }];

export const STEPS = {
  discover: step({
    workflow: 'backup',
    states: ['DiscoverRegistryStorage'],
    event: executionInput,
    run: (event, deps) => discoverBackup(event.input, deps),
  }),
  plan: step({
    workflow: 'backup',
    states: ['PlanShards'],
    event: withState,
    run: (event, deps) => planBackup(event.state, deps),
  }),
  finalize: step({
    workflow: 'backup',
    states: ['FinalizeSnapshot'],
    event: z.strictObject({ state: backupStateSchema, plan: backupPlanOutputSchema }),
    run: (event, deps) => finalizeBackup(event.state, event.plan, deps),
    metrics: (summary) =>
      count(summary.status === 'complete' ? 'SnapshotsComplete' : 'SnapshotsFailed'),
  }),
  'mark-failed': step({
    workflow: 'backup',
    states: ['MarkSnapshotFailed'],
    event: z.strictObject({
      state: backupStateSchema.nullable(),
      plan: backupPlanOutputSchema.nullable(),
      error: caughtErrorSchema.nullable().exactOptional(),
    }),
    run: (event, deps) =>
      markBackupFailed(
        event.state ?? undefined,
        event.plan ?? undefined,
        {
          error: event.error?.Error ?? 'Error',
          // The cause without the error's name, which `error` already carries.
          cause: causeText(event.error).replace(/^[^:]+: /, ''),
        },
        deps,
      ),
    metrics: () => count('SnapshotsFailed'),
  }),
  resolve: step({
    workflow: 'restore',
    states: ['ResolveSnapshot'],
    event: executionInput,
    run: (event, deps) => resolveRestore(event.input, deps),
  }),
  preflight: step({
    workflow: 'restore',
    states: ['CheckClusterTargetAndSnapshot'],
    event: withRestoreState,
    run: (event, deps) => preflightRestore(event.state, deps),
  }),
  prove: step({
    workflow: 'restore',
    states: ['ProveRestoredContent'],
    event: withRestoreState,
    run: (event, deps) => proveRestore(event.state, deps),
  }),
  switch: step({
    workflow: 'restore',
    states: ['SwitchRegistryStorage'],
    event: withRestoreState,
    run: (event, deps) => switchRegistry(event.state, deps),
  }),
  'rollout-status': step({
    workflow: 'restore',
    states: ['CheckRollout'],
    event: z.strictObject({ switched: switchOutputSchema }),
    run: (event, deps) => checkRollout(event.switched, deps),
  }),
  verify: step({
    workflow: 'restore',
    states: ['VerifyRegistry'],
    event: withRestoreState,
    run: (event, deps) => verifyRestore(event.state, deps),
    metrics: (report) => count(report.ok ? 'VerificationsPassed' : 'VerificationsFailed'),
  }),
  rollback: step({
    workflow: 'restore',
    // After a switch (roll back when asked), and before one (only say what failed).
    states: ['RollBackOrReportFailedSwitch', 'DescribeRestoreFailure'],
    event: failedRestore,
    run: (event, deps) => rollBackOrReport(event, deps),
  }),
};

export type StepName = keyof typeof STEPS;

/**
 * The Lambda functions that are not workflow steps: the SQS copy worker (the
 * workflows reach it through the copy queue), the handler of its dead letters,
 * and scheduled retention.
 */
export const OTHER_FUNCTIONS = ['copy-worker', 'dead-letter', 'prune'] as const;

/** Every Lambda function, one entry file `functions/<name>.ts` each. */
export type FunctionName = StepName | (typeof OTHER_FUNCTIONS)[number];

/** The table's entries as a list, for code that treats every step alike. */
export function stepsOf(
  workflow?: WorkflowName,
): Array<{ readonly name: StepName; readonly step: Step<z.ZodType, unknown> }> {
  const entries: Array<{ name: StepName; step: Step<z.ZodType, unknown> }> = [];
  for (const name of Object.keys(STEPS) as StepName[]) {
    const step: Step<z.ZodType, unknown> = STEPS[name];
    if (workflow === undefined || step.workflow === workflow) entries.push({ name, step });
  }
  return entries;
}
