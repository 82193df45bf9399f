/**
 * How a CLI run ends: its exit code, and what a workflow run's result says.
 *
 * Exit codes: 0 success, 1 failed, 2 bad input, 3 partial (the run finished
 * but some objects failed), 4 a restore that was rolled back (the rollout or
 * verification after the switch failed, and the registry is back on its
 * previous bucket).
 */
import type { LocalRunResult } from '../functions/commons/local/runner.ts';

export const ExitCode = { Ok: 0, Failed: 1, BadInput: 2, Partial: 3, RolledBack: 4 } as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/**
 * The error a restore ends with (its Fail state in state-machines/restore.asl.json)
 * when the rollout or verification after the switch failed and the rollback succeeded.
 */
export const RESTORE_ROLLED_BACK = 'RestoreRolledBack';

/** What the exit code of a workflow run is judged by. */
export type WorkflowResult = Pick<LocalRunResult, 'status' | 'error' | 'cause' | 'totals'>;

/**
 * A workflow run's exit code: rolled back when a restore ended in its
 * rolled-back state (judged by the error's name, not its text), bad input when
 * a step refused its input, partial when the run got through the copy with
 * some objects failed (a backup's snapshot marked failed, a restore's target
 * missing them), failed otherwise.
 */
export function workflowExitCode(result: WorkflowResult): ExitCode {
  if (result.status === 'SUCCEEDED') return ExitCode.Ok;
  if (result.error === RESTORE_ROLLED_BACK) return ExitCode.RolledBack;
  const cause = result.cause ?? '';
  if (/InputError/.test(cause)) return ExitCode.BadInput;
  if (
    result.totals.failed > 0 ||
    /failed objects|objects failed|missing \d+ of \d+ snapshot objects/.test(cause)
  )
    return ExitCode.Partial;
  return ExitCode.Failed;
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
