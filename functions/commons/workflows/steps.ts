/**
 * The one table of workflow steps. Each entry is a Lambda function (its key is
 * the function's name and entry file, `functions/<name>.ts`): the ASL Task
 * states it serves in each workflow, the zod schema of the event those states pass
 * it, the step it runs, and the metrics its result counts. The Lambda handlers
 * (`functions/commons/aws/step-handler.ts`), the local runner and, by name,
 * the CDK stack are all made from this table, so a new step is one entry here,
 * one line in `functions/`, and its sizing and grants in `infra/`.
 */
import { z } from 'zod';
import {
  discoverBackup,
  endDeadExecution,
  executionEndedSchema,
  finalizeBackup,
  markBackupFailed,
} from './backup.ts';
import { planBackup } from './backup-plan.ts';
import type { WorkflowDeps } from './deps.ts';
import { countFinishedShards, enqueueShards } from './fan-out.ts';
import { proveRestore } from './prove.ts';
import { checkRollout, resolveRestore, switchRegistry, verifyRestore } from './restore.ts';
import { preflightRestore } from './restore-preflight.ts';
import { causeText, rollBackOrReport } from './rollback.ts';
import {
  backupPlanOutputSchema,
  backupStateSchema,
  caughtErrorSchema,
  countEventSchema,
  enqueueEventSchema,
  restoreStateSchema,
  rolloutCheckSchema,
  switchOutputSchema,
  verifyOutputSchema,
} from './step-schemas.ts';
import type { MessageSender } from './worker.ts';

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
  /** Per workflow, its Task states whose Resource is this function. */
  readonly in: Partial<Record<WorkflowName, readonly [string, ...string[]]>>;
  /** The event those states pass (their `Parameters`), parsed before the step runs. */
  readonly event: S;
  /** `queue`: where shard messages go (the copy queue on AWS, the local workers' on one machine). */
  run(event: z.output<S>, deps: WorkflowDeps, queue: MessageSender): Promise<R>;
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
    in: { backup: ['DiscoverRegistryStorage'] },
    // With the execution's id (`$$.Execution.Id`), which the run's lease records.
    event: z.strictObject({ input: z.unknown(), execution: z.string().min(1).exactOptional() }),
    run: (event, deps) => discoverBackup(event.input, deps, event.execution),
  }),
  'enqueue-shards': step({
    in: {
      backup: ['EnqueueShards'],
      restore: ['EnqueueBlobParts', 'EnqueueLinkParts'],
    },
    event: enqueueEventSchema,
    run: (event, deps, queue) => enqueueShards(event, deps, queue),
  }),
  'count-shards': step({
    in: {
      backup: ['CountFinishedShards'],
      restore: ['CountFinishedBlobParts', 'CountFinishedLinkParts'],
    },
    event: countEventSchema,
    run: (event, deps) => countFinishedShards(event, deps),
  }),
  plan: step({
    in: { backup: ['PlanShards'] },
    event: withState,
    run: (event, deps) => planBackup(event.state, deps),
  }),
  finalize: step({
    in: { backup: ['FinalizeSnapshot'] },
    event: z.strictObject({ state: backupStateSchema, plan: backupPlanOutputSchema }),
    run: (event, deps) => finalizeBackup(event.state, event.plan, deps),
    metrics: (summary) =>
      count(summary.status === 'complete' ? 'SnapshotsComplete' : 'SnapshotsFailed'),
  }),
  'mark-failed': step({
    in: { backup: ['MarkSnapshotFailed'] },
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
  // No Task state: the EventBridge rule on a backup execution's status calls it (infra/operations.ts).
  'end-dead-run': step({
    in: {},
    event: executionEndedSchema,
    run: (event, deps) => endDeadExecution(event, deps),
    metrics: (output) => (output.ended ? count('BackupRunsEndedDead') : []),
  }),
  resolve: step({
    in: { restore: ['ResolveSnapshot'] },
    event: executionInput,
    run: (event, deps) => resolveRestore(event.input, deps),
  }),
  preflight: step({
    in: { restore: ['CheckClusterTargetAndSnapshot'] },
    event: withRestoreState,
    run: (event, deps) => preflightRestore(event.state, deps),
  }),
  prove: step({
    in: { restore: ['ProveRestoredContent'] },
    event: withRestoreState,
    run: (event, deps) => proveRestore(event.state, deps),
  }),
  switch: step({
    in: { restore: ['SwitchRegistryStorage'] },
    event: withRestoreState,
    run: (event, deps) => switchRegistry(event.state, deps),
  }),
  'rollout-status': step({
    in: { restore: ['CheckRollout'] },
    event: z.strictObject({ switched: switchOutputSchema }),
    run: (event, deps) => checkRollout(event.switched, deps),
  }),
  verify: step({
    in: { restore: ['VerifyRegistry'] },
    event: withRestoreState,
    run: (event, deps) => verifyRestore(event.state, deps),
    metrics: (report) => count(report.ok ? 'VerificationsPassed' : 'VerificationsFailed'),
  }),
  rollback: step({
    // After a switch (roll back when asked), and before one (only say what failed).
    in: { restore: ['RollBackOrReportFailedSwitch', 'DescribeRestoreFailure'] },
    event: failedRestore,
    run: (event, deps) => rollBackOrReport(event, deps),
  }),
};

export type StepName = keyof typeof STEPS;

/**
 * The Lambda functions that are not workflow steps: the SQS copy worker (the
 * workflows reach it through the copy queue the enqueue step fills), the
 * handler of its dead letters, and scheduled retention.
 */
export const OTHER_FUNCTIONS = ['copy-worker', 'dead-letter', 'prune'] as const;

/** Every Lambda function, one entry file `functions/<name>.ts` each. */
export type FunctionName = StepName | (typeof OTHER_FUNCTIONS)[number];

/** A workflow's entries of the table as a list, each with its Task states in that workflow. */
export function stepsOf(workflow: WorkflowName): Array<{
  readonly name: StepName;
  readonly step: Step<z.ZodType, unknown>;
  readonly states: readonly string[];
}> {
  const entries: Array<{
    name: StepName;
    step: Step<z.ZodType, unknown>;
    states: readonly string[];
  }> = [];
  for (const name of Object.keys(STEPS) as StepName[]) {
    const step: Step<z.ZodType, unknown> = STEPS[name];
    const states = step.in[workflow];
    if (states !== undefined) entries.push({ name, step, states });
  }
  return entries;
}
