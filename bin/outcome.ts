/**
 * How a CLI run ends: its exit code, and what a workflow run's result says.
 *
 * Exit codes: 0 success, 1 failed, 2 bad input, 3 partial (the run finished
 * but some objects failed), 4 a restore that was rolled back (the rollout or
 * verification after the switch failed, and the registry is back on its
 * previous bucket).
 */
import { ExitCode, exitCodeOf, type FailureName, hintOf } from '../functions/commons/errors.ts';
import type { LocalRunResult } from '../functions/commons/local/runner.ts';

export { ExitCode } from '../functions/commons/errors.ts';

/**
 * The error a restore ends with (its Fail state in state-machines/restore.asl.json)
 * when the rollout or verification after the switch failed and the rollback succeeded.
 */
export const RESTORE_ROLLED_BACK = 'RestoreRolledBack' satisfies FailureName;

/** What the exit code of a workflow run is judged by. */
export type WorkflowResult = Pick<LocalRunResult, 'status' | 'error' | 'cause' | 'totals'>;

/**
 * A workflow run's exit code, judged by the name of the error it ended with
 * (`FAILURES` in functions/commons/errors.ts), never by its text: rolled back
 * (RestoreRolledBack), bad input (InputError), partial (ObjectsFailed), failed
 * otherwise. A run that ended with another name after its copy failed on
 * objects is partial too: its totals say so.
 */
export function workflowExitCode(result: WorkflowResult): ExitCode {
  if (result.status === 'SUCCEEDED') return ExitCode.Ok;
  const code = exitCodeOf(result.error);
  return code === ExitCode.Failed && result.totals.failed > 0 ? ExitCode.Partial : code;
}

/** A failed run's hint (what to do), as a result field. */
export function hintFields(result: Pick<WorkflowResult, 'status' | 'error'>): { hint?: string } {
  const hint = result.status === 'FAILED' ? hintOf(result.error) : undefined;
  return hint === undefined ? {} : { hint };
}

/** A restore's result: the fields of its result object and its one line of text. */
export function restoreOutcome(
  result: WorkflowResult & Pick<LocalRunResult, 'output'>,
  /** Puts the workflow's field names in the CLI's terms. */
  speak: (text: string) => string = (text) => text,
): { fields: Record<string, unknown>; text: string } {
  const rolledBack = result.status === 'FAILED' && result.error === RESTORE_ROLLED_BACK;
  const cause = result.cause === undefined ? undefined : speak(result.cause);
  const fields = {
    status: result.status,
    ...(result.output === undefined ? {} : { restore: result.output }),
    ...(cause === undefined ? {} : { error: cause }),
    ...(result.status === 'FAILED' ? { rolledBack, ...(rolledBack ? { reason: cause } : {}) } : {}),
    ...hintFields(result),
    totals: result.totals,
  };
  const text =
    result.status === 'SUCCEEDED'
      ? `restore succeeded: ${JSON.stringify(result.output)}`
      : rolledBack
        ? `restore ROLLED BACK: ${cause}`
        : `restore FAILED: ${cause}`;
  return { fields, text };
}
